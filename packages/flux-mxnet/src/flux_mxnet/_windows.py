"""The window rules of `RULES`: convolution, max and sum over windows and `take`, with their
gradients, as MXNet's channels-first operators (`Convolution`, `Deconvolution`, `Pooling`).

flux is channels last, ``x: (N, *spatial, C)`` and ``w: (*window, C / groups, out)``; MXNet
is channels first, ``(N, C, *spatial)`` and ``(out, C / groups, *window)``: each rule
transposes in and out. A 1-D window runs as a 2-D one with a unit second axis (MXNet's `pad`
takes 4-D and 5-D arrays only). flux's padding is a ``(before, after)`` pair per axis and
MXNet's ``pad=`` is symmetric: the operator pads ``min(before, after)`` and an explicit `pad`
the rest. Every rule works for every batch size (batch axis 0: ``0``/``-3``/``-4`` reshape
codes, ``None`` in slices) except `take_grad` into a batch-sized value.
"""
from __future__ import annotations

import itertools

import mxnet as mx
import numpy as np

from flux.ir import primitives as P

__all__ = ["WINDOW_RULES"]

S = mx.sym

def _spatial(r, *atoms, weights=()):
    """Refuse a free batch anywhere but axis 0 of `atoms` (or in `weights`)."""
    if any(r.batch(a) not in ((), (0,)) for a in atoms) or any(r.batch(a) for a in weights):
        raise r.not_free("a window over a batch-sized axis")


def _lift(n, values, unit=1) -> tuple:
    """Per-axis attributes as MXNet gets them: a 1-D window's with a unit second axis."""
    return tuple(values) + ((unit,) if n == 1 else ())


def _first(r, x, n):
    """(N, *spatial, C) as (N, C, *spatial); 1-D as (N, C, W, 1)."""
    x = S.transpose(x, axes=(0, n + 1) + tuple(range(1, n + 1)), name=r.sub("cf"))
    return S.expand_dims(x, axis=3, name=r.sub("2d")) if n == 1 else x


def _last(r, y, n):
    """(N, C, *spatial) (1-D: (N, C, W, 1)) back as (N, *spatial, C)."""
    if n == 1:
        y = S.reshape(y, shape=(0, 0, -1), name=r.sub("1d"))
    return S.transpose(y, axes=(0,) + tuple(range(2, n + 2)) + (1,), name=r.sub("cl"))


def _weights(r, w, n):
    """flux filters (*window, in, out) as MXNet's (out, in, *window); 1-D as (out, in, k, 1)."""
    w = S.transpose(w, axes=(n + 1, n) + tuple(range(n)), name=r.sub("wt"))
    return S.expand_dims(w, axis=3, name=r.sub("2d")) if n == 1 else w


def _pad(r, x, padding, value=0.0, most=None):
    """`x` (channels first) padded explicitly by what MXNet's symmetric ``pad=`` cannot do,
    and that ``pad=`` (at most `most` per axis: 0 pads all of it explicitly)."""
    most = (float("inf"),) * len(padding) if most is None else most
    sym = tuple(min(lo, hi, m) for (lo, hi), m in zip(padding, most))
    extra = tuple(v - s for p, s in zip(padding, sym) for v in p)
    if any(extra):
        x = S.pad(x, mode="constant", constant_value=value, pad_width=(0, 0, 0, 0) + extra,
                  name=r.sub("pad"))
    return x, sym


def _crop(r, y, begin, end):
    """The spatial axes of `y` (channels first) sliced to [begin, end)."""
    return S.slice(y, begin=(None, None) + tuple(begin), end=(None, None) + tuple(end),
                   name=r.sub("crop"))


def _spread(r, g, weight, *, kernel, out, strides, dilation, padding, size, channels, groups):
    """A Convolution's transpose: `g` (channels first, spatial `out`) spread back over the
    windows that made it by Deconvolution (``adj``: rows past the last window are zeros), the
    even padding cropped by its pad, the uneven rest by a slice to the input's `size`."""
    reach = tuple(s * (o - 1) + d * (k - 1) + 1
                  for s, o, d, k in zip(strides, out, dilation, kernel))
    adj = tuple(n + lo + hi - e for n, (lo, hi), e in zip(size, padding, reach))
    sym = tuple(min(p) for p in padding)
    y = S.Deconvolution(g, weight, kernel=kernel, stride=strides, dilate=dilation, pad=sym,
                        adj=adj, num_filter=channels, num_group=groups, no_bias=True,
                        name=r.name)
    if all(lo == hi for lo, hi in padding):
        return y
    begin = tuple(lo - s for (lo, _), s in zip(padding, sym))
    return _crop(r, y, begin, tuple(b + n for b, n in zip(begin, size)))


