"""NumPy's array functions beyond the basics, on traced values, composed from primitives:
splitting, tiling, flipping and padding, gathers along an axis (take_along_axis) and
arg-reductions (argmax, argmin); norms are in `flux.ops.norms`. The basics they are written with
are in `flux.ops.numpy_api`, the contractions in `flux.ops.contractions`; `flux.ops.dispatch`
maps NumPy's functions to all of them."""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from flux.errors import FluxValueError, ShapeError
from flux.ir import primitives as P
from flux.ir.graph import Literal
from flux.ir.trace import TraceError, Tracer
from flux.ops.contractions import _one_axis
from flux.ops.numpy_api import (
    _as_tracer_or_array, _axes, _no_out, _to_dtype, add,
    broadcast_to, concatenate, equal, getitem, greater_equal, less, lift,
    logical_and, logical_not, logical_or, max, min, multiply, negative,
    not_equal, ravel, reshape, subtract, where)


# -- splitting, tiling, flipping, padding -------------------------------------------------------


def _split(name: str, ary, indices_or_sections, axis, equal: bool) -> list:
    x = _as_tracer_or_array(ary)
    axis = _axes(_one_axis(axis, name), x.ndim, name)[0]
    n = x.shape[axis]
    sections = lift(indices_or_sections)
    if isinstance(sections, Tracer):
        raise TraceError(f"np.{name}: indices_or_sections is a traced value; the pieces' "
                         f"sizes must be known while tracing (Python ints)")
    if isinstance(sections, numbers.Integral):
        sections = int(sections)
        if sections <= 0:
            raise FluxValueError(f"np.{name}: indices_or_sections={sections} must be a "
                                 f"positive number of sections")
        if equal and n % sections:
            raise FluxValueError(f"np.{name}: indices_or_sections={sections} does not divide "
                                 f"axis {axis} of size {n} into equal sections; use "
                                 f"np.array_split for unequal ones")
        each, extra = divmod(n, sections)
        bounds = np.cumsum([0] + [each + 1] * extra + [each] * (sections - extra)).tolist()
    else:
        points = np.asarray(sections)
        if points.ndim != 1 or (points.size and points.dtype.kind not in "iu"):
            raise FluxValueError(f"np.{name}: indices_or_sections must be an int or a "
                                 f"sequence of int positions, found {indices_or_sections!r}")
        bounds = [0] + points.astype(np.int64).tolist() + [n]
    before = (slice(None),) * axis
    return [getitem(x, before + (slice(start, stop),))
            for start, stop in zip(bounds[:-1], bounds[1:])]


def split(ary, indices_or_sections, axis=0):
    """np.split: equal sections (an int that must divide the axis) or pieces between
    positions (a sequence), as slices; a list of values."""
    return _split("split", ary, indices_or_sections, axis, equal=True)


def array_split(ary, indices_or_sections, axis=0):
    """np.array_split: like np.split, but n sections need not be equal (the first
    ``size % n`` are one longer)."""
    return _split("array_split", ary, indices_or_sections, axis, equal=False)


def _split_along(name: str, axis_of, min_ndim: int, doc: str):
    def split_along(ary, indices_or_sections):
        x = _as_tracer_or_array(ary)
        if x.ndim < min_ndim:
            raise ShapeError(f"np.{name} needs a value with at least {min_ndim} axes, found "
                             f"shape {x.shape}")
        return _split(name, x, indices_or_sections, axis_of(x.ndim), equal=True)
    split_along.__name__, split_along.__doc__ = name, doc
    return split_along


hsplit = _split_along("hsplit", lambda ndim: 1 if ndim > 1 else 0, 1,
                      "np.hsplit: np.split along axis 1 (axis 0 of a 1-d value).")
vsplit = _split_along("vsplit", lambda ndim: 0, 2, "np.vsplit: np.split along axis 0.")
dsplit = _split_along("dsplit", lambda ndim: 2, 3, "np.dsplit: np.split along axis 2.")


