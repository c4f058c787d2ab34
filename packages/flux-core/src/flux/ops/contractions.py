"""NumPy's contractions on traced values: einsum (parsed and contracted pairwise by
`flux.ops.einsum`), tensordot, outer and cumsum, each composed from matmul, transposes,
reshapes and sums."""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from flux.errors import FluxTypeError, FluxValueError, ShapeError
from flux.ops.einsum import LETTERS, contract, subscripts_of
from flux.ops.numpy_api import (
    _as_tracer_or_array, _as_value, _axes, _no_out, _to_dtype, expand_dims, matmul, moveaxis,
    multiply, promote, ravel, reshape, sum, where)


# -- contractions -------------------------------------------------------------------------------


def einsum(*operands, out=None, dtype=None, order="K", casting="safe", optimize=False):
    """np.einsum: the Einstein summation of the subscripts over the operands (both calling
    forms, implicit and explicit output, '...', diagonals), two operands at a time left to
    right, each pair one transpose/reshape/matmul (`flux.ops.einsum`); ``optimize=`` is
    accepted and ignored."""
    _no_out(out, "einsum")
    subscripts, operands = subscripts_of(operands)
    values = [_as_value(v) for v in promote(*(_as_tracer_or_array(x) for x in operands))]
    if dtype is not None:
        dtype = np.dtype(dtype)
        for v in values:
            if not np.can_cast(v.dtype, dtype, casting):
                raise FluxTypeError(f"np.einsum: operands of dtype {v.dtype} cannot become "
                                    f"dtype={dtype} with casting={casting!r} (NumPy's rule); "
                                    f"pass casting='same_kind' or 'unsafe'")
        values = [_to_dtype(v, dtype) for v in values]
    return contract(subscripts, values)


def tensordot(a, b, axes=2):
    """np.tensordot: the sum of products of `a` and `b` over `axes` (an int n: the last n axes
    of a with the first n of b; or a pair of axis sequences), as one einsum contraction (one
    matmul)."""
    a, b = (_as_value(v) for v in promote(_as_tracer_or_array(a), _as_tracer_or_array(b)))
    if isinstance(axes, numbers.Integral):
        n = int(axes)
        if not 0 <= n <= builtins.min(a.ndim, b.ndim):
            raise ShapeError(f"np.tensordot: axes={n} does not fit shapes {a.shape} and "
                             f"{b.shape} (it must be in [0, the smaller rank])")
        axes_a, axes_b = list(range(a.ndim - n, a.ndim)), list(range(n))
    else:
        try:
            axes_a, axes_b = axes
        except (TypeError, ValueError):
            raise FluxValueError(f"np.tensordot: axes must be an int or a pair of axis "
                                 f"sequences, found {axes!r}") from None
        axes_a, axes_b = _axis_list(axes_a, a, "a"), _axis_list(axes_b, b, "b")
        if len(axes_a) != len(axes_b):
            raise ShapeError(f"np.tensordot: axes {axes!r} pair {len(axes_a)} axes of a with "
                             f"{len(axes_b)} of b")
    for i, j in zip(axes_a, axes_b):
        if a.shape[i] != b.shape[j]:
            raise ShapeError(f"np.tensordot: axis {i} of a (shape {a.shape}) has size "
                             f"{a.shape[i]} but axis {j} of b (shape {b.shape}) has size "
                             f"{b.shape[j]}")
    if a.ndim + b.ndim > len(LETTERS):
        raise ShapeError(f"np.tensordot: operands of {a.ndim} and {b.ndim} axes have "
                         f"more than {len(LETTERS)} axes together")
    names_a = list(LETTERS[:a.ndim])
    names_b = list(LETTERS[a.ndim:a.ndim + b.ndim])
    for i, j in zip(axes_a, axes_b):
        names_b[j] = names_a[i]
    out = [names_a[i] for i in range(a.ndim) if i not in axes_a] \
        + [names_b[j] for j in range(b.ndim) if j not in axes_b]
    return contract(f"{''.join(names_a)},{''.join(names_b)}->{''.join(out)}", [a, b])


def _axis_list(axes, x, name: str) -> list:
    """Axis numbers (an int or a sequence of them) of `x`, made non-negative and checked."""
    axes = [axes] if isinstance(axes, numbers.Integral) else list(axes)
    out = []
    for a in axes:
        if not isinstance(a, numbers.Integral):
            raise FluxValueError(f"np.tensordot: axes of {name} must be ints, found {a!r}")
        if not -x.ndim <= a < x.ndim:
            raise ShapeError(f"np.tensordot: axis {a} is out of range for {name} of shape "
                             f"{x.shape}")
        out.append(int(a) % x.ndim)
    if len(set(out)) < len(out):
        raise FluxValueError(f"np.tensordot: axes of {name} repeat an axis: {axes}")
    return out


def outer(a, b, out=None):
    """np.outer: ``a.ravel()[:, None] * b.ravel()[None, :]``."""
    _no_out(out, "outer")
    return multiply(reshape(ravel(a), (-1, 1)), reshape(ravel(b), (1, -1)))


def cumsum(a, axis=None, dtype=None, out=None):
    """np.cumsum: running sums along `axis` (None: of the flattened value), as a product with
    a triangular matrix of ones (n × n for an axis of length n: O(n²) time and memory along
    the axis, fine for the lengths models use). Small integers and bools sum as int64, with
    a masked sum instead of the product (exact, and integer matmuls are not on every
    backend)."""
    _no_out(out, "cumsum")
    x = _as_tracer_or_array(a)
    if axis is None:
        x, axis = ravel(x), 0
    axis = _axes(_one_axis(axis, "cumsum"), x.ndim, "cumsum")[0]
    if dtype is not None:
        x = _to_dtype(x, np.dtype(dtype))
    elif x.dtype.kind in "biu" and x.dtype.itemsize < 8:
        x = _to_dtype(x, np.int64 if x.dtype.kind != "u" else np.uint64)
    n = x.shape[axis]
    upper = np.triu(np.ones((n, n), np.bool_))     # upper[i, j]: element i counts in sum j
    x = moveaxis(x, axis, -1)
    if x.dtype.kind in "fc":
        sums = matmul(x, upper.astype(x.dtype))
    else:
        sums = sum(where(upper, expand_dims(x, -1), 0), axis=-2, dtype=x.dtype)
    return moveaxis(sums, -1, axis)


def _one_axis(axis, name: str):
    if not isinstance(axis, numbers.Integral):
        raise FluxValueError(f"np.{name}: axis must be an int (or None), found {axis!r}")
    return int(axis)
