"""Trace + unroll + compile time of an LSTM(128→256) unrolled to 20, 100 and 400 steps: the
forward call (trace, shape checks, plan) and the training step (plus autodiff). The per-step
times must stay flat (growth no faster than linear).

    python bench/unroll_trace.py [--lengths 20,100,400]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="20,100,400")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    print(f"LSTM(128→256), batch {args.batch}: time to build, not to run "
          f"(first call minus a later call)")
    print(f"{'steps':>6} {'forward eqns':>12} {'forward':>10} {'per step':>9} "
          f"{'train eqns':>10} {'train step':>11} {'per step':>9}")
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.lengths.split(",")):
        x = rng.random((args.batch, n, 128), dtype=np.float32)
        y = rng.random((args.batch, n, 256), dtype=np.float32)
        flux.seed(0)
        model = flux.compile(flux.unroll(flux.LSTM(128, 256), n, stateful=False))
        start = time.perf_counter()
        model(x)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model(x)
        forward = first - (time.perf_counter() - start)
        start = time.perf_counter()
        flux.train(model, [(x, y)], loss=flux.mse)
        first = time.perf_counter() - start
        start = time.perf_counter()
        flux.train(model, [(x, y)], loss=flux.mse)
        step = first - (time.perf_counter() - start)
        n_fwd = len(model.graph(x).eqns)
        n_train = len(model._step(flux.mse, x, y)[0].graph.eqns)
        print(f"{n:>6} {n_fwd:>12} {forward:>9.2f}s {forward / n * 1e3:>7.1f}ms "
              f"{n_train:>10} {step:>10.2f}s {step / n * 1e3:>7.1f}ms")


if __name__ == "__main__":
    main()
