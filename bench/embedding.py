"""Embedding + LayerNorm + Affine training step, per-token classification: flux's NumPy backend
vs the same model in PyTorch on the CPU, side by side in one run.

    .envs/core/bin/python bench/embedding.py [--steps 100] [--repeats 7] [--batch 32] [--seq 50]

The model: Embedding(1000, 64) → LayerNorm(64) → Affine(64, 10) on a batch of 32 sequences of
50 random token indices; softmax cross-entropy of every token's 10 logits against its class
index, averaged over all tokens; SGD(0.01). flux's step is the public `flux.train`; PyTorch's
is `nn.Embedding`, `nn.LayerNorm`, `nn.Linear`, `CrossEntropyLoss` on the flattened tokens and
`optim.SGD`, with `torch.set_num_threads(os.cpu_count())`. PyTorch starts from flux's initial
weights, and the script checks that the first losses agree. The backward pass of the embedding
is a scatter-add of 1600 rows into the 1000-row table (`take_grad` in flux, `embedding_backward`
in PyTorch). Timings are medians of repeats of `--steps` steps, interleaved in a different
order each repeat (bench/_timing.py). Aim: flux / torch < 1.

Run it on an idle machine: the step is many small products, and with another process busy on
one of two cores OpenBLAS's two threads make each of them slow (the same command read 1.9 and
7.6 ms for flux minutes apart on a loaded machine; ``OPENBLAS_NUM_THREADS=1`` 1.5 ms).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench/mlp_step.py

import numpy as np  # noqa: E402

import flux  # noqa: E402
from _timing import print_ratio, print_times, side_by_side  # noqa: E402

LR = 0.01


def model_and_weights(vocab, dim, classes):
    flux.seed(0)
    model = flux.Chain(flux.Embedding(vocab, dim), flux.LayerNorm(dim),
                       flux.Affine(dim, classes))
    return model, [np.array(p.value) for p in flux.params(model).values()]


def flux_contender(model, x, y):
    opt = flux.SGD(LR)
    data = [(x, y)]

    def run(steps):
        return flux.train(model, data * steps, loss=flux.logitcrossentropy, opt=opt,
                          verbose=False)
    return run


def torch_contender(weights, x, y):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    nn = torch.nn
    table, gamma, beta, W, b = weights
    model = nn.Sequential(nn.Embedding(*table.shape), nn.LayerNorm(table.shape[1]),
                          nn.Linear(*W.shape))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(table))
        model[1].weight.copy_(torch.from_numpy(gamma))
        model[1].bias.copy_(torch.from_numpy(beta))
        model[2].weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
        model[2].bias.copy_(torch.from_numpy(b))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.reshape(-1))
    loss_fn = nn.CrossEntropyLoss()
    classes = W.shape[1]

    def run(steps):
        losses = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx).reshape(-1, classes), ty)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=50)
    parser.add_argument("--vocab", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    x = rng.integers(0, args.vocab, (args.batch, args.seq))
    y = rng.integers(0, args.classes, (args.batch, args.seq))
    model, weights = model_and_weights(args.vocab, args.dim, args.classes)

    contenders = {"flux": flux_contender(model, x, y)}
    torch_run = torch_contender(weights, x, y)
    if torch_run is not None:
        contenders["torch"] = torch_run
    first = {name: float(np.mean(run(1))) for name, run in contenders.items()}
    if not np.allclose(list(first.values()), first["flux"], rtol=1e-4):
        raise SystemExit(f"first losses differ: {first}; not the same model")
    for run in contenders.values():
        run(10)                                           # warm up: buffers, caches
    times = side_by_side(contenders, args.repeats, args.steps)
    print_times(f"Embedding({args.vocab}, {args.dim}) → LayerNorm({args.dim}) → "
                f"Affine({args.dim}, {args.classes}), batch {args.batch} × {args.seq} tokens, "
                f"float32 (median of {args.repeats} × {args.steps} steps):", times)
    if "torch" in times:
        print_ratio(times, "flux", "torch", "aim < 1")


if __name__ == "__main__":
    main()
