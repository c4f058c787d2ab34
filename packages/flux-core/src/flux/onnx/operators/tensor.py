"""ONNX's operators that make, join and cut tensors: Constant, ConstantOfShape, EyeLike,
Range, the windows (Hann, Hamming, Blackman), Concat, Split, Slice, Tile, Pad, CenterCropPad
(the indexing ones are in `flux.onnx.operators.indexing`).

Sizes, positions and counts (Slice's starts, Pad's pads, Range's bounds ...) must be known
while tracing.
"""
from __future__ import annotations

import numpy as np

from flux.onnx.files import free_memory, tensor_dtype
from flux.onnx.operators.arguments import attr_or_input, axis_of, ints, traced
from flux.onnx.operators.registry import operator, static

# -- making tensors -----------------------------------------------------------------------------

_CONSTANT_ATTRIBUTES = {"value_float": np.float32, "value_floats": np.float32,
                        "value_int": np.int64, "value_ints": np.int64}


@operator("Constant")
def constant(node):
    """The tensor of the `value` attribute (or value_float(s), value_int(s))."""
    if node.has("value"):
        return np.asarray(node.attr("value"))
    for name, dtype in _CONSTANT_ATTRIBUTES.items():
        if node.has(name):
            return np.asarray(node.attr(name), dtype=dtype)
    raise node.error("has no value flux can read (sparse and string constants are not "
                     "imported)")


def _check_size(node, shape, dtype) -> None:
    nbytes = int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
    if nbytes > free_memory():
        raise node.error(f"would make a tensor of shape {tuple(shape)} ({nbytes:,} bytes), "
                         f"more than the free memory")


@operator("ConstantOfShape", since=9)
def constant_of_shape(node, shape):
    """A tensor of shape `shape` filled with `value` (one element; default float32 0),
    made as a broadcast (it costs no memory until it is used)."""
    dims = ints(node, shape, "shape")
    value = node.attr("value")
    fill = np.zeros((), np.float32) if value is None else np.asarray(value).reshape(-1)[:1]
    fill = fill.reshape(())
    if any(d < 0 for d in dims):
        raise node.error(f"shape {dims} has a negative size")
    _check_size(node, dims, fill.dtype)
    return np.broadcast_to(fill, tuple(dims))


@operator("EyeLike", since=9)
def eye_like(node, x):
    """Ones on the k-th diagonal of a matrix of x's shape, in `dtype` (default x's)."""
    n, m = x.shape
    dtype = x.dtype if node.attr("dtype") is None else np.dtype(
        _onnx_dtype(node, node.attr("dtype")))
    return np.eye(n, m, k=node.attr("k", 0), dtype=dtype)


def _onnx_dtype(node, elem_type):
    dtype = tensor_dtype(elem_type)
    if dtype is None:
        raise node.error(f"ONNX type {elem_type} is not one flux computes with")
    return dtype


@operator("Range", since=11)
def range_(node, start, limit, delta):
    """start, start + delta, ... up to (not including) limit: max(⌈(limit − start)/delta⌉, 0)
    values, in start's dtype."""
    start, limit, delta = (static(node, v, what).reshape(()) for v, what in
                           ((start, "start"), (limit, "limit"), (delta, "delta")))
    if delta == 0:
        raise node.error("delta is 0")
    n = max(int(np.ceil((float(limit) - float(start)) / float(delta))), 0)
    _check_size(node, (n,), start.dtype)
    if start.dtype.kind in "iu":
        return (start + np.arange(n, dtype=start.dtype) * delta).astype(start.dtype)
    return (start + np.arange(n).astype(start.dtype) * delta).astype(start.dtype)


_WINDOWS = {   # w[n] = Σ_j a_j cos(2π j n / N), N = size (periodic) or size - 1
    "HannWindow": (0.5, -0.5), "HammingWindow": (25 / 46, -21 / 46),
    "BlackmanWindow": (0.42, -0.5, 0.08),
}


@operator("HannWindow", "HammingWindow", "BlackmanWindow", since=17)
def window(node, size):
    """A window of `size` values: w[n] = Σⱼ aⱼ cos(2π j n / N) with N = size when
    periodic=1 (the default), size − 1 otherwise; Hann a = (½, −½), Hamming (25/46, −21/46),
    Blackman (0.42, −½, 0.08); in `output_datatype` (default float32)."""
    n = int(static(node, size, "size").reshape(()))
    period = n if node.attr("periodic", 1) else n - 1
    steps = np.arange(n, dtype=np.float64) * (2 * np.pi / period) if period else np.zeros(n)
    w = sum(a * np.cos(j * steps) for j, a in enumerate(_WINDOWS[node.op_type]))
    return np.asarray(w).astype(_onnx_dtype(node, node.attr("output_datatype", 1)))


# -- joining and cutting ------------------------------------------------------------------------


@operator("Concat")
def concat(node, *xs):
    """The inputs joined along `axis`."""
    xs = [x for x in xs if x is not None]
    axis = axis_of(node, node.attr("axis", 0), len(xs[0].shape))
    if len(xs) == 1:
        return xs[0]
    return np.concatenate(xs, axis=axis)


