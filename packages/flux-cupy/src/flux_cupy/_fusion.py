"""Fusion: the equations of a graph in execution order, with chains of elementwise equations
of one shape gathered into `Group`s, each run as one generated kernel.

An elementwise equation joins the open group of its result's shape, or starts one; a group is
closed (placed in the order) as soon as anything outside it needs one of its values: another
group or an equation that is not fused (a matmul, a reduction, a view ...). So a group never
waits for a value computed after it, and every kernel reads values that already exist. Values
defined in a group and used outside it (or returned) are its outputs; the others live only in
registers.
"""
from __future__ import annotations

from flux.ir import Literal, Var

from ._codegen import fusable

__all__ = ["Group", "schedule", "MAX_INPUTS"]

MAX_INPUTS = 64
"""A group takes at most this many inputs (kernel parameters are limited to a few KB)."""


class Group:
    """Elementwise equations of one iteration `shape`, run as one kernel."""

    def __init__(self, shape: tuple):
        self.shape = tuple(shape)
        self.eqns: list = []
        self.defined: set[int] = set()
        self.inputs: list[Var] = []
        self.outputs: list[Var] = []
        self._inputs: set[int] = set()

    def add(self, eqn) -> None:
        self.eqns.append(eqn)
        for atom in eqn.inputs:
            if isinstance(atom, Var) and id(atom) not in self.defined \
                    and id(atom) not in self._inputs:
                self._inputs.add(id(atom))
                self.inputs.append(atom)
        self.defined.add(id(eqn.outputs[0]))

    def new_inputs(self, eqn) -> int:
        return sum(1 for a in eqn.inputs if isinstance(a, Var) and id(a) not in self.defined
                   and id(a) not in self._inputs)

    def __repr__(self) -> str:
        return f"Group({self.shape}, {[e.prim.name for e in self.eqns]})"


def schedule(graph) -> list:
    """The steps of `graph` in execution order: `Group`s and unfused `Eqn`s."""
    steps: list = []
    open_groups: dict[tuple, Group] = {}
    owner: dict[int, Group] = {}          # id(Var) -> the group that defines it

    def close(group: Group) -> None:
        if open_groups.get(group.shape) is group:
            del open_groups[group.shape]
            steps.append(group)

    for eqn in graph.eqns:
        producers = {id(owner[id(a)]): owner[id(a)] for a in eqn.inputs
                     if isinstance(a, Var) and id(a) in owner}
        if fusable(eqn):
            shape = eqn.outputs[0].aval.shape
            group = open_groups.get(shape)
            if eqn.prim.name == "broadcast_to" and group is not None and any(
                    id(g) == id(group) for g in producers.values()):
                group = None          # (a broadcast of a value of another shape: never here)
            if group is not None and len(group.inputs) + group.new_inputs(eqn) > MAX_INPUTS:
                close(group)
                group = None
            for other in producers.values():
                if other is not group:
                    close(other)      # its values are this equation's inputs: it runs first
            if group is None:
                group = open_groups[shape] = Group(shape)
            group.add(eqn)
            owner[id(eqn.outputs[0])] = group
        else:
            for other in producers.values():
                close(other)
            steps.append(eqn)
    for group in list(open_groups.values()):
        close(group)
    _outputs(graph, steps)
    return steps


def _outputs(graph, steps) -> None:
    """Each group's outputs: its values used by another step or returned by the graph."""
    used_outside: set[int] = {id(a) for a in graph.outputs if isinstance(a, Var)}
    for step in steps:
        inputs = step.inputs if isinstance(step, Group) else [
            a for a in step.inputs if not isinstance(a, Literal)]
        used_outside.update(id(a) for a in inputs)
    for step in steps:
        if isinstance(step, Group):
            step.outputs = [e.outputs[0] for e in step.eqns if id(e.outputs[0]) in used_outside]
