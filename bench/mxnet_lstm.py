"""LSTM training step through flux.mxnet, its time loop as MXNet's `foreach` (flux's `scan`) vs
the same graph fully unrolled vs MXNet's own `gluon.rnn.LSTM`, side by side; then the build
time of the looped training step for 20, 100 and 400 steps.

LSTM(128→256) over 50 steps, batch 64, float32; loss = mean squared error of the whole output
sequence against a target; SGD. flux: ``flux.unroll(flux.LSTM(128, 256), 50, stateful=False)``
compiled with ``flux.mxnet`` and trained by `flux.train` (one executor: forward, MXNet's
backward, MXNet's update), traced with loops ("flux.mxnet", one ``foreach`` over the step's
seed equations, one matmul per gate and operand) and with ``FLUX_LOOPS=unroll`` ("unrolled",
50 copies of the step). Gluon: ``rnn.LSTM(256, layout="NTC")`` hybridized, with
`autograd.record`, `backward` and `Trainer.step` (MXNet's fused RNN operator, the four gates
in one matrix). Targets: flux.mxnet / unrolled ≤ 1.05; flux.mxnet / gluon aim ≤ 1.0; the build
time per step flat in the number of steps.

    python bench/mxnet_lstm.py [--steps 50] [--batch 64] [--repeats 5] [--calls 3]
                               [--lengths 20,100,400] [--build-batch 4]
"""
from __future__ import annotations

import argparse
import os
import time

import mxnet as mx
import numpy as np

import flux
from _timing import print_ratio, print_times, side_by_side

LR, N_IN, N_OUT = 0.01, 128, 256


def flux_contender(x, y, loops="scan"):
    """flux.mxnet's training step, traced (at its first step, here) with ``FLUX_LOOPS=loops``."""
    flux.seed(0)
    model = flux.unroll(flux.LSTM(N_IN, N_OUT), x.shape[1], stateful=False)
    compiled = flux.mxnet(model)
    opt = flux.SGD(LR)

    def run(steps):
        flux.train(compiled, [(x, y)] * steps, loss=flux.mse, opt=opt)

    saved = os.environ.get("FLUX_LOOPS")
    os.environ["FLUX_LOOPS"] = loops
    try:
        run(1)                                         # build, trace, first step
    finally:
        os.environ.pop("FLUX_LOOPS") if saved is None else os.environ.update(FLUX_LOOPS=saved)
    return run


def gluon_contender(x, y):
    from mxnet import autograd, gluon
    lstm = gluon.rnn.LSTM(N_OUT, input_size=N_IN, layout="NTC")
    lstm.initialize(mx.init.Normal(0.01))
    lstm.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(lstm.collect_params(), "sgd", {"learning_rate": LR})
    xs, ys = mx.nd.array(x), mx.nd.array(y)

    def run(steps):
        for _ in range(steps):
            xs[:] = x                                  # the data comes from NumPy, as for flux
            ys[:] = y
            with autograd.record():
                loss = mx.nd.mean(mx.nd.square(lstm(xs) - ys))
            loss.backward()
            trainer.step(1)
            float(loss.asscalar())                     # the loss back in Python
    run(1)
    return run


def build_times(lengths, batch) -> None:
    """The looped training step's build time (its first step minus the fastest of three later
    ones) per length."""
    print(f"flux.mxnet LSTM({N_IN}→{N_OUT}) with a loop, batch {batch}: training step build "
          f"time (first step minus the fastest of three later ones)")
    print(f"{'steps':>6} {'first':>9} {'build':>9} {'per step':>9}")
    rng = np.random.default_rng(0)
    for n in lengths:
        x = rng.random((batch, n, N_IN), dtype=np.float32)
        y = rng.random((batch, n, N_OUT), dtype=np.float32)
        flux.seed(0)
        compiled = flux.mxnet(flux.unroll(flux.LSTM(N_IN, N_OUT), n, stateful=False))
        times = []
        for _ in range(4):
            start = time.perf_counter()
            flux.train(compiled, [(x, y)], loss=flux.mse, opt=flux.SGD(LR))
            times.append(time.perf_counter() - start)
        build = times[0] - min(times[1:])
        print(f"{n:>6} {times[0]:>8.3f}s {build:>8.3f}s {build / n * 1e3:>7.3f}ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--lengths", default="20,100,400")
    parser.add_argument("--build-batch", type=int, default=4)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, N_IN), dtype=np.float32)
    y = rng.standard_normal((args.batch, args.steps, N_OUT), dtype=np.float32)
    contenders = {}
    for name, make in [("flux.mxnet", lambda: flux_contender(x, y, "scan")),
                       ("unrolled", lambda: flux_contender(x, y, "unroll")),
                       ("gluon", lambda: gluon_contender(x, y))]:
        start = time.perf_counter()
        contenders[name] = make()
        print(f"{name} first step (build + trace + run): {time.perf_counter() - start:.2f} s")
    for run in contenders.values():
        run(2)                                         # warm up
    times = side_by_side(contenders, args.repeats, args.calls)
    print_times(f"LSTM({N_IN}→{N_OUT}) over {args.steps} steps, batch {args.batch}, float32, "
                f"training step (median of {args.repeats} x {args.calls}):", times, "ms/step",
                1e3)
    print_ratio(times, "flux.mxnet", "unrolled", "target ≤ 1.05")
    print_ratio(times, "flux.mxnet", "gluon", "aim ≤ 1.0")
    print()
    build_times([int(n) for n in args.lengths.split(",")], args.build_batch)


if __name__ == "__main__":
    main()
