"""Tracing + compiling time of a 100-layer Chain (Affine(32, 32) and tanh alternating), for a
forward call and for a training step (forward + autodiff + planning).

    python bench/trace_chain.py [--layers 100]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flux


def build(layers):
    flux.seed(0)
    parts = []
    for _ in range(layers // 2):
        parts += [flux.Affine(32, 32), flux.tanh]
    return flux.Chain(*parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=100)
    args = parser.parse_args()
    x = np.random.default_rng(0).random((16, 32), dtype=np.float32)
    y = np.zeros((16, 32), np.float32)

    model = build(args.layers)
    start = time.perf_counter()
    compiled = flux.compile(model, "numpy")
    compiled(x)                       # trace, check shapes, plan, run once
    forward = time.perf_counter() - start
    start = time.perf_counter()
    compiled(x)
    run = time.perf_counter() - start

    model = build(args.layers)
    compiled = flux.compile(model, "numpy")
    start = time.perf_counter()
    flux.train(compiled, [(x, y)], loss=flux.mse)   # trace, autodiff, plan, one step
    step = time.perf_counter() - start

    graph = compiled.graph(x)
    print(f"Chain of {args.layers} layers ({len(graph.eqns)} equations forward)")
    print(f"  trace + compile + first forward call: {forward * 1e3:7.1f} ms  (aim < 500 ms)")
    print(f"  a later forward call:                 {run * 1e3:7.1f} ms")
    print(f"  trace + autodiff + compile + 1 step:  {step * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
