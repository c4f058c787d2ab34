"""NumPy semantics on traced values: the translations of NumPy ufuncs and functions
(``__array_ufunc__``/``__array_function__``) into primitives. Composite NumPy functions (mean,
var, clip, stack ...) are written here once in terms of primitives; the elementwise ones and
promotion are in `flux.ops.elementwise`, the methods of `Tracer` in `flux.ops.methods`.
"""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import ShapeError
from flux.ir import primitives as P
from flux.ir.trace import Tracer, TraceError, current_trace
from flux.ir.graph import Literal
from flux.ops.elementwise import (  # noqa: F401  (re-exported: api.add, api.lift ...)
    lift, promote, translation, _is_weak, _dtype, _to_dtype, _floating, add, subtract,
    multiply, maximum, minimum, greater, greater_equal, less, less_equal, equal, not_equal,
    exp, log, tanh, sqrt, sin, cos, logistic, relu, divide, power, negative, absolute, sign,
    logical_and, logical_or, logical_not, square, reciprocal, log1p, expm1, positive)


def matmul(a, b):
    """NumPy's matmul: vectors are promoted to matrices and the added axis removed again."""
    a, b = promote(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must not be 0-d (scalars), found shapes "
                           f"{a.shape} and {b.shape}; use * for scaling")
    vec_a, vec_b = a.ndim == 1, b.ndim == 1
    if vec_a:
        a = reshape(a, (1,) + a.shape)
    if vec_b:
        b = reshape(b, b.shape + (1,))
    if vec_a and not vec_b and a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: cannot multiply a vector of shape ({a.shape[-1]},) by "
                           f"{b.shape}: the inner dimensions {a.shape[-1]} and {b.shape[-2]} "
                           f"must be equal")
    out = P.matmul_p(_as_value(a), _as_value(b))
    if vec_a:
        out = reshape(out, out.shape[:-2] + out.shape[-1:])
    if vec_b:
        out = reshape(out, out.shape[:-1])
    return out


def _as_value(x):
    """A Tracer, or a constant array (Literals become 0-d arrays)."""
    if isinstance(x, Literal):
        return np.asarray(x.value)
    return x


def dot(a, b):
    a, b = lift(a), lift(b)
    if np.ndim(a) == 0 or np.ndim(b) == 0:
        return multiply(a, b)
    if np.ndim(b) > 2:
        raise TraceError("np.dot with a right operand of rank > 2 has no IR translation; use "
                         "np.matmul (or @), whose batch semantics are the usual ones")
    return matmul(a, b)


# -- reductions ---------------------------------------------------------------------------------


def _axes(axis, ndim: int, name: str) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{name}: axis {a} is out of range for a value with {ndim} axes")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def _as_tracer_or_array(x):
    """A Tracer stays a Tracer; anything else (Params outside a trace, lists, numbers,
    Literals) becomes an array."""
    x = lift(x)
    if isinstance(x, Tracer):
        return x
    if isinstance(x, (list, tuple)) and any(isinstance(lift(v), Tracer) for v in x):
        return stack(x)   # a list of traced values is an array, as np.asarray makes it
    return np.asarray(x.value if isinstance(x, Literal) else x)


def sum(x, axis=None, dtype=None, out=None, keepdims=False, **unsupported):
    _no_out(out, "sum")
    x = _as_tracer_or_array(x)
    if dtype is not None:
        x = _to_dtype(x, np.dtype(dtype))
    elif x.dtype.kind in "biu" and x.dtype.itemsize < 8:
        x = _to_dtype(x, np.int64 if x.dtype.kind != "u" else np.uint64)
    return P.reduce_sum_p(x, axes=_axes(axis, x.ndim, "sum"), keepdims=bool(keepdims))


def mean(x, axis=None, dtype=None, out=None, keepdims=False, **unsupported):
    _no_out(out, "mean")
    x = _floating(_as_tracer_or_array(x))
    if dtype is not None:
        x = _to_dtype(x, np.dtype(dtype))
    axes = _axes(axis, x.ndim, "mean")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return divide(P.reduce_sum_p(x, axes=axes, keepdims=bool(keepdims)), count)


def max(x, axis=None, out=None, keepdims=False, **unsupported):
    _no_out(out, "max")
    x = _as_tracer_or_array(x)
    return P.reduce_max_p(x, axes=_axes(axis, x.ndim, "max"), keepdims=bool(keepdims))


def min(x, axis=None, out=None, keepdims=False, **unsupported):
    return negative(max(negative(x), axis=axis, out=out, keepdims=keepdims))


