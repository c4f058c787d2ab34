"""flux.save / flux.load of a 100M-parameter model vs plain np.savez / np.load of the same
arrays (time and file size), and the cost of checkpointing and resuming a training run.

    python bench/save_load.py [--millions 100]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import flux


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", type=int, default=100)
    args = parser.parse_args()
    width = 2000
    layers = max(1, args.millions * 1_000_000 // (width * width + width))
    model = flux.Chain(*[flux.Affine(np.ones((width, width), np.float32),
                                     np.zeros(width, np.float32)) for _ in range(layers)])
    count = sum(p.size for p in flux.params(model).values())
    arrays = {k: p.value for k, p in flux.params(model).items()}
    folder = tempfile.mkdtemp()
    rows = []
    for name, save, load in [
            ("flux.save/load", lambda f: flux.save(model, f), lambda f: flux.load(model, f)),
            ("np.savez/load", lambda f: np.savez(f, **arrays),
             lambda f: dict(np.load(f, allow_pickle=False)))]:
        path = os.path.join(folder, name.split(".")[0] + ".npz")
        start = time.perf_counter()
        save(path)
        saved = time.perf_counter() - start
        start = time.perf_counter()
        load(path)
        loaded = time.perf_counter() - start
        rows.append((name, saved, loaded, os.path.getsize(path)))
        os.unlink(path)
    print(f"{count / 1e6:.1f}M float32 parameters in {layers} Affine({width}, {width}) layers")
    for name, saved, loaded, size in rows:
        print(f"  {name:15s} save {saved:6.2f} s  load {loaded:6.2f} s  file {size / 1e6:8.1f} MB")
    print(f"  ratio save {rows[0][1] / rows[1][1]:.2f}, load {rows[0][2] / rows[1][2]:.2f}, "
          f"size {rows[0][3] / rows[1][3]:.4f}")

    checkpoint_overhead(folder)


def checkpoint_overhead(folder):
    """The digits-sized MLP trained 400 steps without checkpoints, with one every 50 steps,
    and the time `resume=` takes to restore."""
    rng = np.random.default_rng(0)
    data = [(rng.random((32, 64), dtype=np.float32), rng.random((32, 10), dtype=np.float32))
            for _ in range(400)]
    path = os.path.join(folder, "run.ckpt")
    times = {}
    for name, kwargs in [("no checkpoints", {}),
                         ("checkpoint every 50", {"checkpoint": path, "every": 50})]:
        flux.seed(0)
        model = flux.Chain(flux.Affine(64, 128), flux.relu, flux.Affine(128, 10))
        flux.train(model, data[:5], opt=flux.ADAM(0.001))      # warm up the plan
        start = time.perf_counter()
        flux.train(model, data, opt=flux.ADAM(0.001), **kwargs)
        times[name] = time.perf_counter() - start
    start = time.perf_counter()
    flux.train(model, [], opt=flux.ADAM(0.001), resume=path)
    resume = time.perf_counter() - start
    base = times["no checkpoints"]
    print("MLP 64→128→10, 400 ADAM steps of batch 32:")
    for name, t in times.items():
        print(f"  {name:20s} {t:6.3f} s  ({t / base:.3f}×)")
    print(f"  resume (restore only)  {resume * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()
