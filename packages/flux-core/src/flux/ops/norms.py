"""np.linalg.norm on traced values: vector norms along one axis and matrix norms over two,
composed from primitives (sums, maxima and powers of absolute values)."""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxValueError
from flux.ir.trace import TraceError, Tracer
from flux.ops.numpy_api import (_as_tracer_or_array, _axes, _floating, _to_dtype, absolute,
                                lift, max, min, multiply, not_equal, power, reshape, sqrt,
                                sum)

__all__ = ["norm"]


def norm(x, ord=None, axis=None, keepdims=False):
    """np.linalg.norm: vector norms (ord None/2, 1, inf, -inf, 0, other p) along one axis, and
    matrix norms ('fro'/None, 1, -1, inf, -inf) over two; integers are converted to float64.
    The spectral and nuclear norms (2, -2, 'nuc') need singular values: not translated."""
    x = _floating(_as_tracer_or_array(x))
    ord = lift(ord)
    if isinstance(ord, Tracer):
        raise TraceError("np.linalg.norm: ord is a traced value; it must be known while tracing")
    if axis is None:
        if ord is None or (x.ndim == 2 and ord in ("f", "fro")) or (x.ndim == 1 and ord == 2):
            return sqrt(sum(multiply(x, x), keepdims=keepdims))
        if x.ndim not in (1, 2):
            raise FluxValueError(f"np.linalg.norm: ord={ord!r} with axis=None needs a 1-d or "
                                 f"2-d value, found shape {x.shape}")
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    if not all(isinstance(a, numbers.Integral) for a in axes):
        raise FluxValueError(f"np.linalg.norm: axis must be an int or a tuple of ints, found "
                             f"{axis!r}")
    axes = tuple(_axes(a, x.ndim, "np.linalg.norm")[0] for a in axes)
    if len(set(axes)) < len(axes):
        raise FluxValueError(f"np.linalg.norm: axis={axis!r} repeats an axis")
    if len(axes) == 1:
        return _vector_norm(x, ord, axes[0], keepdims)
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    raise FluxValueError(f"np.linalg.norm: axis={axis!r}: a norm is taken over one axis "
                         f"(vectors) or two (matrices)")


def _vector_norm(x, ord, axis: int, keepdims: bool):
    if ord is None or (_is_number(ord) and ord == 2):
        return sqrt(sum(multiply(x, x), axis=axis, keepdims=keepdims))
    if not _is_number(ord):
        raise FluxValueError(f"np.linalg.norm: ord={ord!r} is not a norm of vectors")
    if ord == np.inf:
        return max(absolute(x), axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return min(absolute(x), axis=axis, keepdims=keepdims)
    if ord == 0:
        return sum(_to_dtype(not_equal(x, 0), x.dtype), axis=axis, keepdims=keepdims)
    if ord == 1:
        return sum(absolute(x), axis=axis, keepdims=keepdims)
    p = float(ord)
    return power(sum(power(absolute(x), p), axis=axis, keepdims=keepdims), 1.0 / p)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _matrix_norm(x, ord, axes: tuple, keepdims: bool):
    if ord is None or ord in ("f", "fro"):
        return sqrt(sum(multiply(x, x), axis=axes, keepdims=keepdims))
    if ord in (2, -2, "nuc"):
        raise TraceError(f"np.linalg.norm(ord={ord!r}) of matrices needs singular values (an "
                         f"SVD), which no primitive computes; use 'fro', 1, -1, inf or -inf")
    if not _is_number(ord) or ord not in (1, -1, np.inf, -np.inf):
        raise FluxValueError(f"np.linalg.norm: ord={ord!r} is not a norm of matrices")
    row, col = axes
    if ord in (np.inf, -np.inf):           # the largest row sum: sum over columns first
        row, col = col, row
    sums = sum(absolute(x), axis=row)
    pick = max if ord > 0 else min
    out = pick(sums, axis=col - 1 if col > row else col)
    if keepdims:
        out = reshape(out, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return out
