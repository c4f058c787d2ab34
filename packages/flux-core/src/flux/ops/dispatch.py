"""NumPy's protocols on traced values: which translation (`flux.ops.numpy_api`,
`flux.ops.numpy_arrays`) each ufunc and function dispatches to (``__array_ufunc__``,
``__array_function__``), and the error for one with none."""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P
from flux.ir.trace import TraceError
from flux.ops.numpy_api import (
    _located, _no_out, absolute, add, astype, broadcast_to, clip, concatenate, cos, divide, dot,
    equal, exp, expand_dims, expm1, full_like, greater, greater_equal, hstack, less, less_equal,
    log, log1p, logical_and, logical_not, logical_or, matmul, max, maximum, mean, min, minimum,
    moveaxis, multiply, ndim, negative, not_equal, ones_like, positive, power, ravel,
    reciprocal, reshape, shape, sign, sin, size, sqrt, square, squeeze, stack, std, subtract,
    sum, swapaxes, take, tanh, translation, transpose, var, vstack, where, zeros_like)
from flux.ops.contractions import cumsum, einsum, outer, tensordot
from flux.ops.norms import norm
from flux.ops.numpy_arrays import (
    argmax, argmin, array_split, dsplit, flip, fliplr, flipud, hsplit, pad, split,
    take_along_axis, tile, vsplit)


# -- dispatch tables ----------------------------------------------------------------------------

UFUNCS = {p.impl: translation(p) for p in P.ELEMENTWISE if isinstance(p.impl, np.ufunc)}
"""NumPy's ufuncs on traced values: every elementwise primitive whose implementation is a
ufunc translates to it by its declaration; the table below adds the ufuncs NumPy defines
differently (true division of integers, logical operators on any dtype) or as composites."""
UFUNCS.update({
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.true_divide: divide,
    np.divide: divide, np.power: power, np.maximum: maximum, np.minimum: minimum,
    np.fmax: maximum, np.fmin: minimum, np.negative: negative, np.positive: positive,
    np.exp: exp, np.log: log, np.tanh: tanh, np.sqrt: sqrt, np.sin: sin, np.cos: cos,
    np.absolute: absolute, np.sign: sign, np.greater: greater, np.greater_equal: greater_equal,
    np.less: less, np.less_equal: less_equal, np.equal: equal, np.not_equal: not_equal,
    np.logical_and: logical_and, np.logical_or: logical_or, np.logical_not: logical_not,
    np.matmul: matmul, np.square: square, np.reciprocal: reciprocal, np.log1p: log1p,
    np.expm1: expm1,
})

REDUCERS = {np.add: sum, np.maximum: max}

FUNCTIONS = {
    np.sum: sum, np.mean: mean, np.max: max, np.amax: max, np.min: min, np.amin: min,
    np.var: var, np.std: std, np.dot: dot, np.matmul: matmul, np.reshape: reshape,
    np.transpose: transpose, np.swapaxes: swapaxes, np.moveaxis: moveaxis, np.ravel: ravel,
    np.squeeze: squeeze, np.expand_dims: expand_dims, np.broadcast_to: broadcast_to,
    np.concatenate: concatenate, np.stack: stack, np.hstack: hstack, np.vstack: vstack,
    np.where: where, np.clip: clip, np.zeros_like: zeros_like, np.ones_like: ones_like,
    np.full_like: full_like, np.shape: shape, np.ndim: ndim, np.size: size, np.take: take,
    np.einsum: einsum, np.tensordot: tensordot, np.outer: outer, np.cumsum: cumsum,
    np.split: split, np.array_split: array_split, np.hsplit: hsplit, np.vsplit: vsplit,
    np.dsplit: dsplit, np.tile: tile, np.flip: flip, np.fliplr: fliplr, np.flipud: flipud,
    np.pad: pad, np.linalg.norm: norm, np.take_along_axis: take_along_axis,
    np.argmax: argmax, np.argmin: argmin,
}


def no_translation(name: str) -> TraceError:
    return _located(TraceError(
        f"the NumPy function {name} has no IR translation, so it cannot be used inside a "
        f"model; the supported functions are listed in flux's docs (docs/architecture.md, "
        f"'NumPy inside models')"))


def array_ufunc(self, ufunc, method, *inputs, **kwargs):
    if kwargs.get("out") is not None:
        _no_out(kwargs["out"], ufunc.__name__)
    if method == "reduce" and ufunc in REDUCERS:
        return REDUCERS[ufunc](*inputs, **kwargs)
    fn = UFUNCS.get(ufunc) if method == "__call__" else None
    if fn is None:
        name = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        raise no_translation(name)
    dtype = kwargs.pop("dtype", None)
    out = fn(*inputs)
    return astype(out, dtype) if dtype is not None else out


def array_function(self, func, types, args, kwargs):
    fn = FUNCTIONS.get(func)
    if fn is None:
        module = (func.__module__ or "numpy").replace("numpy", "np", 1)
        module = "np" if module.startswith("np._") else module
        raise no_translation(f"{module}.{func.__name__}")
    return fn(*args, **kwargs)
