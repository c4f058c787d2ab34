"""Unrolled LSTM training step through flux.tf vs Keras' own `keras.layers.LSTM`, side by side.

LSTM(128→256) over 50 steps, batch 64, float32; loss = mean squared error of the whole output
sequence against a target; SGD. flux: ``flux.unroll(flux.LSTM(128, 256), 50)`` compiled with
``flux.tf`` and trained by `flux.train` (forward, TF gradients and the update in one TF
function). Keras: ``Sequential([Input((50, 128)), LSTM(256, return_sequences=True)])``
with the same loss and optimiser, stepped by `train_on_batch` (Keras fuses the four gates
into one kernel matrix and runs the time loop as a `tf.while_loop`; flux's graph is the
unrolled seed equations, one matmul per gate and operand). Aim: flux / keras ≤ 1.2.

    python bench/tf_lstm.py [--steps 50] [--batch 64] [--repeats 5] [--calls 3]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import flux  # noqa: E402
from _timing import print_ratio, print_times, side_by_side  # noqa: E402

LR, N_IN, N_OUT = 0.01, 128, 256


def flux_contender(x, y, **options):
    flux.seed(0)
    model = flux.unroll(flux.LSTM(N_IN, N_OUT), x.shape[1], stateful=False)
    compiled = flux.compile(model, "tf", **options)
    opt = flux.SGD(LR)

    def run(steps):
        flux.train(compiled, [(x, y)] * steps, loss=flux.mse, opt=opt)
    return run


def keras_contender(x, y):
    model = keras.Sequential([keras.Input(x.shape[1:]),
                              keras.layers.LSTM(N_OUT, return_sequences=True)])
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse")

    def run(steps):
        for _ in range(steps):
            model.train_on_batch(x, y)
    return run


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, args.steps, N_IN), dtype=np.float32)
    y = rng.standard_normal((args.batch, args.steps, N_OUT), dtype=np.float32)
    contenders = {"flux.tf": flux_contender(x, y), "keras": keras_contender(x, y)}
    for name, run in contenders.items():
        start = time.perf_counter()
        run(1)                                         # build, trace, first step
        print(f"{name} first step (build + trace + run): {time.perf_counter() - start:.2f} s")
    for run in contenders.values():
        run(2)                                         # warm up
    times = side_by_side(contenders, args.repeats, args.calls)
    print_times(f"LSTM({N_IN}→{N_OUT}) unrolled {args.steps} steps, batch {args.batch}, "
                f"float32, training step (median of {args.repeats} x {args.calls}):", times,
                "ms/step", 1e3)
    print_ratio(times, "flux.tf", "keras", "aim ≤ 1.2")


if __name__ == "__main__":
    main()