@operator("Split")
def split(node, x, sizes=None):
    """x cut along `axis` into pieces of the given sizes (attribute before opset 13, input
    from it), or into as many equal pieces as the node has outputs (`num_outputs`, opset 18:
    pieces of ⌈n/k⌉, the last one smaller)."""
    ndim = len(x.shape)
    axis = axis_of(node, node.attr("axis", 0), ndim)
    n = x.shape[axis]
    given = attr_or_input(node, sizes, "split", since=13)
    if given is None and node.opset < 13 and sizes is not None:
        given = ints(node, sizes, "split")
    count = node.attr("num_outputs") or len(node.outputs)
    if given is None:
        if node.has("num_outputs"):
            each = -(-n // count)
            given = [each] * (n // each) + ([n % each] if n % each else [])
        elif n % count:
            raise node.error(f"cannot split axis {axis} of size {n} into {count} equal pieces")
        else:
            given = [n // count] * count
    if sum(given) != n or any(s < 0 for s in given):
        raise node.error(f"split sizes {given} do not add up to the axis' size {n}")
    bounds = np.cumsum([0] + given)
    before = (slice(None),) * axis
    return tuple(x[before + (slice(int(a), int(b)),)] for a, b in zip(bounds[:-1], bounds[1:]))


@operator("Slice")
def slice_attributes(node, x):
    """Opsets 1-9: starts, ends and axes as attributes."""
    return _slice(node, x, node.attr("starts"), node.attr("ends"), node.attr("axes"), None)


@operator("Slice", since=10)
def slice_(node, x, starts, ends, axes=None, steps=None):
    """x[starts:ends:steps] along `axes` (default: the first ones); ends beyond the axis are
    clamped, negative positions count from the end, negative steps walk backwards."""
    return _slice(node, x, ints(node, starts, "starts"), ints(node, ends, "ends"),
                  None if axes is None else ints(node, axes, "axes"),
                  None if steps is None else ints(node, steps, "steps"))


def _slice(node, x, starts, ends, axes, steps):
    ndim = len(x.shape)
    starts, ends = list(starts), list(ends)
    axes = list(range(len(starts))) if axes is None else [axis_of(node, a, ndim) for a in axes]
    steps = [1] * len(starts) if steps is None else list(steps)
    index = [slice(None)] * ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        dim = x.shape[axis]
        if step == 0:
            raise node.error("a step is 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
            index[axis] = slice(start, max(end, start), step)
        else:
            start, end = min(max(start, -1), dim - 1), min(max(end, -1), dim - 1)
            index[axis] = slice(start, None if end < 0 else end, step) if start >= 0 \
                else slice(0, 0)
    if all(i == slice(None) for i in index):
        return x
    return x[tuple(index)]


@operator("Tile", since=6)
def tile(node, x, repeats):
    """x repeated `repeats[i]` times along each axis i."""
    return np.tile(x, ints(node, repeats, "repeats"))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@operator("Pad")
def pad_attributes(node, x):
    """Opsets 1-10: pads (or paddings) and value as attributes."""
    pads = node.attr("pads", node.attr("paddings"))
    value = np.asarray(node.attr("value", 0.0), x.dtype)
    return _pad(node, x, list(pads), value, None)


@operator("Pad", since=11)
def pad(node, x, pads, value=None, axes=None):
    """x padded along `axes` (default all) by pads = [begin₁ … beginₖ, end₁ … endₖ] in
    `mode` (constant with `value`, reflect, edge, wrap); negative pads crop."""
    return _pad(node, x, ints(node, pads, "pads"), value,
                None if axes is None else ints(node, axes, "axes"))


def _pad(node, x, pads: list, value, axes):
    ndim = len(x.shape)
    axes = list(range(ndim)) if axes is None else [axis_of(node, a, ndim) for a in axes]
    if len(pads) != 2 * len(axes):
        raise node.error(f"pads {pads} must have two values for each of {len(axes)} axes")
    mode = node.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise node.error(f"mode {mode!r} is not one of {', '.join(_PAD_MODES)}")
    widths = [[0, 0] for _ in range(ndim)]
    crop = [slice(None)] * ndim
    for k, axis in enumerate(axes):
        before, after = pads[k], pads[k + len(axes)]
        crop[axis] = slice(-before if before < 0 else 0,
                           x.shape[axis] + after if after < 0 else x.shape[axis])
        widths[axis] = [max(before, 0), max(after, 0)]
    if any(s != slice(None) for s in crop):
        x = x[tuple(crop)]
    if not any(b or a for b, a in widths):
        return x
    if mode != "constant":
        return np.pad(x, widths, mode=_PAD_MODES[mode])
    fill = 0 if value is None else value
    if not traced(fill):
        fill = np.asarray(fill, x.dtype).reshape(-1)[0] if np.size(fill) else x.dtype.type(0)
    else:
        fill = np.reshape(fill, ())
    return np.pad(x, widths, mode="constant", constant_values=fill)


@operator("CenterCropPad", since=18)
def center_crop_pad(node, x, shape):
    """x cropped or zero-padded to `shape` along `axes` (default all), centred: the extra
    (or missing) elements split as ⌊d/2⌋ before and the rest after."""
    ndim = len(x.shape)
    target = ints(node, shape, "shape")
    axes = node.attr("axes")
    axes = list(range(ndim)) if axes is None else [axis_of(node, a, ndim) for a in axes]
    crop, widths = [slice(None)] * ndim, [[0, 0] for _ in range(ndim)]
    for axis, size in zip(axes, target):
        dim = x.shape[axis]
        if size < dim:
            start = (dim - size) // 2
            crop[axis] = slice(start, start + size)
        elif size > dim:
            before = (size - dim) // 2
            widths[axis] = [before, size - dim - before]
    if any(c != slice(None) for c in crop):
        x = x[tuple(crop)]
    if any(b or a for b, a in widths):
        x = np.pad(x, widths, mode="constant", constant_values=x.dtype.type(0))
    return x
