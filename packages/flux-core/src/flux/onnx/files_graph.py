"""Reading an ONNX file safely, checks 6 and 7 (see `flux.onnx.files`): the graph's order, its
names, and its initializers' declared shapes."""
from __future__ import annotations

from flux.errors import FluxValueError
from flux.onnx.proto import GRAPH, GRAPHS, type_name

__all__ = ["check_graph"]


# -- 6, 7. the graph -----------------------------------------------------------------------------


def check_graph(graph, name: str, outer: frozenset) -> None:
    """Topological order, single definitions, defined outputs (check 6) and initializers
    against declared shapes (check 7), in `graph` and its subgraphs; `outer` holds the names
    the graphs around it define."""
    where = f"the graph {graph.name!r}" if graph.name else "the graph"
    defined: set[str] = set()
    initializers = {t.name for t in graph.initializer}
    for value in [i.name for i in graph.input] + sorted(initializers):
        defined.add(value)
    producer = {}
    for index, node in enumerate(graph.node):
        for out in node.output:
            if not out:
                continue
            if out in defined or out in producer:
                raise FluxValueError(f"{name}: value {out!r} is defined twice in {where} (by "
                                     f"{_node_name(node, index)} and earlier); ONNX values "
                                     f"are defined once")
            producer[out] = index
    for index, node in enumerate(graph.node):
        for value in node.input:
            if value and value not in defined and value not in outer:
                if value in producer:
                    raise FluxValueError(_order_error(graph, name, index, value, producer))
                raise FluxValueError(f"{name}: {_node_name(node, index)} in {where} uses "
                                     f"{value!r}, which nothing defines")
        inner_scope = outer | defined
        for attribute in node.attribute:
            bodies = ([attribute.g] if attribute.type == GRAPH else
                      list(attribute.graphs) if attribute.type == GRAPHS else [])
            for body in bodies:
                check_graph(body, name, frozenset(inner_scope))
        defined.update(out for out in node.output if out)
    outputs = [o.name for o in graph.output]
    for value in outputs:
        if value not in defined and value not in outer:
            raise FluxValueError(f"{name}: {where} has output {value!r}, which nothing defines")
    repeated = sorted({v for v in outputs if outputs.count(v) > 1})
    if repeated:
        raise FluxValueError(f"{name}: {where} lists output(s) {', '.join(repeated)} more "
                             f"than once")
    _check_initializer_shapes(graph, name)


def _node_name(node, index: int) -> str:
    return f"node {node.name or f'{node.op_type} #{index}'!r} ({node.op_type})"


def _order_error(graph, name: str, index: int, value: str, producer: dict) -> str:
    """A node uses a value a later node defines: a cycle, if following the uses from that
    producer leads back to the node; otherwise nodes out of topological order."""
    nodes = graph.node
    node = nodes[index]
    pending, seen = [producer[value]], set()
    while pending:
        current = pending.pop()
        if current == index:
            return (f"{name}: the graph has a cycle: {_node_name(node, index)} uses {value!r}, "
                    f"which depends on its own output; an ONNX graph is acyclic")
        if current in seen:
            continue
        seen.add(current)
        pending.extend(producer[v] for v in nodes[current].input if v in producer)
    return (f"{name}: {_node_name(node, index)} uses {value!r} before "
            f"{_node_name(nodes[producer[value]], producer[value])} defines it; ONNX nodes are "
            f"listed in topological order")


def _check_initializer_shapes(graph, name: str) -> None:
    declared = {}
    for info in list(graph.input) + list(graph.value_info) + list(graph.output):
        if info.type.HasField("tensor_type"):
            declared.setdefault(info.name, info.type.tensor_type)
    for tensor in graph.initializer:
        kind = declared.get(tensor.name)
        if kind is None:
            continue
        if kind.elem_type and kind.elem_type != tensor.data_type:
            raise FluxValueError(
                f"{name}: initializer {tensor.name!r} holds {type_name(tensor.data_type)} "
                f"values, but the graph declares {tensor.name!r} as "
                f"{type_name(kind.elem_type)}")
        if not kind.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
        if len(dims) != len(tensor.dims) or any(
                d is not None and d != t for d, t in zip(dims, tensor.dims)):
            shown = tuple(d if d is not None else "?" for d in dims)
            raise FluxValueError(
                f"{name}: initializer {tensor.name!r} has shape {tuple(tensor.dims)}, but the "
                f"graph declares {tensor.name!r} with shape {shown}")
