"""ONNX's layer operators, imported onto flux's window primitives: Gemm, Conv, ConvTranspose
(the pools, built on the window helpers here, are in `pools`).

ONNX is channels first: images ``(N, C, *spatial)``, filters ``(out, C / group, *window)``
(ConvTranspose's ``(C, out / group, *window)``). flux is channels last (``(N, *spatial, C)``,
filters ``(*window, C / groups, out)``), so each operator moves the channels last, runs
flux's primitive and moves them back; the two transposes are views.

Padding follows ONNX's ``pads`` (``[x1_begin, x2_begin, …, x1_end, x2_end]``) or
``auto_pad``: ``SAME_UPPER``/``SAME_LOWER`` pad ``max((⌈in/s⌉ − 1)·s + d·(k − 1) + 1 − in, 0)``
in all, the odd one after (UPPER) or before (LOWER); ``VALID`` pads nothing. A pool's
``ceil_mode`` rounds the output size up, as more padding after (a window starting in the
padding after the input is dropped); that padding never counts in an average. Pools with
``dilations`` other than 1 (flux's pooling primitives have none) and MaxPool's ``Indices``
output are written as one strided slice of the padded input per window offset.
"""
from __future__ import annotations

import itertools

import numpy as np

from flux.ir import primitives as P
from flux.onnx.operators.layout import channels_first, channels_last
from flux.onnx.operators.registry import known, operator
from flux.ops import numpy_api as api
from flux.ops.windows import conv

__all__ = ["results", "channels_last", "channels_first", "filters", "window_attrs", "ceil_padding",
           "kernel_shape", "lowest", "window_slices", "window_max", "window_sum"]


def results(node, *values):
    """The first of `values` for a node with one output, else as many as it has outputs
    (ONNX leaves out trailing optional outputs)."""
    if len(node.outputs) <= 1:
        return values[0]
    if len(node.outputs) > len(values):
        raise node.error(f"has {len(node.outputs)} outputs; the operator makes at most "
                         f"{len(values)}")
    return tuple(values[:len(node.outputs)])


# -- layout and window attributes ---------------------------------------------------------------


def filters(w):
    """ONNX filters ``(a, b, *window)`` as flux's ``(*window, b, a)``."""
    n = np.ndim(w) - 2
    return np.transpose(w, tuple(range(2, n + 2)) + (1, 0))


def _ints(node, name, n, default):
    values = node.attr(name, None)
    if values is None:
        return (default,) * n
    values = tuple(int(v) for v in values)
    if len(values) != n:
        raise node.error(f"{name} has {len(values)} entries, but the input has {n} spatial "
                         f"axes: expected {n}")
    return values


def window_attrs(node, x_shape, window):
    """``(strides, dilations, padding)`` of a node over an input of shape ``(N, C, *spatial)``
    (channels first) with `window`: padding as one ``(before, after)`` pair per axis."""
    n = len(window)
    if len(x_shape) != n + 2:
        raise node.error(f"a {n}-D window takes inputs (N, C, {n} spatial axes); found shape "
                         f"{tuple(x_shape)}")
    strides = _ints(node, "strides", n, 1)
    dilations = _ints(node, "dilations", n, 1)
    spatial = tuple(x_shape[2:])
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        padding = []
        for size, k, s, d in zip(spatial, window, strides, dilations):
            total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
            small, large = total // 2, total - total // 2
            padding.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return strides, dilations, tuple(padding)
    if auto_pad == "VALID":
        return strides, dilations, ((0, 0),) * n
    if auto_pad != "NOTSET":
        raise node.error(f"auto_pad is NOTSET, SAME_UPPER, SAME_LOWER or VALID; found "
                         f"{auto_pad!r}")
    pads = _ints(node, "pads", 2 * n, 0)
    if any(p < 0 for p in pads):
        raise node.error(f"pads must be ≥ 0, found {list(pads)}")
    return strides, dilations, tuple(zip(pads[:n], pads[n:]))


