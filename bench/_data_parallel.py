"""What the data-parallel benchmarks (`distributed_tf.py`, `distributed_mxnet.py`) share: the
two models, their batches and losses, their options, and the timing of training steps.

- ``mlp``: 64→128→128→10, softmax cross-entropy from logits, batch 128 per worker (the MLP
  of `tf_mlp.py` and `mxnet_mlp.py`);
- ``lstm``: ``unroll(LSTM(32, 64), 16, stateful=False)``, MSE, batch 32 per worker.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import flux

BATCH = {"mlp": 128, "lstm": 32}


def model(kind: str):
    flux.seed(0)
    if kind == "mlp":
        return flux.Chain(flux.Affine(64, 128), flux.relu, flux.Affine(128, 128), flux.relu,
                          flux.Affine(128, 10))
    return flux.unroll(flux.LSTM(32, 64), 16, stateful=False)


def batch(kind: str, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "mlp":
        x = rng.standard_normal((BATCH[kind], 64), dtype=np.float32)
        return x, np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH[kind])]
    return (rng.standard_normal((BATCH[kind], 16, 32), dtype=np.float32),
            rng.standard_normal((BATCH[kind], 16, 64), dtype=np.float32))


def loss_of(kind: str):
    return flux.logitcrossentropy if kind == "mlp" else flux.mse


def arguments(steps: int, warmup: int):
    """The options both benchmarks take (``--out`` is the launcher's, for the workers)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--model", default="mlp", choices=["mlp", "lstm"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def timed(compiled, kind: str, steps: int, warmup: int, seed: int) -> float:
    """Seconds per training step (SGD) of `compiled` over `steps` steps after `warmup`."""
    pair = batch(kind, seed)
    opt = flux.SGD(0.01)
    flux.train(compiled, [pair] * warmup, loss=loss_of(kind), opt=opt, verbose=False)
    start = time.perf_counter()
    flux.train(compiled, [pair] * steps, loss=loss_of(kind), opt=opt, verbose=False)
    return (time.perf_counter() - start) / steps
