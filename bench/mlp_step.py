"""MLP training step (64→128→128→10, batch 128, float32): flux's NumPy backend vs the same step
hand-written in NumPy, and vs PyTorch on the CPU if it is installed.

Each contender does the same work per step: forward (Affine, relu, Affine, relu, Affine), the
softmax cross-entropy loss averaged over the batch, the backward pass, and an SGD update of all
six parameters. Timings are the median of several repeats of many steps, measured side by side
in one run (interleaved, in a different order each repeat), so the ratios are robust to a noisy
machine. PyTorch's OpenMP threads are told not to spin after each op (OMP_WAIT_POLICY=PASSIVE):
spinning threads would steal the two cores from whichever contender runs next.

    python bench/mlp_step.py [--steps 200] [--repeats 7] [--sizes 64,128,128,10] [--batch 128]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import flux  # noqa: E402
from _timing import side_by_side  # noqa: E402

LR = 0.01


def flux_contender(sizes, batch, x, y):
    flux.seed(0)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(flux.Affine(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(flux.relu)
    model = flux.Chain(*layers)
    opt = flux.SGD(LR)
    data = [(x, y)]

    def run(steps):
        flux.train(model, data * steps, loss=flux.logitcrossentropy, opt=opt)
    return run


def numpy_contender(sizes, batch, x, y):
    rng = np.random.default_rng(0)
    Ws = [rng.standard_normal((a, b), dtype=np.float32) / 100 for a, b in zip(sizes, sizes[1:])]
    bs = [rng.standard_normal(b, dtype=np.float32) / 100 for b in sizes[1:]]
    n = len(Ws)
    lr = np.float32(LR)

    def step():
        # forward
        hs, zs = [x], []
        h = x
        for i in range(n):
            z = h @ Ws[i] + bs[i]
            zs.append(z)
            h = np.maximum(z, 0) if i < n - 1 else z
            hs.append(h)
        z = hs[-1]
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        loss = -(y * (z - np.log(s))).sum() / len(x)
        # backward
        g = (e / s - y) / np.float32(len(x))
        for i in reversed(range(n)):
            gW = hs[i].T @ g
            gb = g.sum(axis=0)
            if i > 0:
                g = (g @ Ws[i].T) * (zs[i - 1] > 0)
            Ws[i] -= lr * gW
            bs[i] -= lr * gb
        return float(loss)

    def run(steps):
        for _ in range(steps):
            step()
    return run


def torch_contender(sizes, batch, x, y):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx), ty)
            loss.backward()
            opt.step()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="64,128,128,10")
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, sizes[0]), dtype=np.float32)
    y = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], args.batch)]

    contenders = {"flux": flux_contender(sizes, args.batch, x, y),
                  "numpy": numpy_contender(sizes, args.batch, x, y)}
    torch_run = torch_contender(sizes, args.batch, x, y)
    if torch_run is not None:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        contenders["torch"] = torch_run
    for run in contenders.values():
        run(20)  # warm up: plan building, caches
    med = side_by_side(contenders, args.repeats, args.steps)
    print(f"MLP {'→'.join(map(str, sizes))}, batch {args.batch}, float32, "
          f"{args.steps} steps x {args.repeats} repeats (median per step)")
    for name, t in med.items():
        print(f"  {name:6s} {t * 1e6:9.1f} µs/step")
    print(f"  ratio flux/numpy = {med['flux'] / med['numpy']:.3f}  (target ≤ 1.15)")
    if "torch" in med:
        print(f"  ratio flux/torch = {med['flux'] / med['torch']:.3f}  (aim < 1)")


if __name__ == "__main__":
    main()
