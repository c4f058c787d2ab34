"""The primitive-level case table `PRIMITIVE_CASES`: one line per primitive of
`flux.ir.PRIMITIVES`, each a tiny ``net(lambda ...)`` model whose graph contains that
primitive, written through the NumPy API or flux's functions wherever users can reach it.

Primitives not reachable from user code are bound directly: ``stop_gradient`` (used inside
softmax, where it cannot change the gradient) and the gradients ``index_add``,
``conv_input_grad``, ``conv_filter_grad``, ``window_max_grad``, ``window_sum_grad`` and
``take_grad`` (their references are the loops of `_window_references`). A case's graph, or
its gradient graph, must contain its primitive; the kit checks
both that and that every primitive has a case.
"""
from __future__ import annotations

import numpy as np

import flux
from flux.ir import primitives as P

from . import _window_references as W
from ._cases import fn
from ._references import normals, positive, positives, randn, relu, sigmoid

__all__ = ["PRIMITIVE_CASES"]


def _tied(rng):
    """Two (3, 4) arrays equal in every other column (for comparisons and max/min ties)."""
    x, y = randn(rng, 3, 4), randn(rng, 3, 4)
    y[:, ::2] = x[:, ::2]
    return x, y


def _normal_and_positive(rng):
    return randn(rng, 3, 4), positive(rng, 4)


def _positive_and_normal(rng):
    return positive(rng, 3, 4), randn(rng, 4)


def _index_add(g):
    out = np.zeros((4, 3), g.dtype)
    np.add.at(out, np.array([0, 2, 2]), g)
    return out


def _wide(rng):
    """(3, 4) and (4,) arrays spread over ±40, where exp alone would lose float32's range."""
    return 20 * randn(rng, 3, 4), 20 * randn(rng, 4)


def _logaddexp(x, y):
    """log(eˣ + eʸ) = max(x, y) + log(1 + e^−|x−y|), which never overflows."""
    big = np.maximum(x, y)
    return big + np.log1p(np.exp(-np.abs(x - y)))


def _tie_max(x, y):
    """max(x, y) whose gradient splits ties equally, as central differences see them."""
    return np.where(x > y, x, np.where(x < y, y, (x + y) / 2))


def _tie_min(x, y):
    return np.where(x < y, x, np.where(x > y, y, (x + y) / 2))


# convolution: 2-D, strided, padded unevenly, dilated, two groups
CONV = dict(strides=(2, 1), padding=((1, 0), (1, 1)), dilation=(1, 2), groups=2)
POOL = dict(window=(3, 2), strides=(2, 1), padding=((1, 1), (0, 1)))


def _indices(rng):
    """A (4, 3) table and (2, 4) row indices into it, with repeats."""
    return randn(rng, 4, 3), np.array([[0, 2, 2, 3], [1, 0, 3, 2]])


def _rows(g_shape):
    return lambda rng: (randn(rng, *g_shape), np.array([[0, 2, 2, 3], [1, 0, 3, 2]]))


def _whole(i):
    """Indices as the integers they are (finite differences hand them over as floats)."""
    return np.rint(i).astype(np.int64)