def _dilated(r, weight, shape, dilation):
    """MXNet filters (out, in, *k) with dilation − 1 zeros between taps (3-D Deconvolution
    has no ``dilate``): one product with a constant 0/1 matrix."""
    k = shape[2:]
    wide = tuple(d * (a - 1) + 1 for a, d in zip(k, dilation))
    taps = np.zeros((int(np.prod(k)), int(np.prod(wide))), r.eqn.inputs[1].aval.dtype)
    for i, at in enumerate(np.ndindex(*k)):
        taps[i, np.ravel_multi_index(tuple(a * d for a, d in zip(at, dilation)), wide)] = 1
    flat = S.reshape(weight, shape=(-1, taps.shape[0]), name=r.sub("flat"))
    wider = S.dot(flat, r.const(taps), name=r.sub("dilate"))
    return S.reshape(wider, shape=tuple(shape[:2]) + wide, name=r.sub("wide")), wide


# -- the rules ------------------------------------------------------------------------------------


def _conv(r, x, w, *, strides, padding, dilation, groups):
    """Convolution (kernel, stride, dilate, the even padding as pad, num_group), after an
    explicit pad of the uneven rest."""
    xa, wa = r.eqn.inputs
    n = len(strides)
    _spatial(r, xa, weights=(wa,))
    window, cout = wa.aval.shape[:-2], wa.aval.shape[-1]
    xs, sym = _pad(r, _first(r, x, n), _lift(n, padding, (0, 0)))
    y = S.Convolution(xs, _weights(r, w, n), kernel=_lift(n, window), stride=_lift(n, strides),
                      dilate=_lift(n, dilation), pad=sym, num_filter=cout, num_group=groups,
                      no_bias=True, name=r.name)
    return _last(r, y, n)


def _conv_input_grad(r, g, w, *, strides, padding, dilation, groups, shape):
    """Deconvolution of g with the same filters (stride, dilate, num_group; ``adj`` reaches
    the padded input's size), cropped to the input. 3-D: the filters dilated by hand."""
    ga, wa = r.eqn.inputs
    n = len(strides)
    _spatial(r, ga, weights=(wa,))
    weight, window = _weights(r, w, n), wa.aval.shape[:-2]
    if n == 3 and any(d > 1 for d in dilation):
        weight, window = _dilated(r, weight, (wa.aval.shape[-1], wa.aval.shape[-2]) + window,
                                  dilation)
        dilation = (1,) * n
    y = _spread(r, _first(r, g, n), weight, kernel=_lift(n, window),
                out=_lift(n, ga.aval.shape[1:-1]), strides=_lift(n, strides),
                dilation=_lift(n, dilation), padding=_lift(n, padding, (0, 0)),
                size=_lift(n, shape[1:-1]), channels=shape[-1], groups=groups)
    return _last(r, y, n)


