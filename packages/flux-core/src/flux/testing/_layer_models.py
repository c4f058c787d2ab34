"""The models and NumPy references of the kit's layer cases (``cnn``,
``embedding_layernorm``, ``batchnorm_test``, ``batchnorm_train`` in `_cases.CASES`)."""
from __future__ import annotations

import numpy as np

import flux
from flux import Affine, Chain

from . import _window_references as W
from ._references import affine, init, relu

__all__ = ["cnn", "cnn_reference", "layernorm", "tokens", "batchnorm", "batchnorm_reference"]


def _small(*shape):
    return init(*shape) * 0.3        # (a CNN of init's scale diverges under the kit's SGD)


def cnn():
    return Chain(flux.Conv((3, 3), 2, 3, padding="same", init=_small), flux.relu,
                 flux.MaxPool((2, 2)), flux.Conv((2, 2), 3, 4, stride=2, init=_small),
                 flux.AvgPool((1, 2), padding=((0, 0), (0, 1))), flux.Reshape(-1),
                 Affine(4, 3, init=_small))


def cnn_reference(p, x):
    h = relu(W.conv(x, p["layers.0.W"], (1, 1), ((1, 1), (1, 1)), (1, 1), 1) + p["layers.0.b"])
    h = W.pool(h, (2, 2), (2, 2), ((0, 0), (0, 0)), "max")
    h = W.conv(h, p["layers.3.W"], (2, 2), ((0, 0), (0, 0)), (1, 1), 1) + p["layers.3.b"]
    h = W.pool(h, (1, 2), (1, 2), ((0, 0), (0, 1)), "mean")
    return affine(p, "layers.6.", h.reshape(h.shape[0], -1))


def layernorm(x, g, b, eps=1e-5):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) * g + b


def tokens(rng):
    """(2, 5) token indices into a vocabulary of 7, repeats included."""
    return (rng.integers(0, 7, (2, 5)),)


def batchnorm(mode):
    """Affine then BatchNorm, in a forced mode (so `back` and calls agree)."""
    def make():
        model = Chain(Affine(4, 3, init=init), flux.BatchNorm(3))
        model.layers[1].γ.value = init(3) + 1
        model.layers[1].β.value = init(3)
        return flux.testmode(model, mode == "test")
    return make


def batchnorm_reference(mode):
    def reference(p, x):
        h = affine(p, "layers.0.", x)
        if mode == "train":
            mean, var = h.mean(0), h.var(0)
        else:
            mean, var = np.zeros(3), np.ones(3)       # the initial running statistics
        return (h - mean) / np.sqrt(var + 1e-5) * p["layers.1.γ"] + p["layers.1.β"]
    return reference