PRIMITIVE_CASES = [
    # elementwise unary
    fn("neg", lambda x: -x, normals((3, 4)), lambda x: -x),
    fn("exp", lambda x: np.exp(x), normals((3, 4)), np.exp),
    fn("log", lambda x: np.log(x), positives((3, 4)), np.log),
    fn("tanh", lambda x: np.tanh(x), normals((3, 4)), np.tanh),
    fn("sqrt", lambda x: np.sqrt(x), positives((3, 4)), np.sqrt),
    fn("sin", lambda x: np.sin(x), normals((3, 4)), np.sin),
    fn("cos", lambda x: np.cos(x), normals((3, 4)), np.cos),
    fn("abs", lambda x: np.abs(x), normals((3, 4)), lambda x: np.where(x < 0, -x, x)),
    fn("sign", lambda x, y: np.sign(x) * y, normals((3, 4), (3, 4)),
       lambda x, y: np.where(x > 0, y, -y)),
    fn("relu", lambda x: flux.relu(x), normals((3, 4)), relu),
    fn("logistic", lambda x: flux.σ(x), lambda rng: (4 * randn(rng, 3, 4),), sigmoid),
    # elementwise binary, with broadcasting
    fn("add", lambda x, y: x + y, normals((3, 4), (4,)), lambda x, y: x + y),
    fn("sub", lambda x, y: x - y, normals((3, 1), (4,)), lambda x, y: x - y),
    fn("mul", lambda x, y: x * y, normals((3, 4), (3, 1)), lambda x, y: x * y),
    fn("div", lambda x, y: x / y, _normal_and_positive, lambda x, y: x / y),
    fn("pow", lambda x, y: x ** y, _positive_and_normal, lambda x, y: np.exp(y * np.log(x))),
    fn("max", lambda x, y: np.maximum(x, y), _tied, _tie_max),
    fn("min", lambda x, y: np.minimum(x, y), _tied, _tie_min),
    fn("logaddexp", lambda x, y: np.logaddexp(x, y), _wide, _logaddexp),
    # comparisons and logic: boolean outputs, no gradient
    fn("gt", lambda x, y: x > y, _tied, np.greater, differentiable=False),
    fn("ge", lambda x, y: x >= y, _tied, np.greater_equal, differentiable=False),
    fn("lt", lambda x, y: x < y, _tied, np.less, differentiable=False),
    fn("le", lambda x, y: x <= y, _tied, np.less_equal, differentiable=False),
    fn("eq", lambda x, y: x == y, _tied, np.equal, differentiable=False),
    fn("ne", lambda x, y: x != y, _tied, np.not_equal, differentiable=False),
    fn("and", lambda x, y: (x > 0) & (y > 0), normals((3, 4), (3, 4)),
       lambda x, y: np.logical_and(x > 0, y > 0), differentiable=False),
    fn("or", lambda x, y: (x > 0) | (y > 0), normals((3, 4), (3, 4)),
       lambda x, y: np.logical_or(x > 0, y > 0), differentiable=False),
    # select, convert, stop_gradient
    fn("where", lambda c, x, y: np.where(c > 0, x, y), normals((3, 1), (3, 4), (4,)),
       lambda c, x, y: np.where(c > 0, x, y)),
    fn("convert", lambda x: (x.astype(np.float64) * 3).astype(np.float32)
       + (x > 0).astype(np.float32), normals((3, 4)), lambda x: x * 3 + (x > 0)),
    fn("stop_gradient", lambda x, y: x * P.stop_gradient_p(y), normals((3, 4), (3, 4)),
       lambda x, y: x * y, constant_inputs=(1,)),
    # matmul, reductions
    fn("matmul", lambda x, y: x @ y, normals((3, 4), (4, 2)), lambda x, y: x @ y),
    fn("reduce_sum", lambda x: np.sum(x, axis=0), normals((3, 4)), lambda x: x.sum(axis=0)),
    fn("reduce_max", lambda x: np.max(x, axis=-1), normals((3, 4)), lambda x: x.max(axis=-1)),
    # shapes and indexing
    fn("broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), normals((3, 1)),
       lambda x: x[None, :, :] * np.ones((2, 3, 4), x.dtype)),
    fn("reshape", lambda x: np.reshape(x, (6, 2)), normals((3, 4)), lambda x: x.reshape(6, 2)),
    fn("transpose", lambda x: np.transpose(x, (1, 2, 0)), normals((2, 3, 4)),
       lambda x: x.transpose(1, 2, 0)),
    fn("concatenate", lambda x, y, z: np.concatenate([x, y, z], axis=1),
       normals((2, 1), (2, 3), (2, 2)), lambda x, y, z: np.hstack([x, y, z])),
    fn("getitem", lambda x: x[1:, ::-2], normals((3, 5)), lambda x: x[1:, [4, 2, 0]]),
    fn("index_add", lambda g: P.index_add_p(g, index=(np.array([0, 2, 2]),), shape=(4, 3)),
       normals((3, 3)), _index_add),
    # windows: convolution, pooling, and their gradients
    fn("conv", lambda x, w: flux.conv(x, w, stride=(2, 1), padding=((1, 0), (1, 1)),
                                      dilation=(1, 2), groups=2),
       normals((2, 5, 6, 4), (3, 2, 2, 6)), lambda x, w: W.conv(x, w, **CONV)),
    fn("conv_input_grad", lambda g, w: P.conv_input_grad_p(g, w, **CONV, shape=(2, 5, 6, 4)),
       normals((2, 2, 6, 6), (3, 2, 2, 6)),
       lambda g, w: W.conv_input_grad(g, w, **CONV, shape=(2, 5, 6, 4))),
    fn("conv_filter_grad", lambda x, g: P.conv_filter_grad_p(x, g, **CONV, shape=(3, 2, 2, 6)),
       normals((2, 5, 6, 4), (2, 2, 6, 6)),
       lambda x, g: W.conv_filter_grad(x, g, **CONV, shape=(3, 2, 2, 6))),
    fn("window_max", lambda x: flux.max_pool(x, (3, 2), stride=(2, 1),
                                             padding=((1, 1), (0, 1))),
       normals((2, 5, 4, 3)), lambda x: W.pool(x, **POOL, how="max")),
    fn("window_max_grad", lambda x, g: P.window_max_grad_p(x, P.window_max_p(x, **POOL), g,
                                                           **POOL),
       normals((2, 5, 4, 3), (2, 3, 4, 3)), lambda x, g: W.max_pool_grad(x, g, **POOL),
       differentiable=False),
    fn("window_sum", lambda x: flux.avg_pool(x, (3, 2), stride=(2, 1),
                                             padding=((1, 1), (0, 1))),
       normals((2, 5, 4, 3)), lambda x: W.pool(x, **POOL, how="mean")),
    fn("window_sum_grad", lambda g: P.window_sum_grad_p(g, **POOL, shape=(2, 5, 4, 3)),
       normals((2, 3, 4, 3)), lambda g: W.sum_pool_grad(g, **POOL, shape=(2, 5, 4, 3))),
    # gathers by data-dependent indices
    fn("take", lambda x, i: np.take(x, i, axis=0), _indices, lambda x, i: x[_whole(i)],
       constant_inputs=(1,)),
    fn("take_grad", lambda g, i: P.take_grad_p(g, i, axis=0, shape=(4, 3)), _rows((2, 4, 3)),
       lambda g, i: W.take_grad(g, _whole(i), 4), constant_inputs=(1,)),
]
"""One case per primitive (named after it): the vocabulary every backend implements."""
