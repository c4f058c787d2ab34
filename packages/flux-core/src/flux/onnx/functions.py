"""Operators ONNX defines as functions of other operators (``Attention``,
``RMSNormalization``, ...): whether one is (`expandable`), its body for a node (`function_body`:
a fixed function, or one ONNX makes for the node's attributes and input types), and a body's
nodes renamed into the graph that uses it (`renamed`)."""
from __future__ import annotations

import numpy as np

from flux.onnx.operators import Node
from flux.onnx.proto import GRAPH, GRAPHS, require_onnx

__all__ = ["schema_of", "expandable", "defaults", "function_body", "static_body", "renamed"]


def schema_of(op_type: str, opset: int):
    onnx = require_onnx()
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except Exception:                            # (onnx's SchemaError: no such operator)
        return None


def expandable(op_type: str, opset: int) -> bool:
    """Whether ONNX defines `op_type` (at `opset`) as a function of other operators."""
    schema = schema_of(op_type, opset)
    return schema is not None and (schema.has_function or
                                   schema.has_context_dependent_function)


def defaults(node: Node) -> dict:
    """The node's attributes (AttributeProtos by name), with its schema's defaults for those
    it leaves out."""
    schema = schema_of(node.op_type, node.opset)
    found = {} if schema is None else {
        name: a.default_value for name, a in schema.attributes.items()
        if a.default_value.name}
    found.update((a.name, a) for a in node.proto.attribute)
    return found


def function_body(node: Node, args: list):
    """The FunctionProto ONNX defines `node`'s operator as, for the node's opset (made for
    its attributes and its inputs' types where the definition depends on them)."""
    onnx = require_onnx()
    schema = schema_of(node.op_type, node.opset)
    if schema.has_function:
        return static_body(schema, node.opset)
    function = onnx.FunctionProto()
    versions = list(schema.context_dependent_function_opset_versions)
    chosen = max([v for v in versions if v <= node.opset] or [min(versions)])
    proto = onnx.NodeProto()
    proto.CopyFrom(node.proto)
    del proto.attribute[:]
    proto.attribute.extend(defaults(node).values())
    types = [_type_of(a).SerializeToString() for a in args]
    function.ParseFromString(schema.get_context_dependent_function_with_opset_version(
        chosen, proto.SerializeToString(), types))
    return function


def static_body(schema, opset: int):
    """The FunctionProto of an operator defined by a fixed function, for `opset`."""
    onnx = require_onnx()
    versions = list(schema.function_opset_versions)
    chosen = max([v for v in versions if v <= opset] or [min(versions)])
    function = onnx.FunctionProto()
    function.ParseFromString(schema.get_function_with_opset_version(chosen))
    return function


def _type_of(value):
    onnx = require_onnx()
    if value is None:
        return onnx.TypeProto()
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(value.dtype))
    return onnx.helper.make_tensor_type_proto(elem, [int(d) for d in value.shape])


def renamed(inner, names: dict, prefix: str, attributes: dict, scope: set):
    """A copy of a function body's node with its values renamed (the function's inputs and
    outputs to the node's, the rest under `prefix`; inside its subgraphs too, where they
    read the function's values) and attribute references resolved."""
    onnx = require_onnx()

    def rename(v: str) -> str:
        if v in names:
            return names[v]
        return prefix + v if v in scope else v

    node = onnx.NodeProto()
    node.CopyFrom(inner)
    node.ClearField("input")
    node.ClearField("output")
    node.ClearField("attribute")
    node.input.extend(rename(v) for v in inner.input)
    node.output.extend(rename(v) for v in inner.output)
    for attribute in inner.attribute:
        if attribute.ref_attr_name:
            if attribute.ref_attr_name not in attributes:
                continue
            resolved = onnx.AttributeProto()
            resolved.CopyFrom(attributes[attribute.ref_attr_name])
            resolved.name = attribute.name
            node.attribute.append(resolved)
            continue
        copy = onnx.AttributeProto()
        copy.CopyFrom(attribute)
        for graph in ([copy.g] if copy.type == GRAPH else list(copy.graphs)
                      if copy.type == GRAPHS else []):
            _rename_reads(graph, rename)
        node.attribute.append(copy)
    return node


def _rename_reads(graph, rename) -> None:
    """Rename, in place, what `graph` (and its subgraphs) reads from the scope around it."""
    for node in graph.node:
        renamed = [rename(v) for v in node.input]
        del node.input[:]
        node.input.extend(renamed)
        for attribute in node.attribute:
            for inner in ([attribute.g] if attribute.type == GRAPH else
                          list(attribute.graphs) if attribute.type == GRAPHS else []):
                _rename_reads(inner, rename)
    for output in graph.output:
        output.name = rename(output.name)
