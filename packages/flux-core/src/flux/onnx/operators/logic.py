"""ONNX's comparisons, boolean operators and Where: NumPy's functions on flux values (bool
results; ``Xor`` is ``a ≠ b`` on bools, ``Not`` is ``a = False``)."""
from __future__ import annotations

import numpy as np

from flux.onnx.operators.arguments import folded
from flux.onnx.operators.registry import operator

_COMPARISONS = {
    "Greater": np.greater, "GreaterOrEqual": np.greater_equal, "Less": np.less,
    "LessOrEqual": np.less_equal, "Equal": np.equal, "And": np.logical_and,
    "Or": np.logical_or,
}


def _compare(fn):
    def apply(node, a, b):
        return fn(a, b)
    apply.__name__ = fn.__name__
    return apply


for _op, _fn in _COMPARISONS.items():
    operator(_op)(_compare(_fn))


@operator("Xor")
def xor(node, a, b):
    """a xor b = (a ≠ b), for bools."""
    return np.not_equal(a, b)


@operator("Not")
def not_(node, x):
    """not x."""
    return np.logical_not(x)


@operator("Where", since=9)
def where(node, condition, x, y):
    """x where the condition holds, else y (all three broadcast)."""
    return np.where(condition, x, y)


@folded("BitwiseAnd", "BitwiseOr", "BitwiseXor", since=18)
def bitwise(node, a, b):
    """Bitwise and, or, xor of integers (known values only)."""
    fn = {"BitwiseAnd": np.bitwise_and, "BitwiseOr": np.bitwise_or,
          "BitwiseXor": np.bitwise_xor}[node.op_type]
    return fn(a, b)


@folded("BitwiseNot", since=18)
def bitwise_not(node, x):
    """The bitwise complement of integers (known values only)."""
    return np.invert(x)


@folded("BitShift", since=11)
def bit_shift(node, x, shift):
    """x shifted left or right (`direction`) by `shift` bits, unsigned (known values only)."""
    if node.attr("direction") == "LEFT":
        return np.left_shift(x, shift)
    return np.right_shift(x, shift)
