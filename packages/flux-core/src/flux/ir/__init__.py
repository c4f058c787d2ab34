"""flux's IR, public for backend authors: graphs of equations over shaped variables, the
closed primitive set, and the trace that records them.

A `Graph` is a list of `Eqn`s ``outputs = prim(inputs; attrs)`` over `Var`s, each with an
`Aval` (shape and dtype); scalars are `Literal`s. `str(graph)` prints one equation per line
with shapes and the user's source lines. A backend implements every `Primitive` of
`PRIMITIVES` (see `flux.ir.primitives` for each one's definition and the groups).
"""
from flux.ir.graph import Atom, Aval, Eqn, Graph, Literal, Var, format_graph
from flux.ir.passes import GraphCheckError, check_graph, dce
from flux.ir.primitives import COMPARISONS, ELEMENTWISE, PRIMITIVES, REDUCTIONS, VIEWS
from flux.ir.source import Source
from flux.ir.trace import Primitive, Trace, Tracer, bind

__all__ = [
    "Graph", "Eqn", "Var", "Literal", "Atom", "Aval", "Source", "format_graph", "check_graph",
    "dce", "GraphCheckError", "Primitive", "PRIMITIVES", "ELEMENTWISE", "REDUCTIONS", "VIEWS",
    "COMPARISONS", "Trace", "Tracer", "bind",
]