def _static_ints(value, what: str) -> tuple:
    value = lift(value)
    if isinstance(value, Tracer):
        raise TraceError(f"{what} is a traced value; it must be known while tracing "
                         f"(Python ints)")
    values = np.asarray(value)
    if values.ndim > 1 or (values.size and values.dtype.kind not in "iu"):
        raise FluxValueError(f"{what} must be an int or a sequence of ints, found {value!r}")
    return tuple(int(v) for v in values.reshape(-1))


def tile(A, reps):
    """np.tile: `A` repeated `reps` times along each axis (a broadcast and a reshape)."""
    x = _as_tracer_or_array(A)
    reps = _static_ints(reps, "np.tile: reps")
    if any(r < 0 for r in reps):
        raise FluxValueError(f"np.tile: reps must not be negative, found {reps}")
    d = builtins.max(len(reps), x.ndim)
    reps = (1,) * (d - len(reps)) + reps
    shape = (1,) * (d - x.ndim) + x.shape
    x = reshape(x, shape)
    if all(r == 1 for r in reps):
        return x
    spread = tuple(v for r, s in zip(reps, shape) for v in (r, s))
    x = broadcast_to(reshape(x, tuple(v for s in shape for v in (1, s))), spread)
    return reshape(x, tuple(r * s for r, s in zip(reps, shape)))


def flip(m, axis=None):
    """np.flip: the order of elements reversed along `axis` (None: every axis), as a slice
    with step -1."""
    x = _as_tracer_or_array(m)
    axes = _axes(axis, x.ndim, "flip")
    if not axes:
        return x
    return getitem(x, tuple(slice(None, None, -1) if i in axes else slice(None)
                            for i in range(x.ndim)))


def fliplr(m):
    """np.fliplr: flip along axis 1."""
    x = _as_tracer_or_array(m)
    if x.ndim < 2:
        raise ShapeError(f"np.fliplr needs a value with at least 2 axes, found shape {x.shape}")
    return flip(x, 1)


def flipud(m):
    """np.flipud: flip along axis 0."""
    x = _as_tracer_or_array(m)
    if x.ndim < 1:
        raise ShapeError("np.flipud needs a value with at least 1 axis, found a 0-d value")
    return flip(x, 0)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric", "wrap")
_PAD_OPTIONS = {"constant": {"constant_values"}, "reflect": {"reflect_type"},
                "symmetric": {"reflect_type"}}


def pad(array, pad_width, mode="constant", **kwargs):
    """np.pad for modes "constant" (``constant_values``), "edge", "reflect", "symmetric" and
    "wrap": per axis, the original concatenated with constant blocks or with slices of
    itself (the positions NumPy would read, as a few strided slices)."""
    x = _as_tracer_or_array(array)
    if not isinstance(mode, str) or mode not in _PAD_MODES:
        raise FluxValueError(f"np.pad: mode={mode!r} has no translation; the supported modes "
                             f"are {', '.join(_PAD_MODES)}")
    unknown = sorted(set(kwargs) - _PAD_OPTIONS.get(mode, set()))
    if unknown:
        raise FluxValueError(f"np.pad(mode={mode!r}) takes no argument {', '.join(unknown)}")
    if kwargs.get("reflect_type", "even") != "even":
        raise FluxValueError(f"np.pad: reflect_type={kwargs['reflect_type']!r} has no "
                             f"translation; only 'even'")
    widths = _pad_pairs(pad_width, x.ndim, "pad_width", integers=True)
    if mode == "constant":
        fill = lift(kwargs.get("constant_values", 0))
        if isinstance(fill, Tracer):
            if fill.ndim:
                raise TraceError("np.pad: a traced constant_values must be 0-d (one value)")
            fills = [(fill, fill)] * x.ndim
        else:
            fills = _pad_pairs(fill, x.ndim, "constant_values", integers=False)
    for axis, (before, after) in enumerate(widths):
        if before or after:
            if mode == "constant":
                x = _pad_constant(x, axis, before, after, fills[axis])
            else:
                x = _pad_from_itself(x, axis, before, after, mode)
    return x


