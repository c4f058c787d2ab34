"""ONNX's pooling operators on flux's window primitives: MaxPool (with its ``Indices``),
AveragePool, LpPool and their global forms, with the padding, ``ceil_mode`` and dilation
rules of `nn`."""
from __future__ import annotations

import itertools

import numpy as np

from flux.onnx.operators.layout import channels_first, channels_last
from flux.onnx.operators.nn import (ceil_padding, kernel_shape, lowest, results,
                                    window_attrs, window_max, window_slices, window_sum)
from flux.onnx.operators.registry import operator
from flux.ops import numpy_api as api

__all__ = []


def _pool_setup(node, x):
    x = api._as_tracer_or_array(x)
    window = kernel_shape(node)
    strides, dilations, padding = window_attrs(node, x.shape, window)
    extra = ceil_padding(node, x.shape[2:], window, strides, dilations, padding)
    return x, window, strides, dilations, padding, extra


def _grown(padding, extra):
    return tuple((lo, hi + e) for (lo, hi), e in zip(padding, extra))


@operator("MaxPool")
def import_max_pool(node, x):
    """The maximum of each window (padding never wins); the ``Indices`` output, where asked
    for, is each maximum's position in the flattened input (row-major, or with
    ``storage_order=1`` the spatial axes column-major), the first maximum of a window."""
    x, window, strides, dilations, padding, extra = _pool_setup(node, x)
    padding = _grown(padding, extra)
    xl = channels_last(x)
    if len(node.outputs) < 2 or not node.outputs[1]:
        return results(node, channels_first(window_max(xl, window, strides, dilations,
                                                       padding)), None)
    slices, out = window_slices(xl, window, strides, dilations, padding, lowest(x.dtype))
    stacked = np.stack(slices, axis=-1)                  # (N, *out, C, K)
    best = np.argmax(stacked, axis=-1, keepdims=True)    # (N, *out, C, 1)
    y = np.take_along_axis(stacked, best, axis=-1)[..., 0]
    where = _flat_positions(x.shape, out, window, strides, dilations, padding,
                            node.attr("storage_order", 0))
    where = np.broadcast_to(where, tuple(best.shape[:-1]) + (len(slices),))
    indices = np.take_along_axis(where, best, axis=-1)[..., 0]
    return results(node, channels_first(y), channels_first(indices))


def _flat_positions(shape, out, window, strides, dilations, padding, storage_order):
    """For each output position and window offset, the input element's index in the
    flattened input: an int64 array ``(N, *out, C, K)`` (known when the model is traced)."""
    n_batch, channels, spatial = shape[0], shape[1], tuple(shape[2:])
    if storage_order:
        steps = np.cumprod((1,) + spatial[:-1])
    else:
        steps = np.cumprod((1,) + spatial[::-1][:-1])[::-1]
    grids = np.meshgrid(*(np.arange(o) for o in out), indexing="ij")
    offsets = np.array(list(itertools.product(*(range(k) for k in window))))   # (K, n)
    flat = np.zeros(tuple(out) + (len(offsets),), np.int64)
    for axis, (grid, s, d, (lo, _), step) in enumerate(
            zip(grids, strides, dilations, padding, steps)):
        flat += (grid[..., None] * s - lo + offsets[:, axis] * d) * step
    plane = int(np.prod(spatial, dtype=np.int64))
    base = (np.arange(n_batch)[:, None] * channels + np.arange(channels)) * plane   # (N, C)
    base = base.reshape((n_batch,) + (1,) * len(out) + (channels, 1))
    return flat[None, ..., None, :] + base


def _divisor(node, x, window, strides, dilations, padding, extra):
    """How many elements each window averages: those of the input, or with
    `count_include_pad` also the padding given by pads or auto_pad (never ceil_mode's)."""
    spatial = tuple(x.shape[2:])
    if node.attr("count_include_pad", 0):
        ones = np.ones((1,) + tuple(s + lo + hi for s, (lo, hi) in zip(spatial, padding))
                       + (1,), x.dtype)
        pads = tuple((0, e) for e in extra)
    else:
        ones = np.ones((1,) + spatial + (1,), x.dtype)
        pads = _grown(padding, extra)
    return window_sum(ones, window, strides, dilations, pads)


@operator("AveragePool")
def import_average_pool(node, x):
    """The mean of each window; the count excludes the padding unless `count_include_pad`
    (and the padding `ceil_mode` adds always)."""
    x, window, strides, dilations, padding, extra = _pool_setup(node, x)
    if np.dtype(x.dtype).kind != "f":
        raise node.error(f"AveragePool takes floating-point inputs, found {x.dtype}")
    total = window_sum(channels_last(x), window, strides, dilations, _grown(padding, extra))
    count = _divisor(node, x, window, strides, dilations, padding, extra)
    if np.all(count == count.flat[0]):
        return channels_first(total * (1 / float(count.flat[0])))
    return channels_first(total * (1 / count).astype(x.dtype))


@operator("LpPool")
def import_lp_pool(node, x):
    """``(Σ_window |x|ᵖ)^(1/p)`` (`p` defaults to 2; padding counts as 0)."""
    x, window, strides, dilations, padding, extra = _pool_setup(node, x)
    p = node.attr("p", 2)
    powered = x * x if p == 2 else np.abs(x) ** float(p)
    total = window_sum(channels_last(powered), window, strides, dilations,
                       _grown(padding, extra))
    return channels_first(np.sqrt(total) if p == 2 else total ** (1 / float(p)))


def _spatial_axes(node, x):
    x = api._as_tracer_or_array(x)
    if x.ndim < 3:
        raise node.error(f"takes inputs (N, C, spatial axes…), found shape {tuple(x.shape)}")
    return x, tuple(range(2, x.ndim))


@operator("GlobalAveragePool")
def import_global_average_pool(node, x):
    """The mean over every spatial axis (kept, of size 1)."""
    x, axes = _spatial_axes(node, x)
    return np.mean(x, axis=axes, keepdims=True)


@operator("GlobalMaxPool")
def import_global_max_pool(node, x):
    """The maximum over every spatial axis (kept, of size 1)."""
    x, axes = _spatial_axes(node, x)
    return np.max(x, axis=axes, keepdims=True)


@operator("GlobalLpPool")
def import_global_lp_pool(node, x):
    """``(Σ_spatial |x|ᵖ)^(1/p)`` over every spatial axis (kept, of size 1)."""
    x, axes = _spatial_axes(node, x)
    p = node.attr("p", 2)
    if p == 2:
        return np.sqrt(np.sum(x * x, axis=axes, keepdims=True))
    return np.sum(np.abs(x) ** float(p), axis=axes, keepdims=True) ** (1 / float(p))
