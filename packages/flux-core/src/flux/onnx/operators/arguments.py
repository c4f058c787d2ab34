"""What import functions read besides their data: static integer arguments (axes, shapes,
pads, given as attributes in early opsets and as inputs later), whether a value is traced,
and the registration of operators that flux computes only on known values.

An operator *on known values only* (``folded``) is one flux's primitives cannot express
(``Mod`` of floats, bit shifts, ``TopK``, ``NonZero`` ...): when all its inputs are known
while tracing (shape arithmetic, constants) it is computed in NumPy like any known node; when
one depends on the model's inputs, the error says that flux has no primitive for it.
"""
from __future__ import annotations

import numpy as np

from flux.ir.trace import Tracer
from flux.onnx.operators.registry import known, operator, static

__all__ = ["traced", "ints", "axis_of", "axes_of", "attr_or_input", "folded", "NO_PRIMITIVE"]

NO_PRIMITIVE = (
    "no flux primitive expresses {op}, so flux computes it only on values known when the "
    "model is traced (constants, shapes), and its input {which} is computed from the model's "
    "inputs: its inputs must be known when the model is traced (make them initializers or "
    "Constants, or fix graph inputs with flux.onnx.load(path, constants={{name: array}}))")


def traced(*values) -> bool:
    """Whether any of `values` is a flux traced value (computed from the model's inputs)."""
    return any(isinstance(v, Tracer) for v in values)


def ints(node, value, what: str) -> list:
    """A static integer argument (an input that must be known, or an attribute's list) as a
    list of Python ints."""
    array = static(node, value, what)
    if array.dtype.kind not in "biu":
        if array.size and not np.all(np.asarray(array) == np.round(array)):
            raise node.error(f"{what} must hold integers, found {array.tolist()}")
    return [int(v) for v in np.asarray(array).reshape(-1)]


def axis_of(node, axis: int, ndim: int, what: str = "axis") -> int:
    """`axis` (negative counts from the end) as a position in ``0..ndim-1``."""
    if not -ndim <= axis < max(ndim, 1):
        raise node.error(f"{what} {axis} is out of range for a value with {ndim} axes")
    return axis % ndim if ndim else 0


def axes_of(node, axes, ndim: int, what: str = "axes") -> list:
    """Each axis of `axes` as a position in ``0..ndim-1``, sorted; repeats refused."""
    found = sorted(axis_of(node, a, ndim, what) for a in axes)
    if len(set(found)) != len(found):
        raise node.error(f"{what} {list(axes)} repeats an axis")
    return found


def attr_or_input(node, value, name: str, since: int, default=None):
    """An integer list given as attribute `name` before opset `since` and as an input (whose
    value must be known) from it on; `default` when neither is given."""
    if node.opset < since:
        found = node.attr(name)
        return default if found is None else [int(v) for v in np.ravel(found)]
    if value is None:
        return default
    return ints(node, value, name)


def folded(*op_types: str, since: int = 1):
    """Register a NumPy function ``fn(node, *arrays)`` as the import of `op_types` on known
    values only (see the module docstring)."""
    def register(fn):
        def on_known(node, *inputs):
            for i, value in enumerate(inputs):
                if value is not None and not known(value):
                    name = node.inputs[i] if i < len(node.inputs) else str(i)
                    raise node.error(NO_PRIMITIVE.format(op=node.op_type, which=f"{i} "
                                                         f"({name!r})"))
            return fn(node, *inputs)
        on_known.__name__ = fn.__name__
        on_known.__doc__ = fn.__doc__
        on_known.folded = True
        operator(*op_types, since=since)(on_known)
        return fn
    return register
