"""Peak memory of one training step of an LSTM(128→256) over 1,000 steps (batch 16, float32,
mse, SGD): flux on NumPy (loop, and fully unrolled on request) against PyTorch's nn.LSTM.

Each contender runs in its own process: it builds the model and data, takes one warm-up step
(graphs, plans and the buffers a plan keeps made), then resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``) and takes one more step; the figure is the peak resident memory of
that step minus the resident memory before the warm-up (so: what backpropagation through time
keeps, each step's activations, plus whatever the framework keeps between steps), next to the
size of the input and output sequences.

    python bench/lstm_memory.py [--steps 1000] [--batch 16] [--unrolled]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


MALLOC = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
"""glibc settings for the children: blocks of 64 KiB and more are mapped and unmapped one by
one, so freed memory leaves the process and resident memory follows what is alive (otherwise
a warm-up step's freed blocks are reused without showing in the peak)."""


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(kind: str, steps: int, batch: int) -> dict:
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.random((batch, steps, 128), dtype=np.float32)
    y = rng.random((batch, steps, 256), dtype=np.float32)
    if kind == "torch":
        import torch
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(128, 256, batch_first=True)
        opt = torch.optim.SGD(lstm.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def step():
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(tx)
            torch.mean((out - ty) ** 2).backward()
            opt.step()
    else:
        os.environ["FLUX_LOOPS"] = "unroll" if kind == "flux-unrolled" else "scan"
        import flux
        flux.seed(0)
        model = flux.compile(flux.unroll(flux.LSTM(128, 256), steps, stateful=False))
        opt = flux.SGD(0.01)

        def step():
            flux.train(model, [(x, y)], loss=flux.mse, opt=opt)
    before = _status("VmRSS")
    step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                       # peak RSS := current RSS
    step()
    return {"peak": _status("VmHWM") - before, "data": x.nbytes + y.nbytes}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--unrolled", action="store_true", help="also flux fully unrolled")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch)))
        return
    kinds = ["flux"] + (["flux-unrolled"] if args.unrolled else []) + ["torch"]
    print(f"LSTM(128→256), {args.steps} steps, batch {args.batch}, float32: peak memory of one "
          f"training step above the memory before it")
    results = {}
    for kind in kinds:
        done = subprocess.run([sys.executable, __file__, "--child", kind, "--steps",
                               str(args.steps), "--batch", str(args.batch)],
                              capture_output=True, text=True, timeout=1800, env=MALLOC)
        if done.returncode != 0:
            print(f"  {kind:14s} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[kind]
        print(f"  {kind:14s} {r['peak'] / 2**20:8.1f} MiB  (input + target: "
              f"{r['data'] / 2**20:.1f} MiB)")
    if "flux" in results and "torch" in results:
        print(f"  ratio flux/torch = {results['flux']['peak'] / results['torch']['peak']:.2f}")


if __name__ == "__main__":
    main()
