"""Time of `flux.infer` (abstract evaluation only) on a 1000-layer Chain and on an LSTM
unrolled 100 steps (aim under 0.2 s each), and of `flux.shapes` on the same models.

    python bench/infer.py
"""
from __future__ import annotations

import time

import flux


def timed(fn, *args, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    flux.seed(0)
    layers = []
    for _ in range(500):
        layers += [flux.Affine(32, 32), flux.tanh]
    chain = flux.Chain(*layers)
    lstm = flux.unroll(flux.LSTM(128, 256), 100, stateful=False)
    for name, model, shape in [("Chain of 1000 layers", chain, (16, 32)),
                               ("LSTM(128→256) unrolled 100 steps", lstm, (16, 100, 128))]:
        seconds, out = timed(flux.infer, model, shape)
        print(f"{name}: infer {shape} -> {out} in {seconds * 1e3:.0f} ms (aim < 200 ms)")
        seconds, report = timed(flux.shapes, model, shape, repeats=1)
        print(f"{name}: shapes in {seconds * 1e3:.0f} ms ({len(report.statements)} lines)")


if __name__ == "__main__":
    main()