def _conv_filter_grad(r, x, g, *, strides, padding, dilation, groups, shape):
    """A Convolution with the roles swapped: x's channels (of a group) as the batch and the
    batch (per group: num_group) as channels, g as the filters (out, N, *out_spatial),
    stride = dilation, dilate = strides; the (C / groups, out, *) result cropped to the window
    and transposed to (*window, C / groups, out)."""
    xa, ga = r.eqn.inputs
    n = len(strides)
    _spatial(r, xa, ga)
    window, cout, m = shape[:-2], shape[-1], max(n, 2)
    xs = S.reshape(_first(r, x, n), shape=(0, -4, groups, -1, -2), name=r.sub("split"))
    xs = S.transpose(xs, axes=(2, 1, 0) + tuple(range(3, m + 3)), name=r.sub("swap"))
    xs = S.reshape(xs, shape=(0, -3, -2), name=r.sub("fold"))          # (C/G, G·N, *spatial)
    xs, sym = _pad(r, xs, _lift(n, padding, (0, 0)))
    gs = S.transpose(g, axes=(n + 1, 0) + tuple(range(1, n + 1)), name=r.sub("gt"))
    if n == 1:
        gs = S.expand_dims(gs, axis=3, name=r.sub("2d"))
    out = ga.aval.shape[1:-1]
    y = S.Convolution(xs, gs, kernel=_lift(n, out), stride=_lift(n, dilation),
                      dilate=_lift(n, strides), pad=sym, num_filter=cout, num_group=groups,
                      no_bias=True, name=r.name)
    reached = tuple((size + lo + hi - s * (o - 1) - 1) // d + 1 for size, (lo, hi), s, o, d
                    in zip(xa.aval.shape[1:-1], padding, strides, out, dilation))
    if reached != tuple(window):
        y = _crop(r, y, (0,) * m, _lift(n, window))
    if n == 1:
        y = S.reshape(y, shape=(0, 0, -1), name=r.sub("1d"))
    return S.transpose(y, axes=tuple(range(2, n + 2)) + (0, 1), name=r.sub("cl"))


def _pooled(r, x, how, value, window, strides, padding):
    """Pooling channels first: the even padding as its pad (MXNet: at most kernel − 1; never
    read there), the rest padded explicitly with `value`."""
    n = len(window)
    _spatial(r, r.eqn.inputs[0])
    xs, sym = _pad(r, _first(r, x, n), _lift(n, padding, (0, 0)), value,
                   most=tuple(k - 1 for k in _lift(n, window)))
    return S.Pooling(xs, kernel=_lift(n, window), stride=_lift(n, strides), pad=sym,
                     pool_type=how, name=r.name)


def _window_max(r, x, *, window, strides, padding):
    """Pooling(pool_type='max') after an explicit −inf pad of the uneven padding. MXNet's max
    starts from the lowest finite value, which a window of −inf (or all padding) then gives:
    made −inf again (wrong only where a window's maximum is exactly that value). Unlike
    NumPy, MXNet's max skips NaNs."""
    y = _pooled(r, x, "max", -np.inf, window, strides, padding)
    dtype = np.dtype(r.eqn.outputs[0].aval.dtype)
    if dtype.kind == "f":
        empty = S._internal._equal_scalar(y, scalar=float(np.finfo(dtype).min),
                                          name=r.sub("empty"))
        inf = S._internal._mul_scalar(S.ones_like(y, name=r.sub("one")), scalar=-np.inf,
                                      name=r.sub("inf"))
        y = S.where(empty, inf, y, name=r.sub("where"))
    return _last(r, y, len(window))


def _window_sum(r, x, *, window, strides, padding):
    """Pooling(pool_type='sum') after an explicit zero pad of the uneven padding."""
    return _last(r, _pooled(r, x, "sum", 0.0, window, strides, padding), len(window))


def _window_sum_grad(r, g, *, window, strides, padding, shape):
    """Deconvolution of g with a ones filter per channel (num_group = C): each output's g
    added back over its window, cropped to the input."""
    n, c = len(window), shape[-1]
    _spatial(r, r.eqn.inputs[0])
    ones = r.const(np.ones((c, 1) + _lift(n, window), r.eqn.inputs[0].aval.dtype))
    y = _spread(r, _first(r, g, n), ones, kernel=_lift(n, window),
                out=_lift(n, r.eqn.inputs[0].aval.shape[1:-1]), strides=_lift(n, strides),
                dilation=(1,) * max(n, 2), padding=_lift(n, padding, (0, 0)),
                size=_lift(n, shape[1:-1]), channels=c, groups=c)
    return _last(r, y, n)


