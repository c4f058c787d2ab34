"""Build time of an LSTM(128→256) training step at 20, 100, 400 and 1,000 steps on one
backend: the first training step minus the fastest of three later ones (trace, loop,
autodiff, the backend's lowering), batch 4, float32, mse, SGD. Flat in the number of steps
where the backend runs loops natively.

    python bench/loop_build.py [--backend numpy] [--lengths 20,100,400,1000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--lengths", default="20,100,400,1000")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    print(f"flux.{args.backend}: LSTM(128→256) training step, batch {args.batch}: build time "
          f"(first step minus the fastest of three later ones)")
    print(f"{'steps':>6} {'first':>9} {'later':>9} {'build':>9}")
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.lengths.split(",")):
        x = rng.random((args.batch, n, 128), dtype=np.float32)
        y = rng.random((args.batch, n, 256), dtype=np.float32)
        flux.seed(0)
        model = flux.compile(flux.unroll(flux.LSTM(128, 256), n, stateful=False), args.backend)
        opt = flux.SGD(0.01)
        times = []
        for _ in range(4):
            start = time.perf_counter()
            flux.train(model, [(x, y)], loss=flux.mse, opt=opt)
            times.append(time.perf_counter() - start)
        later = min(times[1:])
        print(f"{n:>6} {times[0]:>8.3f}s {later:>8.3f}s {times[0] - later:>8.3f}s")


if __name__ == "__main__":
    main()