def _pad_pairs(value, ndim: int, name: str, integers: bool) -> list:
    """`pad_width` or `constant_values` in any of NumPy's forms as one (before, after) pair
    per axis."""
    if isinstance(lift(value), Tracer):
        raise TraceError(f"np.pad: {name} is a traced value; it must be known while tracing")
    values = np.asarray(value)
    if integers and values.size and values.dtype.kind not in "iu":
        raise FluxValueError(f"np.pad: {name} must hold ints, found {value!r}")
    if values.dtype.kind not in "biuf":
        raise FluxValueError(f"np.pad: {name} must hold numbers, found {value!r}")
    if values.size == 1:
        values = values.reshape(1, 1)
    elif values.size == 2 and values.shape != (2, 1):
        values = values.reshape(1, 2)
    try:
        pairs = np.broadcast_to(values, (ndim, 2))
    except ValueError:
        raise FluxValueError(f"np.pad: {name} of shape {values.shape} does not fit a value "
                             f"with {ndim} axes (give one number, a (before, after) pair or "
                             f"one pair per axis)") from None
    if integers:
        if pairs.size and pairs.min() < 0:
            raise FluxValueError(f"np.pad: {name} must not be negative, found {value!r}")
        return [(int(b), int(a)) for b, a in pairs]
    return [(b, a) for b, a in pairs]


def _pad_constant(x, axis: int, before: int, after: int, fills):
    def block(width, value):
        shape = x.shape[:axis] + (width,) + x.shape[axis + 1:]
        if isinstance(value, Tracer):
            return broadcast_to(_to_dtype(value, x.dtype), shape)
        return P.broadcast_to_p(Literal(value, x.dtype), shape=shape)
    pieces = ([block(before, fills[0])] if before else []) + [x] \
        + ([block(after, fills[1])] if after else [])
    return concatenate(pieces, axis=axis)


def _pad_from_itself(x, axis: int, before: int, after: int, mode: str):
    n = x.shape[axis]
    if n == 0:
        raise ShapeError(f"np.pad(mode={mode!r}) cannot extend axis {axis} of size 0 "
                         f"(shape {x.shape})")
    positions = np.pad(np.arange(n), (before, after), mode=mode)
    at = (slice(None),) * axis
    pieces = []
    for first, count, step in _runs(positions):
        if step == 0:
            piece = getitem(x, at + (slice(first, first + 1),))
            pieces.append(broadcast_to(piece, x.shape[:axis] + (count,) + x.shape[axis + 1:]))
        elif step == 1:
            pieces.append(getitem(x, at + (slice(first, first + count),)))
        else:
            stop = first - count
            pieces.append(getitem(x, at + (slice(first, stop if stop >= 0 else None, -1),)))
    return concatenate(pieces, axis=axis)


def _runs(positions) -> list:
    """`positions` as runs ``(first, count, step)`` with step -1, 0 or 1 (a slice each)."""
    runs, i = [], 0
    while i < len(positions):
        j, step = i + 1, 1
        if j < len(positions) and positions[j] - positions[i] in (-1, 0, 1):
            step = int(positions[j] - positions[i])
            while j < len(positions) and positions[j] - positions[j - 1] == step:
                j += 1
        runs.append((int(positions[i]), j - i, step))
        i = j
    return runs


# -- gathers, arg-reductions -------------------------------------------------------------