def ceil_padding(node, spatial, window, strides, dilations, padding):
    """The padding after each axis that `ceil_mode` adds: the last window may run past the
    end, but starts inside the input or the padding before it."""
    if not node.attr("ceil_mode", 0) or node.attr("auto_pad", "NOTSET") in ("SAME_UPPER",
                                                                             "SAME_LOWER"):
        return (0,) * len(window)
    extra = []
    for size, k, s, d, (lo, hi) in zip(spatial, window, strides, dilations, padding):
        span = d * (k - 1) + 1
        out = -(-(size + lo + hi - span) // s) + 1
        if (out - 1) * s >= size + lo:
            out -= 1
        extra.append(max((out - 1) * s + span - (size + lo + hi), 0))
    return tuple(extra)


def kernel_shape(node):
    window = node.attr("kernel_shape", None)
    if window is None:
        raise node.error("the attribute kernel_shape is required and missing")
    return tuple(int(k) for k in window)


# -- windows as slices, for what the primitives do not take ---------------------------------------


def window_slices(x, window, strides, dilations, padding, fill):
    """The windows of channels-last `x` as one strided slice per window offset, row-major:
    slice ``k`` is ``x_pad[:, o·s + k·d, :]`` over every output position ``o``."""
    x = api._as_tracer_or_array(x)
    if any(lo or hi for lo, hi in padding):
        x = np.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),), constant_values=fill)
    out = [(size - d * (k - 1) - 1) // s + 1
           for size, k, s, d in zip(x.shape[1:-1], window, strides, dilations)]
    slices = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = tuple(slice(j * d, j * d + (o - 1) * s + 1, s)
                      for j, d, o, s in zip(offset, dilations, out, strides))
        slices.append(x[(slice(None),) + index + (slice(None),)])
    return slices, tuple(out)


def lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


def window_max(x, window, strides, dilations, padding):
    """The maximum of each window of channels-last `x` (padding never wins)."""
    if all(d == 1 for d in dilations):
        return P.window_max_p(api.lift(x), window=window, strides=strides, padding=padding)
    slices, _ = window_slices(x, window, strides, dilations, padding, lowest(x.dtype))
    result = slices[0]
    for s in slices[1:]:
        result = np.maximum(result, s)
    return result


def window_sum(x, window, strides, dilations, padding):
    """The sum of each window of channels-last `x` (padding counts as 0); a NumPy array
    when `x` is one."""
    if all(d == 1 for d in dilations):
        if known(x):
            return P.window_sum_p.impl(np.asarray(x), window=window, strides=strides,
                                       padding=padding)
        return P.window_sum_p(api.lift(x), window=window, strides=strides, padding=padding)
    slices, _ = window_slices(x, window, strides, dilations, padding, 0)
    result = slices[0]
    for s in slices[1:]:
        result = result + s
    return result


# -- Gemm -----------------------------------------------------------------------------------------


@operator("Gemm")
def import_gemm(node, a, b, c=None):
    """``Y = α A' B' + β C``, with ``A' = Aᵀ`` if `transA` and ``B' = Bᵀ`` if `transB`, and C
    broadcast to ``(M, N)``."""
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    a, b = api.lift(a), api.lift(b)
    if np.ndim(a) != 2 or np.ndim(b) != 2:
        raise node.error(f"A and B must be matrices, found shapes {tuple(np.shape(a))} and "
                         f"{tuple(np.shape(b))}")
    if node.attr("transA", 0):
        a = np.transpose(a)
    if node.attr("transB", 0):
        b = np.transpose(b)
    y = a @ b                                            # (M, N)
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else api.lift(c) * beta)
    return y


# -- Conv and ConvTranspose -----------------------------------------------------------------------


def _filter_window(node, w):
    window = tuple(np.shape(w)[2:])
    given = node.attr("kernel_shape", None)
    if given is not None and tuple(given) != window:
        raise node.error(f"kernel_shape {list(given)} does not match the filters' window "
                         f"{list(window)} (filters of shape {tuple(np.shape(w))})")
    return window


