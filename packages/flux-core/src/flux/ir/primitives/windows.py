"""Primitives over sliding windows and gathered rows: N-d convolution (and its two gradients),
max and sum over windows (and theirs), and `take` (a data-dependent gather, and its
scatter-add gradient).

Layout is channels last, as everywhere in flux: ``x: (N, *spatial, C)``, filters
``w: (*window, C / groups, out)``. Window attributes are resolved tuples (the ops layer turns
``"same"`` and ints into them): ``strides`` and ``dilation`` one int per spatial axis,
``padding`` one ``(before, after)`` pair per spatial axis. Output sizes follow the usual rule
``(size + before + after - dilation * (k - 1) - 1) // stride + 1``.

The NumPy implementations run on strided views: the padded input seen as
``(N, *out, *window, C)`` without a copy, then one BLAS product per group (convolution) or one
ufunc per window offset (pools and the scatter of gradients back to the input).
"""
from __future__ import annotations

import itertools

import numpy as np
from numpy.lib.stride_tricks import as_strided

from flux.errors import ShapeError
from flux.ir.graph import Aval
from flux.ir.primitives.elementwise import same_dtype
from flux.ir.trace import Primitive

__all__ = ["out_size", "window_text"]


def out_size(size: int, k: int, stride: int, dilation: int, before: int, after: int) -> int:
    """The output length of one spatial axis (may be < 1: the window does not fit)."""
    return (size + before + after - dilation * (k - 1) - 1) // stride + 1


def window_text(window, strides, padding, dilation=None) -> str:
    text = f"window {tuple(window)}, stride {tuple(strides)}, padding {tuple(padding)}"
    return text + (f", dilation {tuple(dilation)}" if dilation and any(d != 1 for d in dilation)
                   else "")


def _spatial_shape(name: str, x: Aval, window, strides, padding, dilation) -> tuple:
    """The output's spatial shape, or a ShapeError naming what does not fit."""
    n = len(window)
    if x.ndim != n + 2:
        raise ShapeError(f"{name}: a {n}-D window needs inputs (batch, {n} spatial axes, "
                         f"channels) of rank {n + 2}, found shape {x.shape}")
    if len(strides) != n or len(padding) != n or len(dilation) != n:
        raise ShapeError(f"{name}: strides, padding and dilation need one entry per spatial "
                         f"axis ({n}); found {window_text(window, strides, padding, dilation)}")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilation) or any(k < 1 for k in window):
        raise ShapeError(f"{name}: window sizes, strides and dilations must be ≥ 1; found "
                         f"{window_text(window, strides, padding, dilation)}")
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise ShapeError(f"{name}: padding must be ≥ 0, found {tuple(padding)}")
    out = tuple(out_size(size, k, s, d, lo, hi) for size, k, s, d, (lo, hi)
                in zip(x.shape[1:-1], window, strides, dilation, padding))
    if any(o < 1 for o in out):
        spans = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
        padded = tuple(size + lo + hi for size, (lo, hi) in zip(x.shape[1:-1], padding))
        raise ShapeError(f"{name}: the window spans {spans} but the padded input is only "
                         f"{padded} (input {x.shape}, "
                         f"{window_text(window, strides, padding, dilation)})")
    return out


# -- the NumPy machinery: padding and strided window views --------------------------------------


def _pad(x, padding, value=0):
    if not any(lo or hi for lo, hi in padding):
        return x
    return np.pad(x, ((0, 0),) + tuple(tuple(p) for p in padding) + ((0, 0),),
                  constant_values=value)


def _view(xp, window, strides, dilation, out):
    """The padded input `xp` as ``(N, *out, *window, C)``, no copy."""
    s = xp.strides
    spatial = s[1:-1]
    return as_strided(
        xp, (xp.shape[0],) + tuple(out) + tuple(window) + (xp.shape[-1],),
        (s[0],) + tuple(a * b for a, b in zip(spatial, strides))
        + tuple(a * b for a, b in zip(spatial, dilation)) + (s[-1],), writeable=False)


def _offsets(window, strides, dilation, out):
    """Per window offset: the index of the padded input it reads for every output position."""
    for k in itertools.product(*(range(n) for n in window)):
        yield k, (slice(None),) + tuple(
            slice(i * d, i * d + s * (o - 1) + 1, s)
            for i, d, s, o in zip(k, dilation, strides, out)) + (slice(None),)


