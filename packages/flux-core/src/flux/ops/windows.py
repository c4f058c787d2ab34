"""Convolution and pooling as functions: `conv`, `max_pool`, `avg_pool` (what the layers
`Conv`, `MaxPool` and `AvgPool` call), with padding as users write it.

Channels last: ``x: (batch, *spatial, channels)`` (or one point without the batch axis),
filters ``w: (*window, channels / groups, out)``. ``padding`` is ``"valid"`` (none),
``"same"`` (the output has ``ceil(size / stride)`` positions; an odd total puts the extra row
after, as TensorFlow and Keras do), an int (both sides of every axis), or one int or
``(before, after)`` pair per spatial axis.
"""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxTypeError, FluxValueError
from flux.ir import primitives as P
from flux.ir.primitives.windows import window_sum_p
from flux.ops import numpy_api as api

__all__ = ["conv", "max_pool", "avg_pool", "padding_pairs", "as_tuple"]


def as_tuple(value, n: int, what: str) -> tuple:
    """An int or a sequence of `n` ints as a tuple of `n` ints ≥ 1 (a FluxValueError if not)."""
    values = (value,) * n if isinstance(value, numbers.Integral) else tuple(value)
    if len(values) != n or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                   for v in values):
        raise FluxTypeError(f"{what} takes an int or {n} ints (one per spatial axis), "
                            f"found {value!r}")
    if any(v < 1 for v in values):
        raise FluxValueError(f"{what} must be ≥ 1, found {value!r}")
    return tuple(int(v) for v in values)


def padding_pairs(padding, window, strides, dilation, spatial) -> tuple:
    """`padding` as one ``(before, after)`` pair per spatial axis, for inputs of `spatial` size."""
    n = len(window)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0),) * n
        if mode == "same":
            pairs = []
            for size, k, s, d in zip(spatial, window, strides, dilation):
                total = max((-(-size // s) - 1) * s + d * (k - 1) + 1 - size, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
    elif isinstance(padding, numbers.Integral) and not isinstance(padding, bool) and padding >= 0:
        return ((int(padding), int(padding)),) * n
    elif isinstance(padding, (tuple, list)) and len(padding) == n:
        pairs = tuple((p, p) if isinstance(p, numbers.Integral) else tuple(p) for p in padding)
        if all(len(p) == 2 and all(isinstance(v, numbers.Integral) and v >= 0 for v in p)
               for p in pairs):
            return tuple((int(a), int(b)) for a, b in pairs)
    raise FluxValueError(f"padding is 'valid', 'same', an int ≥ 0, or one int or (before, "
                         f"after) pair per spatial axis ({n}); found {padding!r}")


def _batched(x, n: int, what: str):
    """`x` with a batch axis, and whether one was added (a single point)."""
    x = api._as_tracer_or_array(x)
    if x.ndim == n + 1:
        return api.expand_dims(x, 0), True
    if x.ndim != n + 2:
        raise FluxValueError(f"{what}: a {n}-D window takes inputs (batch, {n} spatial axes, "
                             f"channels) or one point ({n} spatial axes, channels); found "
                             f"shape {tuple(x.shape)}")
    return x, False


def conv(x, w, stride=1, padding="valid", dilation=1, groups=1):
    """N-d cross-correlation (no kernel flip, as PyTorch and Keras):
    ``y[n, o..., c'] = Σ_k Σ_c x_pad[n, o·stride + k·dilation, c] w[k..., c, c']``, the
    channels in `groups` independent groups.

    >>> x = np.arange(5.0).reshape(1, 5, 1)
    >>> conv(x, np.ones((2, 1, 1)))[0, :, 0]
    array([1., 3., 5., 7.])
    """
    w = api.lift(w)
    n = np.ndim(w) - 2
    if n < 1:
        raise FluxValueError(f"conv: filters have shape (*window, in, out), found "
                             f"{tuple(np.shape(w))}")
    x, single = _batched(x, n, "conv")
    x, w = api.promote(x, w)                         # NumPy's rules, as for x @ W
    strides = as_tuple(stride, n, "conv: stride")
    dilation = as_tuple(dilation, n, "conv: dilation")
    pads = padding_pairs(padding, np.shape(w)[:-2], strides, dilation, x.shape[1:-1])
    y = P.conv_p(x, w, strides=strides, padding=pads, dilation=dilation, groups=int(groups))
    return y[0] if single else y


def _pool(x, window, stride, padding, what):
    window = as_tuple(window, len(window) if not isinstance(window, numbers.Integral) else 1,
                      f"{what}: window")
    n = len(window)
    x, single = _batched(x, n, what)
    strides = window if stride is None else as_tuple(stride, n, f"{what}: stride")
    pads = padding_pairs(padding, window, strides, (1,) * n, x.shape[1:-1])
    return x, single, dict(window=window, strides=strides, padding=pads)


def max_pool(x, window, stride=None, padding="valid"):
    """The maximum of each window (padding never wins: it counts as −∞); `stride` defaults to
    the window.

    >>> max_pool(np.array([[1.0], [3.0], [2.0], [0.0]]), (2,))[:, 0]
    array([3., 2.])
    """
    x, single, attrs = _pool(x, window, stride, padding, "max_pool")
    y = P.window_max_p(x, **attrs)
    return y[0] if single else y


def avg_pool(x, window, stride=None, padding="valid"):
    """The mean of each window over the input's elements in it (padding is not counted, as
    in Keras and PyTorch's ``count_include_pad=False``); `stride` defaults to the window.

    >>> avg_pool(np.array([[1.0], [3.0], [2.0]]), (2,), stride=1, padding=((0, 1),))[:, 0]
    array([2. , 2.5, 2. ])
    """
    x, single, attrs = _pool(x, window, stride, padding, "avg_pool")
    y = P.window_sum_p(x, **attrs)
    ones = np.ones((1,) + tuple(x.shape[1:-1]) + (1,), x.dtype)
    counts = window_sum_p.impl(ones, **attrs)        # elements of the input in each window
    y = y * (1 / counts).astype(x.dtype)
    return y[0] if single else y
