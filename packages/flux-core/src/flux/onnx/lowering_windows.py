"""Lowering rules for the window primitives (convolution, pooling and their gradients) and
the gathers `take`/`take_grad`.

flux is channels last (``x: (N, *spatial, C)``, filters ``(*window, C / groups, out)``);
ONNX's Conv, ConvTranspose and pools are channels first (``(N, C, *spatial)``, filters
``(out, C / groups, *window)``), so each rule transposes its operands in and its result back
(ONNX runtimes fold the transposes of constant filters). Padding is a ``(before, after)`` pair
per spatial axis in flux, ``[befores..., afters...]`` in ONNX.

- ``conv`` is Conv; ``conv_input_grad`` (the input's gradient) is ConvTranspose with the same
  filters, its output padding making the input's size; ``conv_filter_grad`` is a Conv of the
  input by the output's gradient with the roles of batch and channels exchanged (stride and
  dilation exchanged too), cut to the window, one block per group.
- ``window_max`` is MaxPool; ``window_sum`` is AveragePool counting the padding, times the
  window size; ``window_max_grad`` masks the gradient at each window's first maximum, one
  strided Slice per window offset, and puts it back with a ConvTranspose of one-hot filters;
  ``window_sum_grad`` is a ConvTranspose with filters of ones, one group per channel.
- ``take`` is Gather; ``take_grad`` a ScatterND adding the gathered rows' gradients back to
  their rows (opset 16).
"""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P

__all__ = ["WINDOW_RULES"]


def _first(rank: int) -> list:
    """The permutation of a channels-last value to channels first."""
    return [0, rank - 1] + list(range(1, rank - 1))


def _last(rank: int) -> list:
    """The permutation of a channels-first value to channels last."""
    return [0] + list(range(2, rank)) + [1]


def _filters(rank: int) -> list:
    """The permutation of flux filters ``(*window, in, out)`` to ONNX's ``(out, in, *window)``."""
    return [rank - 1, rank - 2] + list(range(rank - 2))


def _pads(padding) -> list:
    return [int(lo) for lo, _ in padding] + [int(hi) for _, hi in padding]


def _ints(values) -> list:
    return [int(v) for v in values]


def _conv(b, x, w):
    a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
    y = b.node("Conv", b.node("Transpose", x, perm=_first(rank)),
               b.node("Transpose", w, perm=_filters(rank)),
               kernel_shape=_ints(b.eqn.inputs[1].aval.shape[:-2]), strides=_ints(a["strides"]),
               pads=_pads(a["padding"]), dilations=_ints(a["dilation"]), group=int(a["groups"]))
    b.node("Transpose", y, out=b.out, perm=_last(rank))


def _output_padding(shape, out, window, strides, padding, dilation) -> list:
    """What ConvTranspose adds after its output so that it has the input's spatial `shape`:
    the rows the strided windows never reached."""
    return [int(n) - (s * (o - 1) + d * (k - 1) + 1 - lo - hi)
            for n, o, k, s, d, (lo, hi) in zip(shape, out, window, strides, dilation, padding)]


def _conv_input_grad(b, g, w):
    a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
    window = b.eqn.inputs[1].aval.shape[:-2]
    extra = _output_padding(a["shape"][1:-1], b.eqn.inputs[0].aval.shape[1:-1], window,
                            a["strides"], a["padding"], a["dilation"])
    y = b.node("ConvTranspose", b.node("Transpose", g, perm=_first(rank)),
               b.node("Transpose", w, perm=_filters(rank)), kernel_shape=_ints(window),
               strides=_ints(a["strides"]), pads=_pads(a["padding"]),
               dilations=_ints(a["dilation"]), group=int(a["groups"]), output_padding=extra)
    b.node("Transpose", y, out=b.out, perm=_last(rank))


