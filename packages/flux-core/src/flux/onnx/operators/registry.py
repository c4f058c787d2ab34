"""The table of ONNX operators flux imports, and what an operator's import function is given.

An import function takes the `Node` being imported and its input values, and returns the
node's output value, or a tuple of them for a node with several outputs. Input values are
NumPy arrays where the value is known when the model is traced (initializers that are not
Params, ``Constant`` nodes, the results of ``Shape`` and of any operator whose inputs are all
known), flux values otherwise (the traced inputs, Params and what is computed from them), and
None for an optional input the node leaves out. Functions are written with NumPy's API and
flux's functions, which work on both: an operator on known values is computed at once, in
NumPy, and what depends on the model's inputs is traced into flux's primitives.

Register a function for one or more operator types with `operator`; ``since`` is the first
opset of the default domain it follows (an operator whose meaning changed gets one function
per meaning, and `lookup` takes the newest one not after the model's opset)::

    @operator("Relu")
    def relu(node, x):
        return flux.relu(x)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from flux.errors import FluxValueError
from flux.onnx.proto import require_onnx

__all__ = ["OPERATORS", "operator", "lookup", "Node", "known", "static"]

OPERATORS: dict[str, list[tuple[int, Callable]]] = {}
"""``op_type -> [(since, function), ...]`` for the default ONNX domain, oldest first."""


def operator(*op_types: str, since: int = 1):
    """Register the decorated function as the import of `op_types` from opset `since` on."""
    def register(fn: Callable) -> Callable:
        for op_type in op_types:
            versions = OPERATORS.setdefault(op_type, [])
            if any(v == since for v, _ in versions):
                raise AssertionError(f"ONNX {op_type} (opset {since} on) is imported twice")
            versions.append((since, fn))
            versions.sort(key=lambda pair: pair[0])
        return fn
    return register


def lookup(op_type: str, opset: int) -> Callable | None:
    """The import function of `op_type` in a model of default-domain `opset`, or None."""
    found = None
    for since, fn in OPERATORS.get(op_type, ()):
        if since <= opset:
            found = fn
    return found


class Node:
    """One ONNX node as its import function sees it.

    `op_type`, `name` (never empty: ``"<op_type> #<index>"`` where the file has none),
    `inputs` and `outputs` (value names; ``""`` for a left-out optional one), `opset` (the
    model's default-domain opset), and the attributes through `attr`. `run_graph` runs a
    subgraph attribute (the bodies of ``If``, ``Loop`` and ``Scan``) on given values; the
    importer that builds the node supplies it.
    """

    def __init__(self, proto, opset: int, index: int = 0, run_graph: Callable | None = None):
        self.proto = proto
        self.op_type = proto.op_type
        self.name = proto.name or f"{proto.op_type} #{index}"
        self.inputs = list(proto.input)
        self.outputs = list(proto.output)
        self.opset = opset
        self.run_graph = run_graph
        self._attrs = {a.name: a for a in proto.attribute}

    def attr(self, name: str, default=None):
        """The attribute `name` as a Python value (ints, floats, strings as `str`, lists,
        tensors as NumPy arrays, graphs as GraphProto), or `default` when the node has none."""
        if name not in self._attrs:
            return default
        attribute = self._attrs[name]
        onnx = require_onnx()
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            return value.decode("utf-8")
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode("utf-8") for v in value]
        if hasattr(value, "dims") and hasattr(value, "data_type"):      # a TensorProto
            return onnx.numpy_helper.to_array(value)
        return value

    def has(self, name: str) -> bool:
        return name in self._attrs

    def where(self) -> str:
        """How errors name the node: ``node 'conv1' (Conv)``."""
        return f"node {self.name!r} ({self.op_type})"

    def error(self, message: str) -> FluxValueError:
        """A `FluxValueError` about this node (``"<where>: <message>"``), to raise."""
        return FluxValueError(f"ONNX {self.where()}: {message}")


def known(value) -> bool:
    """Whether `value` is known when the model is traced (a NumPy array or a Python number)."""
    return isinstance(value, (np.ndarray, np.generic, int, float, bool))


def static(node: Node, value, what: str) -> np.ndarray:
    """`value` as a NumPy array, for an input whose value flux needs when it traces the model
    (a shape, axes, pads, indices of a slice); a clear error naming the node when it depends
    on the model's inputs."""
    if known(value):
        return np.asarray(value)
    raise node.error(
        f"its input {what} must be known when the model is traced (flux's shapes are static), "
        f"but it is an input of the model or computed from one. Make it an initializer or a "
        f"Constant, "
        f"or fix it when loading: flux.onnx.load(path, constants={{name: array}})")
