"""flux's TensorFlow backend vs TensorFlow written by hand, side by side in one run.

1. MLP training step (64→128→128→10, batch 128, float32, softmax cross-entropy, SGD): `flux.train`
   on `flux.tf(model)` vs Keras 3 `train_on_batch` vs a hand-written `tf.function` with
   `GradientTape`. Target: flux / min(keras, tf.function) ≤ 1.05. Also shown: the same
   hand-written step called through its concrete function (``step.get_concrete_function()``),
   which skips `tf.function`'s per-call argument matching as flux.tf does: the floor for a
   step of this model in TensorFlow.
2. Inference call overhead on a tiny model (Affine(4, 2), one point): `flux.tf(model)(x)` vs a
   bare `tf.function` called on the same NumPy array (result as NumPy). Target ≤ 1.5.

    python bench/tf_mlp.py [--steps 200] [--repeats 7]
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import flux  # noqa: E402
from _timing import (classification_batch, print_ratio, print_times,  # noqa: E402
                     side_by_side, steps_and_repeats)

SIZES, BATCH, LR = (64, 128, 128, 10), 128, 0.01


def flux_contender(x, y, **options):
    flux.seed(0)
    model = flux.Chain(flux.Affine(64, 128), flux.relu, flux.Affine(128, 128), flux.relu,
                       flux.Affine(128, 10))
    compiled = flux.compile(model, "tf", **options)
    opt = flux.SGD(LR)
    data = [(x, y)]

    def run(steps):
        flux.train(compiled, data * steps, loss=flux.logitcrossentropy, opt=opt)
    return run


def keras_contender(x, y):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, "relu"),
                              keras.layers.Dense(128, "relu"), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(LR),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True))

    def run(steps):
        for _ in range(steps):
            model.train_on_batch(x, y)
    return run


def tf_function_contender(x, y, concrete=False):
    rng = np.random.default_rng(0)
    Ws = [tf.Variable(rng.standard_normal((a, b), dtype=np.float32) / 10)
          for a, b in zip(SIZES, SIZES[1:])]
    bs = [tf.Variable(np.zeros(b, np.float32)) for b in SIZES[1:]]
    variables = [v for pair in zip(Ws, bs) for v in pair]

    @tf.function(input_signature=[tf.TensorSpec((BATCH, 64)), tf.TensorSpec((BATCH, 10))])
    def step(x, y):
        with tf.GradientTape() as tape:
            h = x
            for i, (W, b) in enumerate(zip(Ws, bs)):
                h = h @ W + b
                if i < len(Ws) - 1:
                    h = tf.nn.relu(h)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, h))
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(LR * g)
        return loss

    call = step.get_concrete_function() if concrete else step

    def run(steps):
        for _ in range(steps):
            float(call(x, y))          # the loss back in Python, as flux.train does
    return run


def overhead_contenders():
    flux.seed(0)
    model = flux.Affine(4, 2)
    compiled = flux.tf(model)
    W, b = tf.Variable(model.W.value), tf.Variable(model.b.value)
    bare = tf.function(lambda x: tf.linalg.matvec(W, x, transpose_a=True) + b,
                       input_signature=[tf.TensorSpec((4,))])
    concrete = bare.get_concrete_function()
    x = np.ones(4, np.float32)
    compiled(x)
    bare(x)

    def run_flux(calls):
        for _ in range(calls):
            compiled(x)

    def run_bare(calls):
        for _ in range(calls):
            bare(x).numpy()

    def run_concrete(calls):
        for _ in range(calls):
            concrete(x).numpy()
    return {"flux.tf": run_flux, "tf.function": run_bare, "concrete fn": run_concrete}


def main():
    args = steps_and_repeats()
    x, y = classification_batch(BATCH, SIZES[0], SIZES[-1])
    contenders = {"flux.tf": flux_contender(x, y), "keras": keras_contender(x, y),
                  "tf.function": tf_function_contender(x, y),
                  "concrete fn": tf_function_contender(x, y, concrete=True)}
    for run in contenders.values():
        run(5)                                      # trace and warm up
    times = side_by_side(contenders, args.repeats, args.steps)
    print_times(f"MLP training step {SIZES} batch {BATCH} (median of {args.repeats} x "
                f"{args.steps}):", times)
    print_ratio(times, "flux.tf", ["keras", "tf.function"], "target ≤ 1.05")
    print_ratio(times, "flux.tf", "concrete fn")

    times = side_by_side(overhead_contenders(), args.repeats, 20 * args.steps)
    print_times("Call overhead, Affine(4, 2) on one point:", times)
    print_ratio(times, "flux.tf", "tf.function", "target ≤ 1.5")
    print_ratio(times, "flux.tf", "concrete fn")


if __name__ == "__main__":
    main()
