"""The Python operators and ndarray methods of `Tracer` (and of scalar `Literal`s), installed
when flux is imported; `Param` reuses the same table (`NUMERIC_METHODS`), so Params act like
their arrays inside models."""
from __future__ import annotations

import numbers

from flux.ir.graph import Literal
from flux.ir.trace import Tracer
from flux.ops.dispatch import array_function, array_ufunc
from flux.ops.numpy_api import (
    absolute, add, astype, clip, divide, dot, equal, getitem,
    greater, greater_equal, less, less_equal, logical_and, logical_not, logical_or, matmul, max,
    mean, min, multiply, negative, not_equal, positive, power, ravel, reshape, squeeze, std,
    subtract, sum, swapaxes, transpose, var)

def _varargs(values: tuple):
    """``x.reshape(2, 3)`` and ``x.reshape((2, 3))`` alike, as ndarray methods take them."""
    if len(values) == 1 and not isinstance(values[0], numbers.Integral):
        return values[0]
    return values


def _swap(fn):
    return lambda self, other: fn(other, self)


_METHODS = {
    "__array_ufunc__": array_ufunc,
    "__array_function__": array_function,
    "__add__": add, "__radd__": _swap(add),
    "__sub__": subtract, "__rsub__": _swap(subtract),
    "__mul__": multiply, "__rmul__": _swap(multiply),
    "__truediv__": divide, "__rtruediv__": _swap(divide),
    "__pow__": power, "__rpow__": _swap(power),
    "__matmul__": matmul, "__rmatmul__": _swap(matmul),
    "__neg__": negative, "__pos__": positive, "__abs__": absolute,
    "__gt__": greater, "__ge__": greater_equal, "__lt__": less, "__le__": less_equal,
    "__eq__": equal, "__ne__": not_equal,
    "__and__": logical_and, "__rand__": _swap(logical_and),
    "__or__": logical_or, "__ror__": _swap(logical_or),
    "__invert__": logical_not,
    "__getitem__": getitem,
    "sum": sum, "mean": mean, "max": max, "min": min, "var": var, "std": std,
    "dot": dot, "clip": clip, "ravel": ravel, "squeeze": squeeze, "astype": astype,
    "flatten": ravel,
    "reshape": lambda self, *shape, **kw: reshape(self, _varargs(shape), **kw),
    "transpose": lambda self, *axes: transpose(self, _varargs(axes) if axes else None),
    "swapaxes": swapaxes,
    "T": property(lambda self: transpose(self)),
}

for _name, _method in _METHODS.items():
    setattr(Tracer, _name, _method)
    if _name.startswith("__") and _name not in (
            "__array_ufunc__", "__array_function__", "__getitem__", "__eq__", "__ne__",
            "__gt__", "__ge__", "__lt__", "__le__"):
        setattr(Literal, _name, _method)   # arithmetic on scalar constants (folded when traced)

NUMERIC_METHODS = _METHODS
"""The operator and method table, reused by `Param` so Params act like arrays in models."""
