"""Loop-by-loop references for the window primitives (convolution, pooling) and gathers, as
the formulas read: every output position, every window offset, one small product each.
Slow and obviously right; the cases keep them tiny."""
from __future__ import annotations

import itertools

import numpy as np

__all__ = ["conv", "conv_input_grad", "conv_filter_grad", "pool", "max_pool_grad",
           "sum_pool_grad", "take_grad"]


def _positions(x_shape, window, strides, padding, dilation):
    out = [(n + lo + hi - d * (k - 1) - 1) // s + 1 for n, k, s, d, (lo, hi)
           in zip(x_shape[1:-1], window, strides, dilation, padding)]
    for o in itertools.product(*(range(n) for n in out)):
        for k in itertools.product(*(range(n) for n in window)):
            yield o, k, tuple(oi * s + ki * d - lo for oi, ki, s, d, (lo, _)
                              in zip(o, k, strides, dilation, padding))


def _inside(at, shape) -> bool:
    return all(0 <= a < n for a, n in zip(at, shape[1:-1]))


def _out_shape(x_shape, window, strides, padding, dilation, channels):
    return (x_shape[0],) + tuple((n + lo + hi - d * (k - 1) - 1) // s + 1 for n, k, s, d, (lo, hi)
                                 in zip(x_shape[1:-1], window, strides, dilation, padding)) \
        + (channels,)


def conv(x, w, strides, padding, dilation, groups):
    """y[n, o, c'] = Σ_k Σ_c x[n, o·s + k·d − before, c] w[k, c, c'] within each group."""
    window, cg, out_c = w.shape[:-2], w.shape[-2], w.shape[-1]
    og = out_c // groups
    y = np.zeros(_out_shape(x.shape, window, strides, padding, dilation, out_c), x.dtype)
    for o, k, at in _positions(x.shape, window, strides, padding, dilation):
        if _inside(at, x.shape):
            for j in range(groups):
                y[(slice(None),) + o + (slice(j * og, (j + 1) * og),)] += \
                    x[(slice(None),) + at + (slice(j * cg, (j + 1) * cg),)] \
                    @ w[k][:, j * og:(j + 1) * og]
    return y


def conv_input_grad(g, w, strides, padding, dilation, groups, shape):
    """The adjoint of `conv` in x: each g[n, o] sent back through w to the inputs it read."""
    window, cg, out_c = w.shape[:-2], w.shape[-2], w.shape[-1]
    og = out_c // groups
    dx = np.zeros(shape, g.dtype)
    for o, k, at in _positions(shape, window, strides, padding, dilation):
        if _inside(at, shape):
            for j in range(groups):
                dx[(slice(None),) + at + (slice(j * cg, (j + 1) * cg),)] += \
                    g[(slice(None),) + o + (slice(j * og, (j + 1) * og),)] \
                    @ w[k][:, j * og:(j + 1) * og].T
    return dx


def conv_filter_grad(x, g, strides, padding, dilation, groups, shape):
    """The adjoint of `conv` in w: Σ_n x[n, o·s + k·d]ᵀ g[n, o] over positions o."""
    window, cg, out_c = shape[:-2], shape[-2], shape[-1]
    og = out_c // groups
    dw = np.zeros(shape, x.dtype)
    for o, k, at in _positions(x.shape, window, strides, padding, dilation):
        if _inside(at, x.shape):
            for j in range(groups):
                dw[k][:, j * og:(j + 1) * og] += \
                    x[(slice(None),) + at + (slice(j * cg, (j + 1) * cg),)].T \
                    @ g[(slice(None),) + o + (slice(j * og, (j + 1) * og),)]
    return dw


def pool(x, window, strides, padding, how):
    """The max, sum or mean (of the input elements inside: padding not counted) per window."""
    dilation = (1,) * len(window)
    shape = _out_shape(x.shape, window, strides, padding, dilation, x.shape[-1])
    parts: dict = {}
    for o, _, at in _positions(x.shape, window, strides, padding, dilation):
        if _inside(at, x.shape):
            parts.setdefault(o, []).append(x[(slice(None),) + at + (slice(None),)])
    y = np.zeros(shape, x.dtype)
    for o, values in parts.items():
        stack = np.stack(values)
        y[(slice(None),) + o + (slice(None),)] = {"max": stack.max(0), "sum": stack.sum(0),
                                                  "mean": stack.mean(0)}[how]
    return y


def max_pool_grad(x, g, window, strides, padding):
    """g[n, o, c] to the first input position (row-major in the window) holding the max."""
    dilation = (1,) * len(window)
    y = pool(x, window, strides, padding, "max")
    dx = np.zeros(x.shape, g.dtype)
    done = np.zeros(y.shape, bool)
    for o, _, at in _positions(x.shape, window, strides, padding, dilation):
        if _inside(at, x.shape):
            here = (slice(None),) + o + (slice(None),)
            hit = (x[(slice(None),) + at + (slice(None),)] == y[here]) & ~done[here]
            dx[(slice(None),) + at + (slice(None),)] += np.where(hit, g[here], 0)
            done[here] |= hit
    return dx


def sum_pool_grad(g, window, strides, padding, shape):
    """Each g[n, o] added to every input position its window covers."""
    dx = np.zeros(shape, g.dtype)
    for o, _, at in _positions(shape, window, strides, padding, (1,) * len(window)):
        if _inside(at, shape):
            dx[(slice(None),) + at + (slice(None),)] += g[(slice(None),) + o + (slice(None),)]
    return dx


def take_grad(g, indices, size):
    """Rows of g added to the rows (axis 0) the indices name, one index at a time."""
    out = np.zeros((size,) + g.shape[indices.ndim:], g.dtype)
    for position, row in zip(np.ndindex(*indices.shape), indices.reshape(-1)):
        out[row] += g[position]
    return out