def _window_max_grad(r, x, y, g, *, window, strides, padding):
    """g sent to the first maximum of each window, in row-major order: per window offset, a
    strided slice of x (padded with −inf) equal to y in windows not yet taken; the masked g's,
    stacked as C·K channels, added back by one Deconvolution with a one-hot filter per offset
    (num_group = C), cropped to the input."""
    xa, ya, ga = r.eqn.inputs
    n, c = len(window), xa.aval.shape[-1]
    _spatial(r, xa, ya, ga)
    window, strides = _lift(n, window), _lift(n, strides)
    out, pads = _lift(n, ya.aval.shape[1:-1]), _lift(n, padding, (0, 0))
    xp, _ = _pad(r, _first(r, x, n), pads, -np.inf, most=(0,) * len(pads))
    y, g = _first(r, y, n), _first(r, g, n)
    parts, open_ = [], None
    offsets = list(itertools.product(*(range(k) for k in window)))
    for i, at in enumerate(offsets):
        seen = S.slice(xp, begin=(None, None) + at, step=(None, None) + strides,
                       end=(None, None) + tuple(a + s * (o - 1) + 1
                                                for a, s, o in zip(at, strides, out)),
                       name=r.sub("at"))
        hit = S.broadcast_equal(seen, y, name=r.sub("eq"))
        if open_ is not None:
            hit = S.elemwise_mul(hit, open_, name=r.sub("first"))
        if i + 1 < len(offsets):
            before = S.ones_like(hit, name=r.sub("all")) if open_ is None else open_
            open_ = S.elemwise_sub(before, hit, name=r.sub("open"))
        parts.append(S.elemwise_mul(hit, g, name=r.sub("g")))
    stacked = S.reshape(S.stack(*parts, axis=2, name=r.sub("stack")), shape=(0, -3, -2),
                        name=r.sub("fold"))                              # (N, C·K, *out)
    onehot = np.eye(len(offsets), dtype=ga.aval.dtype).reshape((len(offsets), 1) + window)
    y = _spread(r, stacked, r.const(np.tile(onehot, (c,) + (1,) * (len(window) + 1))),
                kernel=window, out=out, strides=strides, dilation=(1,) * len(window),
                padding=pads, size=_lift(n, xa.aval.shape[1:-1]), channels=c, groups=c)
    return _last(r, y, n)


def _take(r, x, indices, *, axis):
    """take(x, indices, axis). MXNet's take clips an out-of-range index to the nearest row
    (mode='clip') where flux's NumPy backend raises an IndexError: not checked here."""
    y = S.take(x, indices, axis=axis, mode="clip", name=r.name)
    out = r.eqn.outputs[0]
    if r.eqn.inputs[1].aval.ndim == 0 and out.aval.ndim:    # a 0-d index is (1,) in MXNet
        y = S.reshape(y, shape=r.target(out.aval.shape, r.batch(out)), name=r.sub("shape"))
    return y


def _take_grad(r, g, indices, *, axis, shape):
    """zeros(shape) with g's rows added back at their indices (repeats summed): MXNet's
    ``_backward_gather_nd`` (gather_nd's gradient, a scatter-add) with the indexed axes
    moved first, then the row axis moved back to `axis`."""
    ia = r.eqn.inputs[1]
    if r.batch(r.eqn.outputs[0]):
        raise r.not_free("the gradient of a gather into a batch-sized value")
    k, rest = max(ia.aval.ndim, 1), shape[:axis] + shape[axis + 1:]
    if ia.aval.ndim == 0 and rest:                # a 0-d index: g gets its unit axis back
        g = S.reshape(g, shape=shape[:axis] + (1,) + shape[axis + 1:], name=r.sub("unit"))
    moved = tuple(range(axis, axis + k))
    perm = moved + tuple(a for a in range(len(rest) + k) if a not in moved)
    if perm != tuple(range(len(perm))):
        g = S.transpose(g, axes=perm, name=r.sub("rows"))
    ids = S.expand_dims(indices, axis=0, name=r.sub("ids"))
    y = S._internal._backward_gather_nd(g, ids, shape=(shape[axis],) + rest, name=r.name)
    if axis:
        y = S.transpose(y, axes=tuple(range(1, axis + 1)) + (0,) + tuple(
            range(axis + 1, len(shape))), name=r.sub("back"))
    return y


WINDOW_RULES = {
    P.conv_p: _conv,
    P.conv_input_grad_p: _conv_input_grad,
    P.conv_filter_grad_p: _conv_filter_grad,
    P.window_max_p: _window_max,
    P.window_max_grad_p: _window_max_grad,
    P.window_sum_p: _window_sum,
    P.window_sum_grad_p: _window_sum_grad,
    P.take_p: _take,
    P.take_grad_p: _take_grad,
}
"""Primitive -> rule for the window and gather primitives (merged into `RULES`)."""
