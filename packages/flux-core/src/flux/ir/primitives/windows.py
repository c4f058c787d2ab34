"""Primitives over sliding windows and gathered rows: N-d convolution (and its two gradients),
max and sum over windows (and theirs), and `take` (a data-dependent gather, and its
scatter-add gradient).

Layout is channels last, as everywhere in flux: ``x: (N, *spatial, C)``, filters
``w: (*window, C / groups, out)``. Window attributes are resolved tuples (the ops layer turns
``"same"`` and ints into them): ``strides`` and ``dilation`` one int per spatial axis,
``padding`` one ``(before, after)`` pair per spatial axis. Output sizes follow the usual rule
``(size + before + after - dilation * (k - 1) - 1) // stride + 1``.

Their NumPy implementations are in `flux.ir.primitives.window_kernels`.
"""
from __future__ import annotations

import flux.ir.primitives.window_kernels as K
from flux.errors import ShapeError
from flux.ir.graph import Aval
from flux.ir.primitives.elementwise import same_dtype
from flux.ir.primitives.window_kernels import out_size
from flux.ir.trace import Primitive

__all__ = ["out_size", "window_text"]


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


conv_p = Primitive("conv", impl=K.conv, shape_rule=_conv_shape, vjp=_conv_vjp)
conv_input_grad_p = Primitive(      # linear in g and in w: its gradients are the other two
    "conv_input_grad", impl=K.conv_input_grad, shape_rule=_conv_input_grad_shape,
    vjp=lambda h, out, g, w, *, shape, **attrs: [
        conv_p(h, w, **attrs), conv_filter_grad_p(h, g, **attrs, shape=w.shape)])
conv_filter_grad_p = Primitive(
    "conv_filter_grad", impl=K.conv_filter_grad, shape_rule=_conv_filter_grad_shape,
    vjp=lambda h, out, x, g, *, shape, **attrs: [
        conv_input_grad_p(g, h, **attrs, shape=x.shape), conv_p(x, h, **attrs)])

# -- pooling: max and sum over windows ----------------------------------------------------------


def _pool_shape(name):
    def rule(x: Aval, *, window, strides, padding) -> Aval:
        out = _spatial_shape(name, x, window, strides, padding, (1,) * len(window))
        return Aval((x.shape[0],) + out + (x.shape[-1],), x.dtype)
    return rule


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
    "window_max", impl=K.window_max, shape_rule=_pool_shape("max pool"),
    vjp=lambda g, out, x, **attrs: [window_max_grad_p(x, out, g, **attrs)])
window_max_grad_p = Primitive(      # its own gradient (second order through a max) is
    "window_max_grad", impl=K.window_max_grad,  # not defined: autodiff says so if asked
    shape_rule=_window_max_grad_shape)
window_sum_p = Primitive(
    "window_sum", impl=K.window_sum, shape_rule=_pool_shape("sum pool"),
    vjp=lambda g, out, x, **attrs: [window_sum_grad_p(g, **attrs, shape=x.shape)])
window_sum_grad_p = Primitive(
    "window_sum_grad", impl=K.window_sum_grad, shape_rule=_window_sum_grad_shape,
    vjp=lambda h, out, g, *, shape, **attrs: [window_sum_p(h, **attrs)])

# -- take: a gather of rows by data-dependent indices -------------------------------------------


def _take_shape(x: Aval, indices: Aval, *, axis) -> Aval:
    if indices.dtype.kind not in "iu":
        raise ShapeError(f"take: indices must be integers, found {indices.dtype}")
    if not 0 <= axis < x.ndim:
        raise ShapeError(f"take: axis {axis} is out of range for a value of shape {x.shape}")
    return Aval(x.shape[:axis] + indices.shape + x.shape[axis + 1:], x.dtype)


def _take_grad_shape(g: Aval, indices: Aval, *, axis, shape) -> Aval:
    expected = _take_shape(Aval(shape, g.dtype), indices, axis=axis)
    if g.shape != expected.shape:
        raise ShapeError(f"take_grad: gradient {g.shape} does not match the gather's output "
                         f"{expected.shape}")
    return Aval(shape, g.dtype)


take_p = Primitive(
    "take", impl=K.take, shape_rule=_take_shape,
    vjp=lambda g, out, x, indices, *, axis: [take_grad_p(g, indices, axis=axis, shape=x.shape),
                                             None])
take_grad_p = Primitive(
    "take_grad", impl=K.take_grad, shape_rule=_take_grad_shape,
    vjp=lambda h, out, g, indices, *, axis, shape: [take_p(h, indices, axis=axis), None])