def _conv_filter_grad(b, x, g):
    """dW[k, c, o] = Σ_n Σ_p x_padded[n, p·stride + k·dilation, c] · g[n, p, o]: a Conv of x
    as (C, N, *spatial) by g as (O, N, *out), stride and dilation exchanged."""
    a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
    window, per_group, out = a["shape"][:-2], a["shape"][-2], a["shape"][-1]
    groups = int(a["groups"])
    swap = [rank - 1, 0] + list(range(1, rank - 1))
    full = b.node("Conv", b.node("Transpose", x, perm=swap), b.node("Transpose", g, perm=swap),
                  kernel_shape=_ints(b.eqn.inputs[1].aval.shape[1:-1]),
                  strides=_ints(a["dilation"]), dilations=_ints(a["strides"]),
                  pads=_pads(a["padding"]))                      # (C, O, *reach ≥ window)
    spatial = list(range(2, rank))
    blocks = []
    for j in range(groups):       # group j: its input channels by its outputs, cut to the window
        starts = [j * per_group, j * (out // groups)] + [0] * len(window)
        ends = [(j + 1) * per_group, (j + 1) * (out // groups)] + _ints(window)
        blocks.append(b.node("Slice", full, b.ints(starts), b.ints(ends),
                             b.ints([0, 1] + spatial)))
    dw = blocks[0] if groups == 1 else b.node("Concat", *blocks, axis=1)   # (C/g, O, *window)
    b.node("Transpose", dw, out=b.out, perm=spatial + [0, 1])


def _pool(op: str, scale: bool):
    def rule(b, x):
        a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
        attrs = dict(kernel_shape=_ints(a["window"]), strides=_ints(a["strides"]),
                     pads=_pads(a["padding"]))
        if op == "AveragePool":
            attrs["count_include_pad"] = 1
        y = b.node(op, b.node("Transpose", x, perm=_first(rank)), **attrs)
        if scale:                # the mean over each window (padding counted) times its size
            dtype = b.eqn.inputs[0].aval.dtype
            y = b.node("Mul", y, b.const(np.asarray(np.prod(a["window"]), dtype)))
        b.node("Transpose", y, out=b.out, perm=_last(rank))
    rule.__doc__ = f"{op} between transposes{' times the window size' if scale else ''}."
    return rule


def _window_max_grad(b, x, y, g):
    """g sent to the first maximum of each window (row-major), as flux computes it: for each
    window offset k, the strided slice of x (padded with the lowest value) that offset reads
    is compared with the pool's output y; the hits not already taken by an earlier offset
    keep their g. The K masked gradients, as K channels per channel, go back to the positions
    they came from through one ConvTranspose whose filter for offset k is one at k (a group
    per channel), which also removes the padding."""
    a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
    window, strides, padding = _ints(a["window"]), _ints(a["strides"]), a["padding"]
    dtype, channels = b.eqn.inputs[2].aval.dtype, b.eqn.inputs[0].aval.shape[-1]
    out = b.eqn.inputs[1].aval.shape[1:-1]
    lowest = np.asarray(-np.inf if dtype.kind == "f" else np.iinfo(dtype).min, dtype)
    xp = b.node("Pad", b.node("Transpose", x, perm=_first(rank)),
                b.ints([0, 0] + [lo for lo, _ in padding] + [0, 0] + [hi for _, hi in padding]),
                b.const(lowest))
    yt, gt = (b.node("Transpose", v, perm=_first(rank)) for v in (y, g))
    zero = b.const(np.zeros((), dtype))
    spatial = list(range(2, rank))
    offsets = list(np.ndindex(*window))
    parts, open_ = [], None
    for k in offsets:                   # offset k reads x_padded[k + p·stride] for outputs p
        ends = [i + (o - 1) * s + 1 for i, o, s in zip(k, out, strides)]
        seen = b.node("Slice", xp, b.ints(k), b.ints(ends), b.ints(spatial), b.ints(strides))
        hit = b.node("Equal", seen, yt)
        if open_ is None:
            open_ = b.node("Not", hit)
        else:
            hit = b.node("And", hit, open_)
            open_ = b.node("And", open_, b.node("Not", hit))
        parts.append(b.node("Unsqueeze", b.node("Where", hit, gt, zero), b.ints([2])))
    stacked = b.node("Concat", *parts, axis=2) if len(parts) > 1 else parts[0]
    dims = b.dims(b.eqn.inputs[2])
    flat = b.node("Reshape", stacked, b.shape((dims[0], channels * len(offsets)) + tuple(out)))
    onehot = np.zeros((channels, len(offsets)) + tuple(window), dtype)
    for j, k in enumerate(offsets):
        onehot[(slice(None), j) + k] = 1
    extra = _output_padding(b.eqn.inputs[0].aval.shape[1:-1], out, window, strides, padding,
                            (1,) * len(window))
    dx = b.node("ConvTranspose", flat,
                b.const(onehot.reshape((channels * len(offsets), 1) + tuple(window))),
                kernel_shape=window, strides=strides, pads=_pads(padding), group=channels,
                output_padding=extra)
    b.node("Transpose", dx, out=b.out, perm=_last(rank))


def _window_sum_grad(b, g):
    """Each output's gradient spread over its window: ConvTranspose by ones, a group per
    channel."""
    a, rank = b.attrs, b.eqn.inputs[0].aval.ndim
    channels, dtype = int(a["shape"][-1]), b.eqn.inputs[0].aval.dtype
    ones = b.const(np.ones((channels, 1) + tuple(_ints(a["window"])), dtype))
    dilation = (1,) * len(a["window"])
    extra = _output_padding(a["shape"][1:-1], b.eqn.inputs[0].aval.shape[1:-1], a["window"],
                            a["strides"], a["padding"], dilation)
    y = b.node("ConvTranspose", b.node("Transpose", g, perm=_first(rank)), ones,
               kernel_shape=_ints(a["window"]), strides=_ints(a["strides"]),
               pads=_pads(a["padding"]), group=channels, output_padding=extra)
    b.node("Transpose", y, out=b.out, perm=_last(rank))


def _indices(b, i, atom):
    """Indices as int64 (ONNX gathers and scatters take int32 or int64)."""
    return i if atom.aval.dtype == np.int64 else b.node("Cast", i, to=b.tensor_type(np.int64))


def _take(b, x, i):
    b.node("Gather", x, _indices(b, i, b.eqn.inputs[1]), out=b.out, axis=int(b.attrs["axis"]))


def _take_grad(b, g, i):
    """zeros(shape) with each gathered row's gradient added to its row: ScatterND into the
    zeros with the gathered axis first, the index axes of g first, then back."""
    b.needs_opset(16, "take_grad (ScatterND adding repeated rows)")
    axis, shape = int(b.attrs["axis"]), b.attr_dims("shape")
    rows = b.eqn.inputs[1].aval.ndim
    rank = b.eqn.inputs[0].aval.ndim
    moved = (shape[axis],) + tuple(shape[:axis]) + tuple(shape[axis + 1:])
    dtype = b.eqn.inputs[0].aval.dtype
    zero = b.export.onnx.numpy_helper.from_array(np.zeros(1, dtype))
    zeros = b.node("ConstantOfShape", b.shape(moved), value=zero)
    at = b.node("Unsqueeze", _indices(b, i, b.eqn.inputs[1]), b.ints([-1]))
    order = list(range(axis, axis + rows)) + list(range(axis)) + list(range(axis + rows, rank))
    if order != list(range(rank)):
        g = b.node("Transpose", g, perm=order)
    if axis == 0:
        b.node("ScatterND", zeros, at, g, out=b.out, reduction="add")
        return
    summed = b.node("ScatterND", zeros, at, g, reduction="add")
    back = [j + 1 for j in range(axis)] + [0] + list(range(axis + 1, len(shape)))
    b.node("Transpose", summed, out=b.out, perm=back)


WINDOW_RULES = {
    P.conv_p: _conv, P.conv_input_grad_p: _conv_input_grad,
    P.conv_filter_grad_p: _conv_filter_grad,
    P.window_max_p: _pool("MaxPool", False), P.window_sum_p: _pool("AveragePool", True),
    P.window_max_grad_p: _window_max_grad, P.window_sum_grad_p: _window_sum_grad,
    P.take_p: _take, P.take_grad_p: _take_grad,
}