@operator("Conv")
def import_conv(node, x, w, b=None):
    """``y[n, o, p…] = Σ_c Σ_k x_pad[n, c, p·s + k·d] w[o, c, k] + b[o]``, the channels in
    `group` groups."""
    x, w = api._as_tracer_or_array(x), api.lift(w)
    window = _filter_window(node, w)
    strides, dilations, padding = window_attrs(node, x.shape, window)
    y = conv(channels_last(x), filters(w), stride=strides, padding=padding,
             dilation=dilations, groups=node.attr("group", 1))           # (N, *out, O)
    if b is not None:
        y = y + b
    return channels_first(y)


def _transpose_padding(node, in_spatial, window, strides, dilations):
    """ConvTranspose's ``(before, after)`` padding per axis, which may be negative where an
    `output_shape` asks for more than the operator computes."""
    n = len(window)
    adjust = _ints(node, "output_padding", n, 0)
    full = [s * (i - 1) + a + d * (k - 1) + 1
            for i, s, a, k, d in zip(in_spatial, strides, adjust, window, dilations)]
    auto_pad = node.attr("auto_pad", "NOTSET")
    shape = node.attr("output_shape", None)
    if shape is not None:
        shape = [int(v) for v in shape][-n:]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        shape = [i * s for i, s in zip(in_spatial, strides)]
    if shape is None:
        if auto_pad not in ("NOTSET", "VALID"):
            raise node.error(f"auto_pad is NOTSET, SAME_UPPER, SAME_LOWER or VALID; found "
                             f"{auto_pad!r}")
        pads = _ints(node, "pads", 2 * n, 0) if auto_pad == "NOTSET" else (0,) * (2 * n)
        return tuple(zip(pads[:n], pads[n:])), adjust
    padding = []
    for total in (f - o for f, o in zip(full, shape)):
        small, large = total // 2, total - total // 2
        padding.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    return tuple(padding), adjust


@operator("ConvTranspose")
def import_conv_transpose(node, x, w, b=None):
    """The transpose of Conv (the gradient of a convolution with respect to its input):
    ``y[n, o, q] = Σ_c Σ_{i, k: i·s + k·d − pad_before = q} x[n, c, i] w[c, o, k] + b[o]``,
    out of ``s·(in − 1) + output_padding + d·(k − 1) + 1 − pads`` positions per axis."""
    x, w = api._as_tracer_or_array(x), api.lift(w)
    window = _filter_window(node, w)
    n = len(window)
    if x.ndim != n + 2:
        raise node.error(f"a {n}-D window takes inputs (N, C, {n} spatial axes); found shape "
                         f"{tuple(x.shape)}")
    strides, dilations = _ints(node, "strides", n, 1), _ints(node, "dilations", n, 1)
    groups = node.attr("group", 1)
    in_spatial = tuple(x.shape[2:])
    padding, adjust = _transpose_padding(node, in_spatial, window, strides, dilations)
    full = tuple(s * (i - 1) + d * (k - 1) + 1
                 for i, s, k, d in zip(in_spatial, strides, window, dilations))
    out_channels = np.shape(w)[1] * groups
    g, f = api.promote(channels_last(x), filters(w))
    y = P.conv_input_grad_p(g, f, strides=strides, padding=((0, 0),) * n, dilation=dilations,
                            groups=groups, shape=(x.shape[0],) + full + (out_channels,))
    y = _crop(node, y, full, adjust, padding)
    if b is not None:
        y = y + b
    return channels_first(y)


def _crop(node, y, full, adjust, padding):
    """Positions ``[before, before + out)`` of the transposed convolution `y` (channels last,
    `full` positions per axis), zeros where that runs outside it."""
    index, pad = [], []
    for f, a, (lo, hi) in zip(full, adjust, padding):
        out = f + a - lo - hi
        if out < 1:
            raise node.error(f"the output would have {out} positions along an axis (the "
                             f"transposed convolution makes {f + a}, the padding is "
                             f"{tuple(padding)})")
        start, stop = max(lo, 0), min(lo + out, f)
        index.append(slice(start, stop))
        pad.append((max(-lo, 0), max(lo + out - f, 0)))
    y = y[(slice(None),) + tuple(index) + (slice(None),)]
    if any(p != (0, 0) for p in pad):
        y = np.pad(y, ((0, 0),) + tuple(pad) + ((0, 0),))
    return y
