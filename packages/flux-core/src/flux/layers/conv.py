"""Convolution and pooling layers: `Conv` (1-, 2- and 3-D; `Conv2D` is the seed era's name),
`MaxPool`, `AvgPool`, channels last: ``(batch, *spatial, channels)``."""
from __future__ import annotations

import numbers

from flux.errors import FluxValueError
from flux.model.net import net
from flux.model.param import Param, initn, param
from flux.ops.elementwise import weights_dtype
from flux.ops.windows import as_tuple, avg_pool, conv, max_pool, padding_pairs

__all__ = ["Conv", "Conv2D", "MaxPool", "AvgPool"]


def _window(window, what: str) -> tuple:
    n = 1 if isinstance(window, numbers.Integral) else len(tuple(window))
    return as_tuple(window, n, f"{what}: window")


def _check_padding(padding, window, strides, dilation, what: str):
    """Refuse a malformed padding now, not at the first call (sizes do not matter here)."""
    try:
        padding_pairs(padding, window, strides, dilation, (max(window),) * len(window))
    except FluxValueError as error:
        raise FluxValueError(f"{what}: {error.message}") from None
    return padding


@net
class Conv:
    """An N-d convolution layer, ``y = conv(x, W) + b`` (cross-correlation, as PyTorch and
    Keras compute it; see `flux.conv`):

        y[n, o..., c'] = Σ_k Σ_c x_pad[n, o·stride + k·dilation, c] W[k..., c, c'] + b[c']

    ``Conv(window, in, out, stride=1, padding="valid", dilation=1, groups=1, init=initn,
    dtype=None)`` draws ``W: (*window, in / groups, out)`` and ``b: (out,)``. A batch
    ``(N, *spatial, in)`` gives ``(N, *out_spatial, out)``; one point ``(*spatial, in)`` gives
    ``(*out_spatial, out)``.

    >>> import numpy as np
    >>> c = Conv((3, 3), 1, 16)
    >>> c(np.ones((8, 28, 28, 1))).shape
    (8, 26, 26, 16)
    >>> Conv((3, 3), 1, 16, stride=2, padding="same")(np.ones((8, 28, 28, 1))).shape
    (8, 14, 14, 16)
    """

    W: Param
    b: Param

    def __init__(self, window, n_in: int, n_out: int, *, stride=1, padding="valid",
                 dilation=1, groups: int = 1, init=initn, dtype=None):
        window = _window(window, "Conv")
        n = len(window)
        groups = as_tuple(groups, 1, "Conv: groups")[0]
        n_in, n_out = as_tuple(n_in, 1, "Conv: in")[0], as_tuple(n_out, 1, "Conv: out")[0]
        if n_in % groups or n_out % groups:
            raise FluxValueError(f"Conv: groups={groups} must divide both the {n_in} input "
                                 f"and the {n_out} output channels")
        self.stride = as_tuple(stride, n, "Conv: stride")
        self.dilation = as_tuple(dilation, n, "Conv: dilation")
        self.padding = _check_padding(padding, window, self.stride, self.dilation, "Conv")
        self.groups = groups
        self.W = param(init(*window, n_in // groups, n_out), dtype)
        self.b = param(init(n_out), dtype)

    def __call__(self, x):
        x = weights_dtype(x, self.W)
        return conv(x, self.W, self.stride, self.padding, self.dilation, self.groups) + self.b

    def __repr__(self) -> str:
        *window, per_group, n_out = self.W.shape
        options = "".join(f", {name}={value!r}" for name, value, default in (
            ("stride", self.stride, (1,) * len(window)), ("padding", self.padding, "valid"),
            ("dilation", self.dilation, (1,) * len(window)), ("groups", self.groups, 1))
            if value != default)
        return f"Conv({tuple(window)}, {per_group * self.groups}, {n_out}{options})"


def Conv2D(window, n_in: int, n_out: int, **options) -> Conv:
    """The seed era's name: a `Conv` with a 2-D window, ``Conv2D((3, 3), 1, 16)``."""
    if len(_window(window, "Conv2D")) != 2:
        raise FluxValueError(f"Conv2D takes a 2-D window such as (3, 3), found {window!r}; "
                             f"use Conv for other ranks")
    return Conv(window, n_in, n_out, **options)


def _pool_settings(pool, window, stride, padding) -> None:
    """A pool's checked window, stride (None: the window) and padding, as its fields."""
    name = type(pool).__name__
    pool.window = _window(window, name)
    pool.stride = None if stride is None else as_tuple(stride, len(pool.window),
                                                       f"{name}: stride")
    pool.padding = _check_padding(padding, pool.window, pool.stride or pool.window,
                                  (1,) * len(pool.window), name)


def _pool_repr(pool) -> str:
    return f"{type(pool).__name__}({pool.window}" \
        + (f", stride={pool.stride}" if pool.stride else "") \
        + (f", padding={pool.padding!r}" if pool.padding != "valid" else "") + ")"


@net
class MaxPool:
    """The maximum over each window: ``MaxPool(window, stride=None, padding="valid")``, the
    stride defaulting to the window (padding never wins; see `flux.max_pool`).

    >>> import numpy as np
    >>> MaxPool((2, 2))(np.ones((8, 28, 28, 16))).shape
    (8, 14, 14, 16)
    """

    def __init__(self, window, stride=None, padding="valid"):
        _pool_settings(self, window, stride, padding)

    def __call__(self, x):
        return max_pool(x, self.window, self.stride, self.padding)

    __repr__ = _pool_repr


@net
class AvgPool:
    """The mean over each window of the input's elements in it (padding is not counted):
    ``AvgPool(window, stride=None, padding="valid")`` (see `flux.avg_pool`).

    >>> import numpy as np
    >>> AvgPool((2, 2), stride=1)(np.ones((8, 28, 28, 16))).shape
    (8, 27, 27, 16)
    """

    def __init__(self, window, stride=None, padding="valid"):
        _pool_settings(self, window, stride, padding)

    def __call__(self, x):
        return avg_pool(x, self.window, self.stride, self.padding)

    __repr__ = _pool_repr
