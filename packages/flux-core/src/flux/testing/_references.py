"""The oracle's vocabulary: input factories and initialisation for the cases, and the NumPy
functions their hand-written references are written with (never flux's own)."""
from __future__ import annotations

from typing import Callable

import numpy as np

import flux

__all__ = ["randn", "positive", "normals", "positives", "init", "sigmoid", "relu", "softmax",
           "logsoftmax", "affine"]


# -- input factories and initialisation -----------------------------------------------------------


def randn(rng: np.random.Generator, *shape) -> np.ndarray:
    """Standard normal float32 samples of `shape`."""
    return np.asarray(rng.standard_normal(shape), dtype=np.float32)


def positive(rng: np.random.Generator, *shape) -> np.ndarray:
    """Float32 samples uniform in [0.5, 2) (for log, sqrt, pow: away from 0)."""
    return np.asarray(rng.uniform(0.5, 2.0, shape), dtype=np.float32)


def normals(*shapes) -> Callable:
    """An input factory: one standard normal array per shape."""
    return lambda rng: tuple(randn(rng, *s) for s in shapes)


def positives(*shapes) -> Callable:
    """An input factory: one array in [0.5, 2) per shape."""
    return lambda rng: tuple(positive(rng, *s) for s in shapes)


def init(*shape) -> np.ndarray:
    """Layer initialisation for cases: `flux.initn` scaled to standard deviation 0.5, so that
    activations are far from linear and gradients far from zero (reproducible via flux.seed)."""
    return flux.initn(*shape) * 50


# -- NumPy references (the oracle's vocabulary) ----------------------------------------------------


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def relu(x):
    return x * (x > 0)


def softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def logsoftmax(x):
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def affine(p, prefix, x):
    return x @ p[prefix + "W"] + p[prefix + "b"]
