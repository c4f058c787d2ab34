"""ONNX's reductions (ReduceSum, Mean, Max, Min, Prod, L1, L2, LogSum, LogSumExp,
SumSquare), ArgMax/ArgMin, and the products MatMul and Einsum (and Det, of known values
only: flux has no primitive for it).

A reduction's axes are an attribute before opset 18 (13 for ReduceSum) and an input from
then on; without axes it reduces every axis, unless noop_with_empty_axes=1 (the input is
returned as it is). keepdims (default 1) keeps the reduced axes with size 1. Formulas:
``L1 = Σ|x|``, ``L2 = √Σx²``, ``SumSquare = Σx²``, ``LogSum = log Σx``,
``LogSumExp = m + log Σ exp(x − m)`` with ``m = max x`` (finite; 0 where it is ±∞), ``Prod``
as successive products of slices (flux has no product reduction), ``Min`` as ``−max(−x)``
(unsigned integers: ``M − max(M − x)``, M the dtype's largest value). Integer means
truncate (``trunc(Σx / n)``). Reducing an axis of size 0 gives the reduction's identity
(0, 1, −∞, +∞; NaN for the mean).
"""
from __future__ import annotations

import numpy as np

from flux.onnx.operators.arguments import attr_or_input, axes_of, axis_of, folded, traced
from flux.onnx.operators.registry import operator

_AXES_INPUT_SINCE = {"ReduceSum": 13}
_REDUCTIONS = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
               "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
_EMPTY = {"ReduceSum": 0, "ReduceMean": np.nan, "ReduceMax": -np.inf, "ReduceMin": np.inf,
          "ReduceProd": 1, "ReduceL1": 0, "ReduceL2": 0, "ReduceLogSum": -np.inf,
          "ReduceLogSumExp": -np.inf, "ReduceSumSquare": 0}


def _reduce(node, x, axes_input=None):
    since = _AXES_INPUT_SINCE.get(node.op_type, 18)
    given = attr_or_input(node, axes_input, "axes", since)
    ndim = len(x.shape)
    if not given:
        if node.opset >= since and node.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(ndim))
    else:
        axes = axes_of(node, given, ndim)
    keep = bool(node.attr("keepdims", 1))
    out_shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if keep else \
        tuple(d for i, d in enumerate(x.shape) if i not in axes)
    if any(x.shape[a] == 0 for a in axes):
        fill = _EMPTY[node.op_type]
        if x.dtype.kind == "b":
            fill = fill > 0
        elif x.dtype.kind in "iu" and not np.isfinite(fill):
            fill = np.iinfo(x.dtype).min if fill < 0 else np.iinfo(x.dtype).max
        return np.full(out_shape, fill, dtype=x.dtype)
    return _REDUCERS[node.op_type](x, tuple(axes), keep)


def _sum(x, axes, keep):
    return np.sum(x, axis=axes, keepdims=keep, dtype=x.dtype)


def _mean(x, axes, keep):
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = _sum(x, axes, keep)
    if x.dtype.kind == "f":
        return total / np.asarray(count, x.dtype)
    return np.divide(total.astype(np.float64), count).astype(x.dtype)     # (truncates)


def _min(x, axes, keep):
    if not traced(x) or x.dtype.kind in "fi":
        return np.min(x, axis=axes, keepdims=keep)
    if x.dtype.kind == "b":
        return _min(x.astype(np.uint8), axes, keep).astype(np.bool_)
    top = np.asarray(np.iinfo(x.dtype).max, x.dtype)
    return top - np.max(top - x, axis=axes, keepdims=keep)


def _prod(x, axes, keep):
    if not traced(x):
        return np.prod(x, axis=axes, keepdims=keep, dtype=x.dtype)
    for axis in axes:
        before = (slice(None),) * axis
        product = x[before + (slice(0, 1),)]
        for i in range(1, x.shape[axis]):
            product = product * x[before + (slice(i, i + 1),)]
        x = product
    if keep:
        return x
    return np.reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def _log_sum_exp(x, axes, keep):
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.less(np.abs(m), np.inf), m, np.zeros((), x.dtype))     # (finite maxima)
    total = np.sum(np.exp(x - m), axis=axes, keepdims=True)
    out = np.log(total) + m
    return out if keep else np.reshape(out, tuple(d for i, d in enumerate(x.shape)
                                                  if i not in axes))


def _in_dtype(fn):
    def reduce(x, axes, keep):
        return fn(x, axes, keep).astype(x.dtype) if x.dtype.kind != "f" else fn(x, axes, keep)
    return reduce


_REDUCERS = {
    "ReduceSum": _sum, "ReduceMean": _mean, "ReduceMin": _min, "ReduceProd": _prod,
    "ReduceMax": lambda x, axes, keep: np.max(x, axis=axes, keepdims=keep),
    "ReduceL1": lambda x, axes, keep: _sum(np.abs(x), axes, keep),
    "ReduceL2": _in_dtype(lambda x, axes, keep: np.sqrt(_sum(x * x, axes, keep))),
    "ReduceLogSum": _in_dtype(lambda x, axes, keep: np.log(_sum(x, axes, keep))),
    "ReduceLogSumExp": _in_dtype(_log_sum_exp),
    "ReduceSumSquare": lambda x, axes, keep: _sum(x * x, axes, keep),
}

for _op in _REDUCTIONS:
    operator(_op)(_reduce)


# -- arg-reductions -----------------------------------------------------------------------------


def _arg(node, x):
    ndim = len(x.shape)
    axis = axis_of(node, node.attr("axis", 0), ndim)
    keep = bool(node.attr("keepdims", 1))
    pick = np.argmax if node.op_type == "ArgMax" else np.argmin
    if node.attr("select_last_index", 0):
        n = x.shape[axis]
        found = pick(np.flip(x, axis), axis=axis, keepdims=keep)
        return (np.asarray(n - 1, np.int64) - found).astype(np.int64)
    return np.asarray(pick(x, axis=axis, keepdims=keep)).astype(np.int64) if not traced(x) \
        else pick(x, axis=axis, keepdims=keep)


operator("ArgMax", "ArgMin")(_arg)

# -- products -----------------------------------------------------------------------------------


@operator("MatMul")
def matmul(node, a, b):
    """a @ b with NumPy's rules (vectors promoted, batch axes broadcast)."""
    return np.matmul(a, b)


@operator("Einsum", since=12)
def einsum(node, *xs):
    """np.einsum of the `equation` attribute."""
    return np.einsum(node.attr("equation").replace(" ", ""), *xs)


@folded("Det", since=11)
def det(node, x):
    """The determinants of the last two axes' square matrices (known values only)."""
    return np.linalg.det(x).astype(np.asarray(x).dtype)
