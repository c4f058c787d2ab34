"""flux.cupy against PyTorch eager CUDA (and torch.compile where it works), side by side, on
one GPU: the MLP training step of bench/mlp_step.py at batch 128 and at a large size, and the
unrolled LSTM training step of bench/lstm_step.py. Run by tools/gpu_check.sh.

Every contender takes device-resident data, runs forward, backward and an SGD update per
step, and reads the loss back each step (flux.train needs it for its non-finite check;
PyTorch's loop calls loss.item() to match); CUDA is synchronised around each timed run.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flux
import cnn
from _timing import print_ratio, print_times, side_by_side
from flux import LSTM, Affine, Chain, relu, unroll


def _flux_mlp(sizes, batch, rng):
    import cupy
    flux.seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [Affine(a, b), relu]
    model = flux.cupy(Chain(*layers[:-1]))
    x = cupy.asarray(rng.standard_normal((batch, sizes[0])).astype(np.float32))
    y = cupy.asarray(np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], batch)])
    opt = flux.SGD(0.01)

    def run(calls):
        flux.train(model, [(x, y)] * calls, loss=flux.logitcrossentropy, opt=opt)
        cupy.cuda.Device().synchronize()
    return run


def _torch_mlp(sizes, batch, rng, compiled=False):
    import torch
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1]).cuda()
    x = torch.tensor(rng.standard_normal((batch, sizes[0])), dtype=torch.float32).cuda()
    y = torch.tensor(rng.integers(0, sizes[-1], batch)).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss
    if compiled:
        step = torch.compile(step)

    def run(calls):
        for _ in range(calls):
            step().item()
        torch.cuda.synchronize()
    return run


def _flux_lstm(rng, n=50, batch=64):
    import cupy
    flux.seed(0)
    model = flux.cupy(unroll(Chain(LSTM(128, 256), Affine(256, 128)), n, stateful=False))
    x = cupy.asarray(rng.standard_normal((batch, n, 128)).astype(np.float32))
    y = cupy.asarray(rng.standard_normal((batch, n, 128)).astype(np.float32))
    opt = flux.SGD(0.01)

    def run(calls):
        flux.train(model, [(x, y)] * calls, loss=flux.mse, opt=opt)
        cupy.cuda.Device().synchronize()
    return run


def _torch_lstm(rng, n=50, batch=64):
    import torch
    lstm = torch.nn.LSTM(128, 256, batch_first=True).cuda()
    head = torch.nn.Linear(256, 128).cuda()
    x = torch.tensor(rng.standard_normal((batch, n, 128)), dtype=torch.float32).cuda()
    y = torch.tensor(rng.standard_normal((batch, n, 128)), dtype=torch.float32).cuda()
    opt = torch.optim.SGD(list(lstm.parameters()) + list(head.parameters()), lr=0.01)

    def run(calls):
        for _ in range(calls):
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((head(lstm(x)[0]) - y) ** 2)
            loss.backward()
            opt.step()
            loss.item()
        torch.cuda.synchronize()
    return run


def _warm(contenders):
    for name, run in list(contenders.items()):
        try:
            run(3)
        except Exception as error:          # noqa: BLE001 (torch.compile may not work here)
            print(f"  {name}: skipped ({type(error).__name__}: {str(error).splitlines()[0]})")
            del contenders[name]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for title, sizes, batch in [("MLP 64→128→128→10, batch 128", (64, 128, 128, 10), 128),
                                ("MLP 4096→4096→4096→10, batch 1024", (4096, 4096, 4096, 10),
                                 1024)]:
        contenders = {"flux.cupy": _flux_mlp(sizes, batch, rng),
                      "torch": _torch_mlp(sizes, batch, rng),
                      "torch.compile": _torch_mlp(sizes, batch, rng, compiled=True)}
        started = time.perf_counter()
        _warm(contenders)
        print(f"{title}: first steps {time.perf_counter() - started:.1f} s (all contenders)")
        times = side_by_side(contenders, args.repeats, args.calls)
        print_times(f"{title}, training step (median of {args.repeats} x {args.calls})", times)
        print_ratio(times, "flux.cupy", "torch", "target ≤ 1.0; ≤ 0.5 on the small MLP")
        if "torch.compile" in times:
            print_ratio(times, "flux.cupy", "torch.compile")
    # the CNN training step of bench/cnn.py (two 3×3 convolutions, max pool, dense head)
    x = rng.standard_normal((64, 28, 28, 1)).astype(np.float32)
    y = np.eye(cnn.N_CLASSES, dtype=np.float32)[rng.integers(0, cnn.N_CLASSES, 64)]
    contenders = {"flux.cupy": cnn.flux_contender(x, y, "cupy"),
                  "torch": cnn.torch_contender(x, y, cnn.model_and_weights()[1], "cuda")}
    _warm(contenders)
    times = side_by_side(contenders, args.repeats, max(1, args.calls // 10))
    print_times("CNN 28×28×1, batch 64 (bench/cnn.py's), training step", times, "ms", 1e3)
    print_ratio(times, "flux.cupy", "torch", "cuDNN convolutions; flux: im2col + cuBLAS")
    contenders = {"flux.cupy": _flux_lstm(rng), "torch": _torch_lstm(rng)}
    _warm(contenders)
    times = side_by_side(contenders, args.repeats, max(1, args.calls // 10))
    print_times("LSTM(128→256) unrolled 50 steps, batch 64, training step", times, "ms", 1e3)
    print_ratio(times, "flux.cupy", "torch", "nn.LSTM (cuDNN); target ≤ 1.0")


if __name__ == "__main__":
    main()
