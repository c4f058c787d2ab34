"""LSTM training step through flux.tf, its time loop as one `tf.while_loop` (flux's `scan`) vs
the same graph fully unrolled vs Keras' own `keras.layers.LSTM`, side by side: build time (the
first training step minus a later one) and step time.

LSTM(128→256) over 50 steps, batch 64, float32; loss = mean squared error of the whole output
sequence against a target; SGD. flux: ``flux.unroll(flux.LSTM(128, 256), 50, stateful=False)``
compiled with ``flux.tf`` and trained by `flux.train` (forward, TF gradients and the update in
one TF function), traced with loops ("flux.tf", one ``tf.while_loop`` over the step's seed
equations, one matmul per gate and operand) and with ``FLUX_LOOPS=unroll`` ("unrolled", 50
copies of the step). Keras: ``Sequential([Input((50, 128)), LSTM(256,
return_sequences=True)])`` with the same loss and optimiser, stepped by `train_on_batch` (Keras
fuses the four gates into one kernel matrix and runs the time loop as a `tf.while_loop`).
TensorFlow and Keras are warmed up on a small model first, so that neither build pays for the
libraries' own start. Targets: first step flux.tf / keras ≤ 1.2; step flux.tf / unrolled ≤
1.05; step flux.tf / keras ≤ 0.75.

    python bench/tf_lstm.py [--steps 50] [--batch 64] [--repeats 5] [--calls 3] [--builds 3]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import flux  # noqa: E402
from _timing import print_ratio, print_times, side_by_side  # noqa: E402

LR, N_IN, N_OUT = 0.01, 128, 256


def flux_contender(x, y, loops="scan"):
    """flux.tf's training step, traced (at its first step, here) with ``FLUX_LOOPS=loops``."""
    flux.seed(0)
    model = flux.unroll(flux.LSTM(x.shape[-1], y.shape[-1]), x.shape[1], stateful=False)
    compiled = flux.tf(model)
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


def keras_contender(x, y):
    model = keras.Sequential([keras.Input(x.shape[1:]),
                              keras.layers.LSTM(y.shape[-1], return_sequences=True)])
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")

    def run(steps):
        for _ in range(steps):
            model.train_on_batch(x, y)
    run(1)                                             # build, trace, first step
    return run


def warm_up() -> None:
    """TensorFlow's and Keras' own start (kernels, thread pools), on a tiny LSTM each."""
    x, y = np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 5), np.float32)
    for make in (flux_contender, keras_contender):
        make(x, y)(1)


def first_steps(makers: dict, x, y, builds: int) -> tuple[dict, dict]:
    """``name -> (first step, build)`` in seconds, medians over `builds` rounds of fresh
    contenders made in turn (the build: the first step minus a later one), and the last
    round's contenders. Each round starts from a collected heap: an unrolled graph left from
    the round before would slow the next builds' garbage collection."""
    times: dict = {name: [] for name in makers}
    for _ in range(builds):
        runs = {}
        gc.collect()
        for name, make in makers.items():
            start = time.perf_counter()
            runs[name] = make(x, y)
            first = time.perf_counter() - start
            runs[name](1)
            start = time.perf_counter()
            runs[name](2)
            times[name].append((first, first - (time.perf_counter() - start) / 2))
    return {name: tuple(statistics.median(column) for column in zip(*t))
            for name, t in times.items()}, runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, N_IN), dtype=np.float32)
    y = rng.standard_normal((args.batch, args.steps, N_OUT), dtype=np.float32)
    makers = {"flux.tf": flux_contender, "keras": keras_contender,
              "unrolled": lambda x, y: flux_contender(x, y, "unroll")}
    warm_up()
    first, contenders = first_steps(makers, x, y, args.builds)
    print(f"LSTM({N_IN}→{N_OUT}) over {args.steps} steps, batch {args.batch}, float32, first "
          f"training step (median of {args.builds} builds):")
    print(f"  {'':12s} {'first step':>11s} {'build':>9s}")
    for name, (step, build) in first.items():
        print(f"  {name:12s} {step:10.2f}s {build:8.2f}s")
    print_ratio({k: v[0] for k, v in first.items()}, "flux.tf", "keras",
                "first step, target ≤ 1.2")
    print_ratio({k: v[1] for k, v in first.items()}, "flux.tf", "keras", "build")
    times = side_by_side(contenders, args.repeats, args.calls)
    print_times(f"LSTM({N_IN}→{N_OUT}) over {args.steps} steps, batch {args.batch}, float32, "
                f"training step (median of {args.repeats} x {args.calls}):", times, "ms/step",
                1e3)
    print_ratio(times, "flux.tf", "unrolled", "target ≤ 1.05")
    print_ratio(times, "flux.tf", "keras", "target ≤ 0.75")


if __name__ == "__main__":
    main()