def var(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **unsupported):
    x = _floating(_as_tracer_or_array(x))
    centred = subtract(x, mean(x, axis=axis, keepdims=True))
    axes = _axes(axis, x.ndim, "var")
    count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64)) - ddof
    return divide(sum(multiply(centred, centred), axis=axis, keepdims=keepdims), count)


def std(x, axis=None, dtype=None, out=None, ddof=0, keepdims=False, **unsupported):
    return sqrt(var(x, axis=axis, ddof=ddof, keepdims=keepdims))


def _located(error: TraceError) -> TraceError:
    """`error` with the user's line being traced (if any) added."""
    trace = current_trace()
    if trace is not None:
        source = trace.source()
        error.message += f"\n  at {source.file}:{source.line}"
        error.with_trace(source.frames)
    return error


def _no_out(out, name):
    if out is not None:
        raise TraceError(f"np.{name}(..., out=...) writes into an array, which a dataflow graph "
                         f"cannot do; drop `out=`")


# -- shapes -------------------------------------------------------------------------------------


def reshape(x, shape, order="C", **unsupported):
    x = _as_tracer_or_array(x)
    if order != "C":
        raise TraceError(f"reshape with order={order!r} has no IR translation; only 'C'")
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(int(d) for d in shape)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape: at most one axis may be -1, found {shape}")
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if known == 0 or x.size % known:
            raise ShapeError(f"reshape: cannot reshape a value of shape {x.shape} "
                               f"({x.size} elements) to {shape}")
        shape = tuple(x.size // known if d == -1 else d for d in shape)
    if shape == x.shape:
        return x
    return P.reshape_p(x, shape=shape)


def transpose(x, axes=None):
    x = _as_tracer_or_array(x)
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    if perm == tuple(range(x.ndim)):
        return x
    return P.transpose_p(x, perm=perm)


def swapaxes(x, axis1, axis2):
    x = _as_tracer_or_array(x)
    perm = list(range(x.ndim))
    perm[axis1], perm[axis2] = perm[axis2], perm[axis1]
    return transpose(x, perm)


def moveaxis(x, source, destination):
    x = _as_tracer_or_array(x)
    perm = [a for a in range(x.ndim) if a != source % x.ndim]
    perm.insert(destination % x.ndim, source % x.ndim)
    return transpose(x, perm)


def ravel(x, order="C"):
    x = _as_tracer_or_array(x)
    return reshape(x, (x.size,), order)


def squeeze(x, axis=None):
    x = _as_tracer_or_array(x)
    if axis is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        axes = _axes(axis, x.ndim, "squeeze")
    for a in axes:
        if x.shape[a] != 1:
            raise ShapeError(f"squeeze: axis {a} of shape {x.shape} has size {x.shape[a]}, not 1")
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def expand_dims(x, axis):
    x = _as_tracer_or_array(x)
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    ndim = x.ndim + len(axes)
    axes = sorted(a % ndim for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return reshape(x, tuple(shape))


def broadcast_to(x, shape, subok=False):
    x = _as_tracer_or_array(x)
    shape = tuple(shape)
    return x if x.shape == shape else P.broadcast_to_p(x, shape=shape)


def concatenate(arrays, axis=0, out=None, **unsupported):
    _no_out(out, "concatenate")
    arrays = promote(*arrays)
    arrays = [_as_value(a) for a in arrays]
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    ndim = np.ndim(arrays[0]) if not isinstance(arrays[0], Tracer) else arrays[0].ndim
    if ndim == 0:
        raise ShapeError("concatenate: 0-d values cannot be concatenated; use stack")
    if len(arrays) == 1:
        return arrays[0]
    return P.concatenate_p(*arrays, axis=_axes(axis, ndim, "concatenate")[0])


def stack(arrays, axis=0, out=None, **unsupported):
    arrays = [_as_tracer_or_array(a) for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ShapeError(f"stack: all values must have the same shape, found "
                           f"{' and '.join(str(s) for s in shapes)}")
    return concatenate([expand_dims(a, axis) for a in arrays], axis=axis)


def hstack(arrays, **unsupported):
    arrays = [_as_tracer_or_array(a) for a in arrays]
    return concatenate(arrays, axis=0 if arrays[0].ndim == 1 else 1)


def vstack(arrays, **unsupported):
    arrays = [_as_tracer_or_array(a) for a in arrays]
    arrays = [reshape(a, (1,) + a.shape) if a.ndim < 2 else a for a in arrays]
    return concatenate(arrays, axis=0)


def where(condition, x=None, y=None):
    if x is None or y is None:
        raise TraceError("np.where(condition) with one argument returns data-dependent indices, "
                         "which a dataflow graph cannot express; use np.where(condition, x, y)")
    condition = _to_dtype(_as_tracer_or_array(condition), np.bool_)
    x, y = promote(x, y)
    return P.where_p(condition, x, y)


def clip(x, a_min=None, a_max=None, out=None, **kwargs):
    _no_out(out, "clip")
    a_min = kwargs.get("min", a_min)
    a_max = kwargs.get("max", a_max)
    # written with where, not maximum/minimum: at exactly a bound the gradient passes
    # through (1), as for PyTorch's clamp and TensorFlow's clip_by_value (max/min split ties)
    if a_min is not None:
        x = where(less(x, a_min), a_min, x)
    if a_max is not None:
        x = where(greater(x, a_max), a_max, x)
    return x


def _filled(x, value, dtype=None):
    x = _as_tracer_or_array(x)
    dtype = np.dtype(dtype) if dtype is not None else x.dtype
    if not x.shape:
        return Literal(value, dtype)
    return P.broadcast_to_p(Literal(value, dtype), shape=x.shape)


def zeros_like(x, dtype=None, **unsupported):
    return _filled(x, 0, dtype)


def ones_like(x, dtype=None, **unsupported):
    return _filled(x, 1, dtype)


def full_like(x, fill_value, dtype=None, **unsupported):
    return _filled(x, fill_value, dtype)


def shape(x):
    return _as_tracer_or_array(x).shape


def ndim(x):
    return _as_tracer_or_array(x).ndim


def size(x, axis=None):
    x = _as_tracer_or_array(x)
    return x.size if axis is None else x.shape[axis]


def astype(x, dtype, copy=True):
    return _to_dtype(lift(x), np.dtype(dtype))


def getitem(x, index):
    """Static indexing: ints, slices, None, Ellipsis and constant integer or bool arrays."""
    x = lift(x)
    index = index if isinstance(index, tuple) else (index,)
    clean = []
    for i in index:
        if isinstance(i, Tracer):
            if i.dtype == np.bool_:
                raise _located(TraceError(
                    f"indexing with a traced boolean mask (x[mask], mask of shape {i.shape}) "
                    f"has no IR translation: the result's shape would depend on the data (on "
                    f"how many elements are True), and a graph's shapes are fixed while it is "
                    f"traced; keep the shape with np.where(mask, x, 0) (zeros where the mask "
                    f"is False), then reduce with sums or means"))
            raise _located(TraceError(
                "indexing with a traced value (a data-dependent index) has no IR translation; "
                "index with Python ints, slices or constant arrays, or gather by traced "
                "integer indices with np.take(x, indices, axis=...)"))
        if isinstance(i, (list, np.ndarray)):
            i = np.asarray(i)
            if i.dtype.kind not in "biu":
                raise TraceError(f"index arrays must hold integers or bools, found {i.dtype}")
        elif isinstance(i, np.integer):
            i = int(i)
        clean.append(i)
    return P.getitem_p(x, index=tuple(clean))


def take(a, indices, axis=None, out=None, mode="raise"):
    """np.take: constant indices are static indexing; traced ones a gather (`take_p`), with
    negative indices counted from the end as NumPy does (``mode="clip"`` clips instead)."""
    _no_out(out, "take")
    a = _as_tracer_or_array(a)
    if axis is None:
        a, axis = reshape(a, (-1,)), 0
    axis = _axes(axis, a.ndim, "take")[0]
    indices = lift(indices)
    if mode not in ("raise", "clip"):
        raise TraceError(f"np.take(mode={mode!r}) has no translation; use 'raise' or 'clip'")
    if not isinstance(indices, Tracer):
        static = np.asarray(indices)
        if static.dtype.kind not in "iu":
            raise TraceError(f"np.take takes integer indices, found {static.dtype}")
        if mode == "clip":
            static = np.clip(static, 0, a.shape[axis] - 1)
        return getitem(a, (slice(None),) * axis + (static,))
    if indices.dtype.kind not in "iu":
        raise TraceError(f"np.take takes integer indices, found {indices.dtype}")
    n = a.shape[axis]
    if mode == "clip":
        indices = clip(indices, 0, n - 1)
    elif indices.dtype.kind == "i":
        indices = where(indices < 0, indices + n, indices)
    return P.take_p(a, indices, axis=axis)
