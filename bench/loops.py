"""Loops on the NumPy backend: build time flat in the number of steps, step time with `scan`
against full unrolling, with and without matmul batching, and recurrent training steps
against PyTorch's nn.LSTM / nn.GRU on the CPU.

Build time is the first training step minus a later one (trace, loop, autodiff, plan) for an
LSTM(128→256) at 20, 100, 400 and 1,000 steps (batch 4). Step times are for LSTM(128→256) and
GRU(128→256) over 50 steps, batch 64, float32, mse loss, SGD, side by side in one run.

    python bench/loops.py [--lengths 20,100,400,1000] [--repeats 5] [--calls 3]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench/mlp_step.py

import numpy as np  # noqa: E402

import flux  # noqa: E402
import flux.backends.numpy as numpy_backend  # noqa: E402
from _timing import side_by_side  # noqa: E402

LR = 0.01


def build_times(lengths, batch=4):
    print(f"LSTM(128→256) training step, batch {batch}: build time = first step − a later step")
    print(f"{'steps':>6} {'scan':>9} {'unrolled':>9}")
    rng = np.random.default_rng(0)
    for n in lengths:
        x = rng.random((batch, n, 128), dtype=np.float32)
        y = rng.random((batch, n, 256), dtype=np.float32)
        row = []
        for mode in ("scan", "unroll"):
            if mode == "unroll" and n > 400:
                row.append(float("nan"))       # (minutes: the point of the loop)
                continue
            os.environ["FLUX_LOOPS"] = mode
            flux.seed(0)
            model = flux.compile(flux.unroll(flux.LSTM(128, 256), n, stateful=False))
            start = time.perf_counter()
            flux.train(model, [(x, y)], loss=flux.mse, opt=flux.SGD(LR))
            first = time.perf_counter() - start
            start = time.perf_counter()
            flux.train(model, [(x, y)], loss=flux.mse, opt=flux.SGD(LR))
            row.append(first - (time.perf_counter() - start))
        print(f"{n:>6} {row[0]:>8.3f}s {row[1]:>8.3f}s")
    os.environ.pop("FLUX_LOOPS", None)


def flux_contender(layer, x, y, loops="scan", merge=False):
    os.environ["FLUX_LOOPS"] = loops
    numpy_backend.MERGE_MATMULS = merge
    flux.seed(0)
    model = flux.compile(flux.unroll(layer(x.shape[2], y.shape[2]), x.shape[1], stateful=False))
    opt = flux.SGD(LR)
    flux.train(model, [(x, y)], loss=flux.mse, opt=opt)    # built now, with these settings
    os.environ.pop("FLUX_LOOPS", None)
    numpy_backend.MERGE_MATMULS = False

    def run(steps):
        flux.train(model, [(x, y)] * steps, loss=flux.mse, opt=opt)
    return run


def torch_contender(cell, x, y):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](x.shape[2], y.shape[2],
                                                               batch_first=True)
    opt = torch.optim.SGD(layer.parameters(), lr=LR)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out, _ = layer(tx)
            loss = torch.mean((out - ty) ** 2)
            loss.backward()
            opt.step()
    return run


def step_times(repeats, calls, steps=50, batch=64):
    rng = np.random.default_rng(1)
    x = rng.random((batch, steps, 128), dtype=np.float32)
    y = rng.random((batch, steps, 256), dtype=np.float32) - 0.5
    for cell, layer in (("lstm", flux.LSTM), ("gru", flux.GRU)):
        contenders = {"scan": flux_contender(layer, x, y),
                      "unrolled": flux_contender(layer, x, y, loops="unroll"),
                      "scan+merge": flux_contender(layer, x, y, merge=True)}
        theirs = torch_contender(cell, x, y)
        if theirs is not None:
            theirs(1)
            contenders["torch"] = theirs
        med = side_by_side(contenders, repeats, calls)
        print(f"{cell.upper()}(128→256), {steps} steps, batch {batch}, float32 training step "
              f"({calls} steps × {repeats} repeats, median)")
        for name, t in med.items():
            print(f"  {name:11s} {t * 1e3:8.1f} ms/step")
        print(f"  ratio scan/unrolled       = {med['scan'] / med['unrolled']:.3f}  (≤ 1.05)")
        print(f"  ratio scan+merge/scan     = {med['scan+merge'] / med['scan']:.3f}")
        if "torch" in med:
            best = min(med["scan"], med["scan+merge"])
            print(f"  ratio flux/torch          = {med['scan'] / med['torch']:.3f}  "
                  f"(default settings; best of the flux settings: {best / med['torch']:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="20,100,400,1000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="training steps per timing")
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    if not args.skip_build:
        build_times([int(n) for n in args.lengths.split(",")])
    step_times(args.repeats, args.calls)


if __name__ == "__main__":
    main()
