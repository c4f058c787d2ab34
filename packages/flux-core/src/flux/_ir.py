"""The IR: abstract values, variables, equations and graphs; the graph printer and checker.

A `Graph` is a list of equations ``outs = prim(ins; params)`` over `Var`s. Every Var has an
abstract value (`Aval`: shape and dtype). A graph's free variables are its data `inputs`, its
parameter inputs `params` (bound to `Param` objects by identity, so a Param used twice is one
input) and its constants `consts`; its `outputs` are Vars or Literals. Every equation carries
the `Source` (user file, line, model frames) it was traced from.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._source import Source, UNKNOWN


class Aval:
    """The abstract value of an array: its shape and dtype, nothing else."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape, dtype):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __eq__(self, other) -> bool:
        return isinstance(other, Aval) and self.shape == other.shape and self.dtype == other.dtype

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))

    def __repr__(self) -> str:
        return f"Aval({self.shape}, {self.dtype})"

    def __str__(self) -> str:
        return f"{self.shape}{'' if self.dtype == np.float32 else ' ' + self.dtype.name}"


_ids = itertools.count()


class Var:
    """A value in a graph, identified by the object itself; `aval` is its shape and dtype."""

    __slots__ = ("aval", "id")

    def __init__(self, aval: Aval):
        self.aval = aval
        self.id = next(_ids)

    def __repr__(self) -> str:
        return f"Var#{self.id}{self.aval}"


class Literal:
    """A scalar constant written into an equation (a Python number given a dtype)."""

    __slots__ = ("value", "aval")

    def __init__(self, value, dtype):
        self.aval = Aval((), dtype)
        self.value = self.aval.dtype.type(value)

    shape = property(lambda self: ())
    ndim = property(lambda self: 0)
    dtype = property(lambda self: self.aval.dtype)

    def __repr__(self) -> str:
        return f"{self.value!r}"


Atom = Var | Literal


class Eqn:
    """One equation: ``outputs = prim(inputs; params)``, with the source it was traced from."""

    __slots__ = ("prim", "inputs", "outputs", "params", "source")

    def __init__(self, prim, inputs: list, outputs: list, params: dict, source: Source = UNKNOWN):
        self.prim = prim
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.params = params
        self.source = source

    def __repr__(self) -> str:
        return f"Eqn({self.prim.name}, {self.inputs} -> {self.outputs})"


@dataclass
class Graph:
    """A traced program: free variables (inputs, params, consts), equations and outputs.

    `in_tree`/`out_tree` describe how the flat input and output lists nest into the Python
    values the model takes and returns (see `flux._pytree`); carried hidden state, if any,
    comes after them. `param_objs[i]` is the `Param`
    bound to `params[i]`; `const_values[i]` the array bound to `consts[i]`.
    """

    inputs: list
    params: list
    param_objs: list
    consts: list
    const_values: list
    eqns: list
    outputs: list
    in_tree: Any = None
    out_tree: Any = None
    param_names: list = field(default_factory=list)
    carry_in: list = field(default_factory=list)
    carry_out: list = field(default_factory=list)
    """Hidden state carried between calls of stateful unrolled models (see `flux._unroll`):
    the owner of each carried-state input, which come right after the model's own inputs, and
    of each carried-state output, right after the model's own outputs. Backends treat them as
    ordinary inputs and outputs."""

    def __str__(self) -> str:
        return format_graph(self)


# -- printing -----------------------------------------------------------------------------------


class _Namer:
    def __init__(self):
        self.names: dict[int, str] = {}
        self.count = 0

    def name(self, atom, prefix: str = "t") -> str:
        if isinstance(atom, Literal):
            return repr(atom.value.item())
        got = self.names.get(id(atom))
        if got is None:
            got = self.names[id(atom)] = f"{prefix}{self.count}"
            self.count += 1
        return got


def _param_text(params: dict) -> str:
    if not params:
        return ""
    return "[" + ", ".join(f"{k}={_short(v)}" for k, v in params.items()) + "]"


def _short(value) -> str:
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_graph(graph: Graph) -> str:
    """One equation per line with shapes and source lines, e.g.::

        { x0:(5, 10) ; W:(10, 20) b:(20,)
          t0:(5, 20) = matmul x0 W                 # affine.py:28 in Affine (first)
          ...
          return t2 }
    """
    namer = _Namer()
    for i, var in enumerate(graph.inputs):
        namer.names[id(var)] = f"x{i}"
    for i, var in enumerate(graph.params):
        label = graph.param_names[i] if i < len(graph.param_names) else f"p{i}"
        namer.names[id(var)] = label
    for i, var in enumerate(graph.consts):
        namer.names[id(var)] = f"c{i}"
    head = " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.inputs)
    if graph.params:
        head += " ; " + " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.params)
    if graph.consts:
        head += " ; " + " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.consts)
    lines = ["{ " + head]
    for eqn in graph.eqns:
        outs = " ".join(f"{namer.name(v)}:{v.aval}" for v in eqn.outputs)
        ins = " ".join(namer.name(v) for v in eqn.inputs)
        body = f"  {outs} = {eqn.prim.name}{_param_text(eqn.params)} {ins}"
        where = eqn.source.short()
        if eqn.source.frames:
            frame = eqn.source.frames[0]
            where += f" in {frame.model}" + (f" ({frame.path})" if frame.path else "")
        lines.append(f"{body:<48} # {where}")
    lines.append("  return " + " ".join(namer.name(v) for v in graph.outputs) + " }")
    return "\n".join(lines)


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
    and their Param objects correspond one to one.
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
    for var in graph.params:
        define(var, "param")
    for var in graph.consts:
        define(var, "const")
    if len(graph.params) != len(graph.param_objs):
        raise GraphCheckError("params and param_objs differ in length")
    if len({id(p) for p in graph.param_objs}) != len(graph.param_objs):
        raise GraphCheckError("a Param is bound to two graph params")
    for var, obj in zip(graph.params, graph.param_objs):
        if var.aval.shape != tuple(obj.shape) or var.aval.dtype != obj.dtype:
            raise GraphCheckError(f"param {var!r} does not match its Param {obj!r}")
    for var, value in zip(graph.consts, graph.const_values):
        if var.aval != Aval(np.shape(value), np.asarray(value).dtype):
            raise GraphCheckError(f"const {var!r} does not match its value")
    for eqn in graph.eqns:
        for atom in eqn.inputs:
            if isinstance(atom, Var) and id(atom) not in defined:
                raise GraphCheckError(f"{eqn!r} uses {atom!r} before it is defined")
        expected = eqn.prim.abstract_eval(*(a.aval for a in eqn.inputs), **eqn.params)
        got = [v.aval for v in eqn.outputs]
        if list(expected) != got:
            raise GraphCheckError(f"{eqn!r}: outputs are {got}, shape rule gives {expected}")
        for var in eqn.outputs:
            define(var, f"output of {eqn.prim.name}")
    for atom in graph.outputs:
        if isinstance(atom, Var) and id(atom) not in defined:
            raise GraphCheckError(f"graph output {atom!r} is never defined")
    return graph


CHECK_GRAPHS = os.environ.get("FLUX_CHECK_GRAPHS", "") not in ("", "0")
"""When True (the test suite sets it), every graph flux builds is checked as it is made."""


def maybe_check(graph: Graph) -> Graph:
    return check_graph(graph) if CHECK_GRAPHS else graph
