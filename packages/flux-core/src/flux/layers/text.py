"""Layers for text and reshaping: `Embedding` (rows of a table by integer index), `LayerNorm`
(normalising each point over its last axis) and `Reshape` (each point to a new shape)."""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxTypeError, FluxValueError
from flux.ir import primitives as P
from flux.model.net import net
from flux.model.param import Param, initn, param
from flux.ops import numpy_api as api

__all__ = ["Embedding", "LayerNorm", "Reshape"]


def _size(value, what: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise FluxValueError(f"{what} must be an int ≥ 1, found {value!r}")
    return int(value)


@net
class Embedding:
    """Rows of a table: ``Embedding(vocab, dim)(i) = W[i]`` for integer indices of any shape,
    giving ``(*i.shape, dim)``; ``W: (vocab, dim)`` drawn from `init`.

    Indices must be integers in ``[0, vocab)``: on the NumPy backend another index is a
    BackendError naming it and the vocabulary size at the user's line; TensorFlow on a CPU
    refuses it too, MXNet clips it (a documented property of its ``take``).

    >>> e = Embedding(10, 4)
    >>> e(np.array([[1, 2, 3], [4, 5, 6]])).shape
    (2, 3, 4)
    """

    W: Param

    def __init__(self, vocab: int, dim: int, *, init=initn, dtype=None):
        self.W = param(init(_size(vocab, "Embedding: vocab"), _size(dim, "Embedding: dim")),
                       dtype)

    def __call__(self, indices):
        indices = api._as_tracer_or_array(indices)
        if np.dtype(indices.dtype).kind not in "iu":
            raise FluxTypeError(f"Embedding takes integer indices, found {indices.dtype} "
                                f"(cast them with .astype(int))")
        return P.take_p(self.W, indices, axis=0)

    def __repr__(self) -> str:
        return f"Embedding({self.W.shape[0]}, {self.W.shape[1]})"


@net
class LayerNorm:
    """Each point normalised over its last axis, then scaled and shifted:

        y = (x − mean(x)) / sqrt(var(x) + ε) · γ + β      (mean, var over the last axis)

    ``LayerNorm(n, eps=1e-5)``: ``γ: (n,)`` starts at ones, ``β: (n,)`` at zeros (PyTorch's
    defaults; the variance is the biased one, as in PyTorch and Keras).

    >>> ln = LayerNorm(3)
    >>> np.round(ln(np.array([[1.0, 2.0, 3.0]])), 4)
    array([[-1.2247,  0.    ,  1.2247]], dtype=float32)
    """

    γ: Param
    β: Param

    def __init__(self, n: int, *, eps: float = 1e-5, dtype=None):
        n = _size(n, "LayerNorm: n")
        if not isinstance(eps, numbers.Real) or not eps > 0:
            raise FluxValueError(f"LayerNorm: eps must be a number > 0, found {eps!r}")
        self.eps = float(eps)
        self.γ = param(np.ones(n, np.float32), dtype)
        self.β = param(np.zeros(n, np.float32), dtype)

    def __call__(self, x):
        centred = x - np.mean(x, axis=-1, keepdims=True)
        var = np.mean(centred * centred, axis=-1, keepdims=True)
        return centred / np.sqrt(var + self.eps) * self.γ + self.β

    def __repr__(self) -> str:
        return f"LayerNorm({self.γ.shape[0]})"


@net
class Reshape:
    """Each data point reshaped, the batch axis (the first) kept: ``Reshape(7, 7, 4)`` takes
    ``(N, 196)`` to ``(N, 7, 7, 4)``; one size may be -1 (inferred), as in NumPy.

    >>> Reshape(2, -1)(np.zeros((5, 12))).shape
    (5, 2, 6)
    """

    def __init__(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if not shape or not all(isinstance(d, numbers.Integral) and (d >= 1 or d == -1)
                                for d in shape) or list(shape).count(-1) > 1:
            raise FluxValueError(f"Reshape takes sizes ≥ 1 and at most one -1, found "
                                 f"{shape!r}")
        self.shape = tuple(int(d) for d in shape)

    def __call__(self, x):
        x = api._as_tracer_or_array(x)
        point = int(np.prod(x.shape[1:], dtype=np.int64))
        known = int(np.prod([d for d in self.shape if d != -1], dtype=np.int64))
        if (point % known if -1 in self.shape else point != known):
            raise FluxValueError(f"{self!r}: a point of shape {tuple(x.shape[1:])} "
                                 f"({point} elements) cannot take that shape (the first axis "
                                 f"of {tuple(x.shape)} is the batch)")
        return np.reshape(x, (x.shape[0],) + self.shape)

    def __repr__(self) -> str:
        return f"Reshape({', '.join(map(str, self.shape))})"
