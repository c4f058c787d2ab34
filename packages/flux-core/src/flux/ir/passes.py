"""Passes over graphs: the checker (`check_graph`, on for every graph in tests) and `dce`."""
from __future__ import annotations

import os

import numpy as np

from flux.ir.graph import Aval, Graph, Var

__all__ = ["check_graph", "dce", "maybe_check", "GraphCheckError", "CHECK_GRAPHS"]


# -- passes -------------------------------------------------------------------------------------


def dce(graph: Graph) -> Graph:
    """Drop equations whose outputs nothing uses (every primitive is free of side effects)."""
    live = {id(a) for a in graph.outputs if isinstance(a, Var)}
    kept = []
    for eqn in reversed(graph.eqns):
        if any(id(v) in live for v in eqn.outputs):
            kept.append(eqn)
            live.update(id(a) for a in eqn.inputs if isinstance(a, Var))
    kept.reverse()
    used = [i for i, v in enumerate(graph.consts) if id(v) in live]
    graph.eqns = kept
    graph.consts = [graph.consts[i] for i in used]
    graph.const_values = [graph.const_values[i] for i in used]
    return graph


# -- checking -----------------------------------------------------------------------------------


class GraphCheckError(AssertionError):
    """A graph broke an IR invariant: a bug in flux (or in a pass), never the user's fault."""


def check_graph(graph: Graph) -> Graph:
    """Verify the IR invariants of `graph` and return it.

    Every Var is defined once before use; free variables are inputs, params or consts; each
    equation's output avals are what its primitive's shape rule gives for its inputs; params
    and their Param objects correspond one to one; a loop's body graph is checked too.
    """
    defined: set[int] = set()

    def define(var, what):
        if not isinstance(var, Var):
            raise GraphCheckError(f"{what} is {var!r}, not a Var")
        if id(var) in defined:
            raise GraphCheckError(f"{what} {var!r} is defined twice")
        defined.add(id(var))

    for var in graph.inputs:
        define(var, "input")
    for var in graph.param_vars:
        define(var, "param")
    for var in graph.consts:
        define(var, "const")
    if len(graph.param_vars) != len(graph.param_objs):
        raise GraphCheckError("params and param_objs differ in length")
    if len({id(p) for p in graph.param_objs}) != len(graph.param_objs):
        raise GraphCheckError("a Param is bound to two graph params")
    for var, obj in zip(graph.param_vars, graph.param_objs):
        if var.aval.shape != tuple(obj.shape) or var.aval.dtype != obj.dtype:
            raise GraphCheckError(f"param {var!r} does not match its Param {obj!r}")
    for var, value in zip(graph.consts, graph.const_values):
        if var.aval != Aval(np.shape(value), np.asarray(value).dtype):
            raise GraphCheckError(f"const {var!r} does not match its value")
    for eqn in graph.eqns:
        for atom in eqn.inputs:
            if isinstance(atom, Var) and id(atom) not in defined:
                raise GraphCheckError(f"{eqn!r} uses {atom!r} before it is defined")
        expected = eqn.prim.abstract_eval(*(a.aval for a in eqn.inputs), **eqn.attrs)
        got = [v.aval for v in eqn.outputs]
        if list(expected) != got:
            raise GraphCheckError(f"{eqn!r}: outputs are {got}, shape rule gives {expected}")
        for var in eqn.outputs:
            define(var, f"output of {eqn.prim.name}")
        for body in (v for v in eqn.attrs.values() if isinstance(v, Graph)):
            if body.param_vars:
                raise GraphCheckError(f"{eqn!r}: a loop body takes no params (they are inputs)")
            check_graph(body)
    for atom in graph.outputs:
        if isinstance(atom, Var) and id(atom) not in defined:
            raise GraphCheckError(f"graph output {atom!r} is never defined")
    return graph


CHECK_GRAPHS = os.environ.get("FLUX_CHECK_GRAPHS", "") not in ("", "0")
"""When True (the test suite sets it), every graph flux builds is checked as it is made."""


def maybe_check(graph: Graph) -> Graph:
    return check_graph(graph) if CHECK_GRAPHS else graph