def take_along_axis(arr, indices, axis=-1):
    """np.take_along_axis: ``arr`` read at `indices` along `axis` (other axes broadcast), as
    one gather from the flattened value at computed flat positions; negative indices count
    from the end. Traced indices are checked when the graph runs."""
    x = _as_tracer_or_array(arr)
    idx = lift(indices)
    traced = isinstance(idx, Tracer)
    if not traced:
        idx = np.asarray(idx.value if isinstance(idx, Literal) else idx)
    if idx.dtype.kind not in "iu":
        raise FluxValueError(f"np.take_along_axis: indices must be integers, found {idx.dtype}")
    if axis is None:
        if idx.ndim != 1:
            raise ShapeError(f"np.take_along_axis: with axis=None the indices must be 1-d, "
                             f"found shape {idx.shape}")
        x, axis = ravel(x), 0
    if idx.ndim != x.ndim:
        raise ShapeError(f"np.take_along_axis: indices of shape {idx.shape} and a value of "
                         f"shape {x.shape} must have the same number of axes")
    axis = _axes(_one_axis(axis, "take_along_axis"), x.ndim, "take_along_axis")[0]
    P.broadcast_shapes("np.take_along_axis", x.shape[:axis] + (1,) + x.shape[axis + 1:],
                       idx.shape[:axis] + (1,) + idx.shape[axis + 1:])
    n = x.shape[axis]
    strides = [int(np.prod(x.shape[d + 1:], dtype=np.int64)) for d in range(x.ndim)]
    offsets = np.zeros((1,) * x.ndim, np.int64)
    for d in range(x.ndim):
        if d != axis and x.shape[d] != 1:
            shape = tuple(x.shape[d] if k == d else 1 for k in range(x.ndim))
            offsets = offsets + (np.arange(x.shape[d]) * strides[d]).reshape(shape)
    if not traced:
        idx = idx.astype(np.int64)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise FluxValueError(f"np.take_along_axis: index {int(idx[bad].flat[0])} is out "
                                 f"of range for axis {axis} of size {n}")
        flat = np.where(idx < 0, idx + n, idx) * strides[axis] + offsets
        return getitem(ravel(x), (flat,))
    idx = _to_dtype(idx, np.int64)
    inside = logical_and(greater_equal(idx, -n), less(idx, n))
    idx = where(less(idx, 0), add(idx, n), idx)
    flat = add(multiply(idx, strides[axis]) if strides[axis] != 1 else idx, offsets)
    flat = where(inside, flat, x.size)     # out of range on its axis: out of range for take
    return P.take_p(ravel(x), flat, axis=0)


def _arg_best(x, axis, keepdims: bool, name: str):
    """The first position of the maximum of `x` along `axis` (NaNs count as maxima, as in
    NumPy), as int64: where(x == max, position, n), then the smallest of those."""
    ndim = x.ndim
    if axis is None:
        x, axis = ravel(x), 0
    else:
        axis = _axes(_one_axis(axis, name), x.ndim, name)[0]
    n = x.shape[axis]
    if n == 0:
        raise ShapeError(f"np.{name} of an empty axis (shape {x.shape}) has no answer")
    if x.dtype.kind == "b":
        x = _to_dtype(x, np.int8)
    hit = equal(x, max(x, axis=axis, keepdims=True))
    if x.dtype.kind in "fc":
        hit = logical_or(hit, not_equal(x, x))
    positions = np.arange(n, dtype=np.int64).reshape(
        tuple(n if d == axis else 1 for d in range(x.ndim)))
    first = min(where(hit, positions, n), axis=axis, keepdims=keepdims)
    if keepdims and x.ndim != ndim:
        first = reshape(first, (1,) * ndim)
    return first


def argmax(a, axis=None, out=None, *, keepdims=False):
    """np.argmax: the position of the first maximum along `axis` (None: of the flattened
    value), int64; it has no gradient."""
    _no_out(out, "argmax")
    return _arg_best(_as_tracer_or_array(a), axis, keepdims, "argmax")


def argmin(a, axis=None, out=None, *, keepdims=False):
    """np.argmin: the position of the first minimum along `axis` (None: of the flattened
    value), int64; it has no gradient."""
    _no_out(out, "argmin")
    x = _as_tracer_or_array(a)
    if x.dtype.kind == "b":
        x = logical_not(x)
    elif x.dtype.kind == "u":
        x = subtract(np.iinfo(x.dtype).max, x)      # order reversed without wrapping around
    else:
        x = negative(x)
    return _arg_best(x, axis, keepdims, "argmin")
