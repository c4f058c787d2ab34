"""Per-call overhead: a compiled Affine(10, 20) on a (1, 10) float32 input vs the bare NumPy
expression ``x @ W + b`` on the same arrays (and the uncompiled model's direct call).

    python bench/overhead.py [--calls 20000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import flux


def per_call(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    flux.seed(0)
    model = flux.Affine(10, 20)
    compiled = flux.compile(model, "numpy")
    x = np.random.default_rng(0).random((1, 10), dtype=np.float32)
    W, b = model.W.value, model.b.value
    assert np.allclose(compiled(x), x @ W + b)
    contenders = {
        "numpy x @ W + b": lambda: x @ W + b,
        "flux compiled": lambda: compiled(x),
        "flux model call": lambda: model(x),
    }
    times = {name: [] for name in contenders}
    for fn in contenders.values():
        per_call(fn, 1000)
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            times[name].append(per_call(fn, args.calls))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"Affine(10, 20) on (1, 10) float32, {args.calls} calls x {args.repeats} repeats")
    for name, t in med.items():
        print(f"  {name:18s} {t * 1e6:7.2f} µs/call")
    base = med["numpy x @ W + b"]
    print(f"  ratio compiled/numpy = {med['flux compiled'] / base:.2f}  (target ≤ 3)")
    print(f"  ratio model-call/numpy = {med['flux model call'] / base:.2f}")


if __name__ == "__main__":
    main()
