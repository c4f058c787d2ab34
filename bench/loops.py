"""Loops on the NumPy backend: build time flat in the number of steps, step time with `scan`
against full unrolling, with and without matmul batching, and recurrent training steps
against PyTorch's nn.LSTM / nn.GRU on the CPU.

Build time is the first training step minus a later one (trace, loop, autodiff, plan) for an
LSTM(128→256) at 20, 100, 400 and 1,000 steps (batch 4). Step times are for LSTM(128→256) and
GRU(128→256) over 50 steps, batch 64, float32, mse loss, SGD, side by side in one run.

    python bench/loops.py [--lengths 20,100,400,1000] [--repeats 5] [--calls 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
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


def flux_contender(layer, x, y, loops="scan", merge=True):
    os.environ["FLUX_LOOPS"] = loops
    numpy_backend.MERGE_MATMULS = merge
    flux.seed(0)
    model = flux.compile(flux.unroll(layer(x.shape[2], y.shape[2]), x.shape[1], stateful=False))
    opt = flux.SGD(LR)
    flux.train(model, [(x, y)], loss=flux.mse, opt=opt)    # built now, with these settings
    os.environ.pop("FLUX_LOOPS", None)
    numpy_backend.MERGE_MATMULS = True

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


FLUX = {
    "scan": {},
    "unrolled": {"loops": "unroll"},
    "unmerged": {"merge": False},
}
"""The flux settings compared (side by side in one process): the default (loops, matmul
batching), full unrolling, and loops without matmul batching."""


def child(cell: str, who: str, repeats: int, calls: int, steps=50, batch=64) -> dict:
    """Median seconds per training step: the flux settings side by side in this process
    (``who == "flux"``), or PyTorch's layer alone (``"torch"``)."""
    rng = np.random.default_rng(1)
    x = rng.random((batch, steps, 128), dtype=np.float32)
    y = rng.random((batch, steps, 256), dtype=np.float32) - 0.5
    if who == "torch":
        run = torch_contender(cell, x, y)
        if run is None:
            return {}
        run(1)
        return side_by_side({"torch": run}, repeats, calls)
    layer = {"lstm": flux.LSTM, "gru": flux.GRU}[cell]
    runs = {name: flux_contender(layer, x, y, **settings) for name, settings in FLUX.items()}
    return side_by_side(runs, repeats, calls)


def step_times(repeats, calls, rounds):
    """Per round: one process timing the flux settings side by side (their ratios are taken
    within it) and one timing PyTorch alone (two thread pools in one process, OpenBLAS's and
    PyTorch's, slow each other down), in a shuffled order; medians over the rounds (this
    machine also has slow and fast processes: the flux/torch ratio pairs the processes of a
    round)."""
    for cell in ("lstm", "gru"):
        rows = []
        for r in range(rounds):
            got = {}
            for who in random.Random(r).sample(["flux", "torch"], 2):
                done = subprocess.run([sys.executable, __file__, "--child", f"{cell}:{who}",
                                       "--repeats", str(repeats), "--calls", str(calls)],
                                      capture_output=True, text=True, timeout=900)
                if done.returncode == 0:
                    got.update(json.loads(done.stdout.strip().splitlines()[-1]))
            rows.append(got)
        med = {name: statistics.median(row[name] for row in rows) for name in rows[0]}

        def ratio(a, b, rows=rows):
            return statistics.median(row[a] / row[b] for row in rows if a in row and b in row)
        print(f"{cell.upper()}(128→256), 50 steps, batch 64, float32 training step ({rounds} "
              f"rounds; each time the median of {repeats} × {calls} steps)")
        for name, t in med.items():
            print(f"  {name:11s} {t * 1e3:8.1f} ms/step")
        print(f"  ratio scan/unrolled       = {ratio('scan', 'unrolled'):.3f}  (≤ 1.05)")
        print(f"  ratio scan/unmerged       = {ratio('scan', 'unmerged'):.3f}")
        if "torch" in med:
            print(f"  ratio flux/torch          = {ratio('scan', 'torch'):.3f}  "
                  f"({'≤ 0.9' if cell == 'lstm' else 'report'})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="20,100,400,1000")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of processes")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cell, who = args.child.split(":")
        print(json.dumps(child(cell, who, args.repeats, args.calls)))
        return
    if not args.skip_build:
        build_times([int(n) for n in args.lengths.split(",")])
    step_times(args.repeats, args.calls, args.rounds)


if __name__ == "__main__":
    main()
