"""Unrolled LSTM training step on the NumPy backend vs the same LSTM hand-written in NumPy, and
vs PyTorch's nn.LSTM on the CPU (if installed).

LSTM(128→256) unrolled over 50 steps, batch 64, float32; loss = mean squared error of the
output sequence against a target; SGD update of all parameters. The hand-written version uses
the seed's equations with the same twelve weight matrices (one matmul per gate and input, as
flux's graph does), stores what the backward pass needs and backpropagates through time.

    python bench/lstm_step.py [--steps 50] [--batch 64] [--n-in 128] [--n-out 256] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench/mlp_step.py

import numpy as np  # noqa: E402

import flux  # noqa: E402
from _timing import side_by_side  # noqa: E402

LR = 0.01
GATES = "fioc"


def flux_contender(n_in, n_out, x, y):
    flux.seed(0)
    model = flux.unroll(flux.LSTM(n_in, n_out), x.shape[1], stateful=False)
    opt = flux.SGD(LR)

    def run(steps):
        flux.train(model, [(x, y)] * steps, loss=flux.mse, opt=opt)
    return run, model


def sigmoid(z):
    return 0.5 * (np.tanh(0.5 * z) + 1)


def numpy_contender(n_in, n_out, x, y, weights):
    W = {k: v.copy() for k, v in weights.items()}
    lr = np.float32(LR)
    batch, steps, _ = x.shape

    def step():
        h = np.zeros((batch, n_out), np.float32)
        c = np.zeros((batch, n_out), np.float32)
        cache, hs = [], []
        for t in range(steps):
            xt = x[:, t]
            f = sigmoid(xt @ W["Wxf"] + h @ W["Wyf"] + W["bf"])
            i = sigmoid(xt @ W["Wxi"] + h @ W["Wyi"] + W["bi"])
            o = sigmoid(xt @ W["Wxo"] + h @ W["Wyo"] + W["bo"])
            g = np.tanh(xt @ W["Wxc"] + h @ W["Wyc"] + W["bc"])
            c_prev, h_prev = c, h
            c = f * c_prev + i * g
            tc = np.tanh(c)
            h = o * tc
            cache.append((xt, h_prev, c_prev, f, i, o, g, tc))
            hs.append(h)
        out = np.stack(hs, axis=1)
        diff = out - y
        loss = float(np.mean(diff * diff))
        dout = diff * np.float32(2 / diff.size)
        grads = {k: np.zeros_like(v) for k, v in W.items()}
        dh_next = np.zeros((batch, n_out), np.float32)
        dc_next = np.zeros((batch, n_out), np.float32)
        for t in reversed(range(steps)):
            xt, h_prev, c_prev, f, i, o, g, tc = cache[t]
            dh = dout[:, t] + dh_next
            dc = dc_next + dh * o * (1 - tc * tc)
            dz = {"o": dh * tc * o * (1 - o), "f": dc * c_prev * f * (1 - f),
                  "i": dc * g * i * (1 - i), "c": dc * i * (1 - g * g)}
            dh_next = 0
            for k in GATES:
                grads["Wx" + k] += xt.T @ dz[k]
                grads["Wy" + k] += h_prev.T @ dz[k]
                grads["b" + k] += dz[k].sum(axis=0)
                dh_next = dh_next + dz[k] @ W["Wy" + k].T
            dc_next = dc * f
        for k in W:
            W[k] -= lr * grads[k]
        return loss

    def run(steps):
        for _ in range(steps):
            step()
    return run, step


def torch_contender(n_in, n_out, x, y):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(n_in, n_out, batch_first=True)
    opt = torch.optim.SGD(lstm.parameters(), lr=LR)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def run(steps):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(tx)
            loss = torch.mean((out - ty) ** 2)
            loss.backward()
            opt.step()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n-in", type=int, default=128)
    parser.add_argument("--n-out", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="training steps per timing")
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, args.steps, args.n_in), dtype=np.float32)
    y = rng.random((args.batch, args.steps, args.n_out), dtype=np.float32) - 0.5

    flux_run, model = flux_contender(args.n_in, args.n_out, x, y)
    weights = {k.split(".")[-1]: p.value for k, p in flux.params(model).items()}
    numpy_run, numpy_step = numpy_contender(args.n_in, args.n_out, x, y, weights)
    # the two compute the same loss from the same weights
    start_loss = float(flux.mse(model(x), y))
    assert abs(numpy_step() - start_loss) < 1e-4 * max(1.0, start_loss), "not the same LSTM"
    contenders = {"flux": flux_run, "numpy": numpy_run}
    torch_run = torch_contender(args.n_in, args.n_out, x, y)
    if torch_run is not None:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
        contenders["torch"] = torch_run
    start = time.perf_counter()
    flux_run(1)
    first = time.perf_counter() - start
    for run in contenders.values():
        run(1)
    med = side_by_side(contenders, args.repeats, args.calls)
    print(f"LSTM({args.n_in}→{args.n_out}) unrolled {args.steps} steps, batch {args.batch}, "
          f"float32, training step ({args.calls} steps x {args.repeats} repeats, median)")
    print(f"  flux first step (trace + unroll + autodiff + plan + run): {first * 1e3:.0f} ms")
    for name, t in med.items():
        print(f"  {name:6s} {t * 1e3:8.1f} ms/step")
    print(f"  ratio flux/numpy = {med['flux'] / med['numpy']:.3f}  (target ≤ 1.25)")
    if "torch" in med:
        print(f"  ratio flux/torch = {med['flux'] / med['torch']:.3f}  (nn.LSTM; report)")


if __name__ == "__main__":
    main()
