"""The IR: abstract values, variables, equations and graphs, and the graph printer.

A `Graph` is a list of equations ``outs = prim(ins; attrs)`` over `Var`s. Every Var has an
abstract value (`Aval`: shape and dtype). A graph's free variables are its data `inputs`, its
parameter inputs `param_vars` (bound to `Param` objects by identity, so a Param used twice is one
input) and its constants `consts`; its `outputs` are Vars or Literals. Every equation carries
the `Source` (user file, line, model frames) it was traced from.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flux.ir.source import Source, UNKNOWN


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
    """One equation: ``outputs = prim(inputs; attrs)``, with the source it was traced from.

    `attrs` are the primitive's static attributes (``axes=``, ``shape=``, ``dtype=`` ...)."""

    __slots__ = ("prim", "inputs", "outputs", "attrs", "source")

    def __init__(self, prim, inputs: list, outputs: list, attrs: dict, source: Source = UNKNOWN):
        self.prim = prim
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = attrs
        self.source = source

    def __repr__(self) -> str:
        return f"Eqn({self.prim.name}, {self.inputs} -> {self.outputs})"


@dataclass
class Graph:
    """A traced program: free variables (inputs, param_vars, consts), equations and outputs.

    `in_tree`/`out_tree` describe how the flat input and output lists nest into the Python
    values the model takes and returns (see `flux.ir.pytree`); carried hidden state, if any,
    comes after them. `param_objs[i]` is the `Param` bound to `param_vars[i]`;
    `const_values[i]` the array bound to `consts[i]`.
    """

    inputs: list
    param_vars: list
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
    """Hidden state carried between calls of stateful unrolled models (see `flux.transforms.carry`):
    the owner of each carried-state input, which come right after the model's own inputs, and
    of each carried-state output, right after the model's own outputs. Backends treat them as
    ordinary inputs and outputs."""

    def __str__(self) -> str:
        return format_graph(self)

    def __repr__(self) -> str:
        return (f"Graph({len(self.inputs)} inputs, {len(self.eqns)} equations, "
                f"{len(self.outputs)} outputs)")


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


def format_graph(graph: Graph, indent: str = "", namer: "_Namer | None" = None) -> str:
    """One equation per line with shapes and source lines, e.g.::

        { x0:(5, 10) ; W:(10, 20) b:(20,)
          t0:(5, 20) = matmul x0 W                 # affine.py:28 in Affine (first)
          ...
          return t2 }
    """
    namer = namer or _Namer()
    for i, var in enumerate(graph.inputs):
        namer.names[id(var)] = f"x{i}" if not indent else namer.name(var, "b")
    for i, var in enumerate(graph.param_vars):
        label = graph.param_names[i] if i < len(graph.param_names) else f"p{i}"
        namer.names[id(var)] = label
    for i, var in enumerate(graph.consts):
        namer.names[id(var)] = f"c{i}" if not indent else namer.name(var, "k")
    head = " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.inputs)
    if graph.param_vars:
        head += " ; " + " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.param_vars)
    if graph.consts:
        head += " ; " + " ".join(f"{namer.name(v)}:{v.aval}" for v in graph.consts)
    lines = [indent + "{ " + head]
    for eqn in graph.eqns:
        outs = " ".join(f"{namer.name(v)}:{v.aval}" for v in eqn.outputs)
        ins = " ".join(namer.name(v) for v in eqn.inputs)
        attrs = {k: v for k, v in eqn.attrs.items() if not isinstance(v, Graph)}
        body = f"{indent}  {outs} = {eqn.prim.name}{_param_text(attrs)} {ins}"
        where = eqn.source.short()
        if eqn.source.frames:
            frame = eqn.source.frames[0]
            where += f" in {frame.model}" + (f" ({frame.path})" if frame.path else "")
        lines.append(f"{body:<48} # {where}")
        for value in eqn.attrs.values():     # a loop's body, once, below its equation
            if isinstance(value, Graph):
                lines.append(format_graph(value, indent + "    ", namer))
    lines.append(indent + "  return " + " ".join(namer.name(v) for v in graph.outputs) + " }")
    return "\n".join(lines)