def _unpad(xp, padding, shape):
    return xp[(slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in
                                     zip(padding, shape[1:-1])) + (slice(None),)]


def _grouped(cols, groups, width):
    """``(rows, K * C)`` columns as ``(groups, rows, K * C / groups)``: group j's channels."""
    rows, kc = cols.shape
    return cols.reshape(rows, kc // (groups * width), groups, width).transpose(2, 0, 1, 3) \
        .reshape(groups, rows, kc // groups)


def _filters(w, groups):
    """``(*window, C/g, out)`` as ``(groups, K * C/g, out/g)``."""
    kc, out = int(np.prod(w.shape[:-1])), w.shape[-1]
    width = w.shape[-2]
    return w.reshape(kc // width, width, groups, out // groups).transpose(2, 0, 1, 3) \
        .reshape(groups, kc, out // groups)


# -- convolution --------------------------------------------------------------------------------


def _conv_shape(x: Aval, w: Aval, *, strides, padding, dilation, groups) -> Aval:
    dtype = same_dtype("conv", [x, w])
    window = w.shape[:-2]
    if w.ndim < 3:
        raise ShapeError(f"conv: filters have shape (*window, in, out), found {w.shape}")
    if groups < 1 or x.ndim and x.shape[-1] % groups or w.shape[-1] % groups:
        raise ShapeError(f"conv: {groups} groups must divide the input's {x.shape[-1]} "
                         f"channels and the filter's {w.shape[-1]} outputs")
    out = _spatial_shape("conv", x, window, strides, padding, dilation)
    if x.shape[-1] != w.shape[-2] * groups:
        per = f" ({w.shape[-2]} per group × {groups} groups)" if groups > 1 else ""
        raise ShapeError(f"conv: the input has {x.shape[-1]} channels but the filter "
                         f"{w.shape} expects {w.shape[-2] * groups}{per} (input {x.shape})")
    return Aval((x.shape[0],) + out + (w.shape[-1],), dtype)


def _conv(x, w, *, strides, padding, dilation, groups):
    window, out_c = w.shape[:-2], w.shape[-1]
    out = tuple(out_size(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi)
                in zip(x.shape[1:-1], window, strides, dilation, padding))
    cols = _view(_pad(x, padding), window, strides, dilation, out)
    rows = x.shape[0] * int(np.prod(out))
    cols = cols.reshape(rows, -1)                          # (N * P, K * C): one copy
    if groups == 1:
        y = cols @ w.reshape(-1, out_c)
    else:
        y = np.matmul(_grouped(cols, groups, w.shape[-2]), _filters(w, groups))
        y = y.transpose(1, 0, 2).reshape(rows, out_c)
    return y.reshape((x.shape[0],) + out + (out_c,))


def _conv_input_grad(g, w, *, strides, padding, dilation, groups, shape):
    """The input's gradient: each output's g spread back over the window it read."""
    window, cin = w.shape[:-2], shape[-1]
    out = g.shape[1:-1]
    rows = g.shape[0] * int(np.prod(out))
    g2 = g.reshape(rows, -1)
    if groups == 1:
        dcols = g2 @ w.reshape(-1, w.shape[-1]).T         # (N * P, K * C)
        dcols = dcols.reshape(g.shape[:-1] + tuple(window) + (cin,))
    else:
        gg = g2.reshape(rows, groups, -1).transpose(1, 0, 2)        # (G, rows, out / G)
        dcols = np.matmul(gg, _filters(w, groups).transpose(0, 2, 1))  # (G, rows, K * C / G)
        dcols = dcols.reshape(groups, rows, int(np.prod(window)), w.shape[-2])
        dcols = dcols.transpose(1, 2, 0, 3).reshape(g.shape[:-1] + tuple(window) + (cin,))
    padded = (shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(shape[1:-1], padding)) \
        + (cin,)
    dxp = np.zeros(padded, g.dtype)
    n = len(window)
    for k, where in _offsets(window, strides, dilation, out):
        dxp[where] += dcols[(slice(None),) * (n + 1) + k]
    return _unpad(dxp, padding, shape)


def _conv_filter_grad(x, g, *, strides, padding, dilation, groups, shape):
    """The filter's gradient: the windows read, weighted by the output gradients."""
    window, out = shape[:-2], g.shape[1:-1]
    cols = _view(_pad(x, padding), window, strides, dilation, out)
    rows = x.shape[0] * int(np.prod(out))
    cols = cols.reshape(rows, -1)
    g2 = g.reshape(rows, -1)
    if groups == 1:
        return (cols.T @ g2).reshape(shape)
    per = np.matmul(_grouped(cols, groups, shape[-2]).transpose(0, 2, 1),
                    g2.reshape(rows, groups, -1).transpose(1, 0, 2))    # (G, K * C/G, out/G)
    k = int(np.prod(window))
    return per.reshape(groups, k, shape[-2], -1).transpose(1, 2, 0, 3).reshape(shape)


def _conv_vjp(g, out, x, w, **attrs):
    return [conv_input_grad_p(g, w, **attrs, shape=x.shape),
            conv_filter_grad_p(x, g, **attrs, shape=w.shape)]


def _conv_input_grad_shape(g: Aval, w: Aval, *, shape, **attrs) -> Aval:
    expected = _conv_shape(Aval(shape, g.dtype), w, **attrs)
    if g.shape != expected.shape:
        raise ShapeError(f"conv_input_grad: gradient {g.shape} does not match the "
                         f"convolution's output {expected.shape}")
    return Aval(shape, same_dtype("conv_input_grad", [g, w]))


def _conv_filter_grad_shape(x: Aval, g: Aval, *, shape, **attrs) -> Aval:
    expected = _conv_shape(x, Aval(shape, x.dtype), **attrs)
    if g.shape != expected.shape:
        raise ShapeError(f"conv_filter_grad: gradient {g.shape} does not match the "
                         f"convolution's output {expected.shape}")
    return Aval(shape, same_dtype("conv_filter_grad", [x, g]))


conv_p = Primitive("conv", impl=_conv, shape_rule=_conv_shape, vjp=_conv_vjp)
conv_input_grad_p = Primitive(      # linear in g and in w: its gradients are the other two
    "conv_input_grad", impl=_conv_input_grad, shape_rule=_conv_input_grad_shape,
    vjp=lambda h, out, g, w, *, shape, **attrs: [
        conv_p(h, w, **attrs), conv_filter_grad_p(h, g, **attrs, shape=w.shape)])
conv_filter_grad_p = Primitive(
    "conv_filter_grad", impl=_conv_filter_grad, shape_rule=_conv_filter_grad_shape,
    vjp=lambda h, out, x, g, *, shape, **attrs: [
        conv_input_grad_p(g, h, **attrs, shape=x.shape), conv_p(x, h, **attrs)])

# -- pooling: max and sum over windows ----------------------------------------------------------


def _pool_shape(name):
    def rule(x: Aval, *, window, strides, padding) -> Aval:
        out = _spatial_shape(name, x, window, strides, padding, (1,) * len(window))
        return Aval((x.shape[0],) + out + (x.shape[-1],), x.dtype)
    return rule


def _pool_out(shape, window, strides, padding):
    return tuple(out_size(n, k, s, 1, lo, hi) for n, k, s, (lo, hi)
                 in zip(shape[1:-1], window, strides, padding))


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _window_max(x, *, window, strides, padding):
    out = _pool_out(x.shape, window, strides, padding)
    xp = _pad(x, padding, _lowest(x.dtype))
    y = None
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        y = xp[where].copy() if y is None else np.maximum(y, xp[where], out=y)
    return y


def _window_max_grad(x, y, g, *, window, strides, padding):
    """g sent to the first maximum of each window (row-major order), as PyTorch does."""
    out = y.shape[1:-1]
    xp = _pad(x, padding, _lowest(x.dtype))
    dxp = np.zeros(xp.shape, g.dtype)
    open_ = np.ones(y.shape, bool)
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        hit = (xp[where] == y) & open_
        dxp[where] += np.where(hit, g, 0)
        open_ &= ~hit
    return _unpad(dxp, padding, x.shape)


def _window_sum(x, *, window, strides, padding):
    out = _pool_out(x.shape, window, strides, padding)
    xp = _pad(x, padding)
    y = None
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        y = xp[where].copy() if y is None else np.add(y, xp[where], out=y)
    return y


def _window_sum_grad(g, *, window, strides, padding, shape):
    padded = (shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(shape[1:-1], padding)) \
        + (shape[-1],)
    dxp = np.zeros(padded, g.dtype)
    for _, where in _offsets(window, strides, (1,) * len(window), g.shape[1:-1]):
        dxp[where] += g
    return _unpad(dxp, padding, shape)


def _window_sum_grad_shape(g: Aval, *, window, strides, padding, shape) -> Aval:
    expected = _pool_shape("window_sum_grad")(Aval(shape, g.dtype), window=window,
                                              strides=strides, padding=padding)
    if g.shape != expected.shape:
        raise ShapeError(f"window_sum_grad: gradient {g.shape} does not match the pool's "
                         f"output {expected.shape}")
    return Aval(shape, g.dtype)


def _window_max_grad_shape(x: Aval, y: Aval, g: Aval, *, window, strides, padding) -> Aval:
    if y.shape != g.shape:
        raise ShapeError(f"window_max_grad: gradient {g.shape} does not match the pool's "
                         f"output {y.shape}")
    return Aval(x.shape, g.dtype)


window_max_p = Primitive(
    "window_max", impl=_window_max, shape_rule=_pool_shape("max pool"),
    vjp=lambda g, out, x, **attrs: [window_max_grad_p(x, out, g, **attrs)])
window_max_grad_p = Primitive(      # its own gradient (second order through a max) is
    "window_max_grad", impl=_window_max_grad,  # not defined: autodiff says so if asked
    shape_rule=_window_max_grad_shape)
window_sum_p = Primitive(
    "window_sum", impl=_window_sum, shape_rule=_pool_shape("sum pool"),
    vjp=lambda g, out, x, **attrs: [window_sum_grad_p(g, **attrs, shape=x.shape)])
window_sum_grad_p = Primitive(
    "window_sum_grad", impl=_window_sum_grad, shape_rule=_window_sum_grad_shape,
    vjp=lambda h, out, g, *, shape, **attrs: [window_sum_p(h, **attrs)])

# -- take: a gather of rows by data-dependent indices -------------------------------------------


def _take_shape(x: Aval, indices: Aval, *, axis) -> Aval:
    if indices.dtype.kind not in "iu":
        raise ShapeError(f"take: indices must be integers, found {indices.dtype}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"take: axis {axis} is out of range for a value of shape {x.shape}")
    return Aval(x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype)


def check_indices(indices, size: int, what: str = "take") -> None:
    """Raise IndexError naming the first index outside ``[0, size)``."""
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        bad = indices[(indices < 0) | (indices >= size)].flat[0]
        raise IndexError(f"{what}: index {int(bad)} is out of range for {size} rows "
                         f"(indices must be in [0, {size}))")


def _take(x, indices, *, axis):
    check_indices(indices, x.shape[axis])
    return np.take(x, indices, axis=axis)


def _take_grad(g, indices, *, axis, shape):
    """zeros(shape) with the gradient of each gathered row added back to its row."""
    out = np.zeros(shape, g.dtype)
    moved = np.moveaxis(out, axis, 0)
    rows = np.moveaxis(g, tuple(range(axis, axis + indices.ndim)),
                       tuple(range(indices.ndim))).reshape((indices.size,) + moved.shape[1:])
    np.add.at(moved, indices.reshape(-1), rows)
    return out


def _take_grad_shape(g: Aval, indices: Aval, *, axis, shape) -> Aval:
    expected = _take_shape(Aval(shape, g.dtype), indices, axis=axis)
    if g.shape != expected.shape:
        raise ShapeError(f"take_grad: gradient {g.shape} does not match the gather's output "
                         f"{expected.shape}")
    return Aval(shape, g.dtype)


take_p = Primitive(
    "take", impl=_take, shape_rule=_take_shape,
    vjp=lambda g, out, x, indices, *, axis: [take_grad_p(g, indices, axis=axis, shape=x.shape),
                                             None])
take_grad_p = Primitive(
    "take_grad", impl=_take_grad, shape_rule=_take_grad_shape,
    vjp=lambda h, out, g, indices, *, axis, shape: [take_p(h, indices, axis=axis), None])
