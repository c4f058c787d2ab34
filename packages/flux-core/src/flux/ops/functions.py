"""Activations and array functions usable in any model, on arrays and on traced values alike.

Each is written once with NumPy-style operations; inside a model they record primitives,
outside one they compute directly.
"""
from __future__ import annotations

import numpy as np

from flux.ops import numpy_api as api
from flux.errors import ShapeError
from flux.ir import primitives as P
from flux.ir.recording import named

__all__ = ["σ", "sigmoid", "relu", "tanh", "softmax", "logsoftmax", "exp", "log", "flatten",
           "hcat", "vcat", "sum", "mean", "reshape", "transpose"]


def σ(x):
    """The logistic sigmoid, σ(x) = 1 / (1 + exp(-x)), elementwise.

    >>> σ(np.array([0.0]))
    array([0.5])
    """
    return api.logistic(x)


sigmoid = σ


def relu(x):
    """relu(x) = max(x, 0) elementwise (its gradient at 0 is 0).

    >>> relu(np.array([-1.0, 2.0]))
    array([0., 2.])
    """
    return api.relu(x)


def tanh(x):
    """tanh(x) elementwise."""
    return api.tanh(x)


def exp(x):
    """exp(x) elementwise."""
    return api.exp(x)


def log(x):
    """The natural logarithm, elementwise."""
    return api.log(x)


def _shifted(x, axis):
    """x - max(x) along `axis`: the same softmax, no overflow (the shift has no gradient)."""
    x = api._floating(x)
    return api.subtract(x, P.stop_gradient_p(api.max(x, axis=axis, keepdims=True)))


@named
def softmax(x, axis=-1):
    """softmax(x)ᵢ = exp(xᵢ) / Σⱼ exp(xⱼ), over the last axis.

    >>> softmax(np.array([1.0, 1.0]))
    array([0.5, 0.5])
    """
    e = api.exp(_shifted(x, axis))
    return api.divide(e, api.sum(e, axis=axis, keepdims=True))


@named
def logsoftmax(x, axis=-1):
    """logsoftmax(x)ᵢ = xᵢ - log Σⱼ exp(xⱼ), over the last axis, computed stably."""
    z = _shifted(x, axis)
    return api.subtract(z, api.log(api.sum(api.exp(z), axis=axis, keepdims=True)))


@named
def flatten(x):
    """Flatten all but the first (batch) axis: ``(N, a, b) -> (N, a*b)``.

    >>> flatten(np.zeros((2, 3, 4))).shape
    (2, 12)
    """
    x = api._as_tracer_or_array(x)
    if x.ndim == 0:
        raise ShapeError("flatten: a 0-d value has no batch axis to keep")
    return api.reshape(x, (x.shape[0], -1))


@named
def hcat(*xs):
    """Concatenate along the last axis (the seed's `hcat`; variadic).

    >>> hcat(np.ones((2, 1)), np.zeros((2, 2))).shape
    (2, 3)
    """
    xs = [api.lift(x) for x in xs]
    return api.concatenate(xs, axis=-1)


@named
def vcat(*xs):
    """Concatenate along the first axis (the seed's `vcat`; variadic)."""
    xs = [api.lift(x) for x in xs]
    return api.concatenate(xs, axis=0)


def sum(x, axis=None, dtype=None, out=None, keepdims=False):
    """NumPy's `sum`, usable on traced values and lists of them (stacked first, as NumPy does:
    ``flux.sum([a, b])`` is a number; Python's builtin ``sum([a, b])`` is ``a + b``)."""
    return np.sum(api._as_tracer_or_array(x), axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def mean(x, axis=None, dtype=None, out=None, keepdims=False):
    """NumPy's `mean`, usable on traced values and lists of them (stacked first)."""
    return np.mean(api._as_tracer_or_array(x), axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def reshape(x, shape, order="C"):
    """NumPy's `reshape`, usable on traced values."""
    return np.reshape(x, shape, order=order)


def transpose(x, axes=None):
    """NumPy's `transpose`, usable on traced values."""
    return np.transpose(x, axes)
