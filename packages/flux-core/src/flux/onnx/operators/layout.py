"""Channels-first values that are views of channels-last ones, remembered while a graph runs.

ONNX's convolutions and pools are channels first, ``(N, C, *spatial)``; flux's are channels
last, ``(N, *spatial, C)``, so each is imported between two transposes (`channels_last` in,
`channels_first` out). Between two such operators a graph usually only applies elementwise
functions (ReLU after a convolution, then a pool); computed on the transposed view, they read
and write memory across its strides, and the next operator transposes back. So the view
`channels_first` makes is remembered with the channels-last value it shows: `channels_last`
of that view is the value itself (no transposes in between), and `through_view` computes a
one-input elementwise operator on the value and shows the result as a view again. The values
are the same either way; only where the work runs changes.

The memory lasts one run of an imported graph (`remembering`), in this thread.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

__all__ = ["channels_last", "channels_first", "through_view", "remembering", "ELEMENTWISE"]

ELEMENTWISE = frozenset({
    "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "ThresholdedRelu", "Shrink", "Swish",
    "Exp", "Log", "Abs", "Neg", "Sqrt", "Sin", "Cos", "Reciprocal", "Sign", "Identity"})
"""Operators of one input computed elementwise (their attributes are scalars)."""


class _Memory(threading.local):
    views: dict | None = None      # id(view) -> (view, the channels-last value it shows)


_memory = _Memory()


@contextlib.contextmanager
def remembering():
    """Remember views for the run inside (the outermost run of a graph; nested runs, of
    subgraphs and function bodies, share it)."""
    if _memory.views is not None:
        yield
        return
    _memory.views = {}
    try:
        yield
    finally:
        _memory.views = None


def channels_last(x):
    """``(N, C, *spatial) -> (N, *spatial, C)``: the value a remembered view shows, else a
    transposed view of `x`."""
    shown = _shown(x)
    return shown if shown is not None else np.moveaxis(x, 1, -1)


def channels_first(y):
    """``(N, *spatial, C) -> (N, C, *spatial)``, remembered as a view of `y`."""
    view = np.moveaxis(y, -1, 1)
    if _memory.views is not None and np.ndim(y) > 2:
        _memory.views[id(view)] = (view, y)
    return view


def through_view(fn, node, x):
    """``fn(node, x)`` for a one-input elementwise operator: computed on the channels-last
    value when `x` is a remembered view of one, and shown channels first again."""
    shown = _shown(x)
    if shown is None:
        return fn(node, x)
    return channels_first(fn(node, shown))


def _shown(x):
    entry = _memory.views.get(id(x)) if _memory.views is not None else None
    return entry[1] if entry is not None and entry[0] is x else None
