"""Graphs for any batch size: whether a model's graph depends on its batch size only through
a batch axis, and where that axis is in every value.

flux graphs are traced for concrete shapes. An exporter that wants one graph for every batch
size (MXNet's shape-generic Symbols, ONNX's dynamic batch) calls `free_batch`: it traces the
model twice, at batch sizes `TRIAL` = (2, 3), and compares the two graphs equation by
equation. Where they agree the graph is static; where a size is 2 in one and 3 in the other
it is the batch; any other difference (a constant of batch size, a mean over the batch whose
literal 1/N differs, a reshape folding the batch into another axis, a Python loop over the
batch) means no single graph serves every batch size, and the error names the user's line.

The result, a `FreeBatch`, is the first graph with the batch positions marked: ``axes(var)``
are the batch axes of a value, ``attr_axes(eqn, name)`` the positions of an attribute tuple
(``shape=`` of reshape and broadcast_to) that hold the batch size. A lowering emits a
shape-generic operator there (MXNet ``0``/``-1`` codes, an ONNX symbolic dimension).
"""
from __future__ import annotations

import numpy as np

from flux.errors import FluxValueError
from flux.ir.graph import Aval, Graph, Literal
from flux.ir.pytree import Tree
from flux.backends.tracing import trace

__all__ = ["TRIAL", "FreeBatch", "free_batch", "with_batch"]

TRIAL = (2, 3)
"""The two batch sizes `free_batch` traces at (small: constants traced with the batch stay
cheap; not 1: a size-1 axis broadcasts and would hide the batch)."""


class FreeBatch:
    """A graph traced at batch size ``TRIAL[0]``, valid for every batch size, with its batch
    positions: `axes` and `attr_axes` (see the module docstring)."""

    def __init__(self, graph: Graph, axes: dict, attrs: dict):
        self.graph = graph
        self._axes = axes      # id(Var) -> tuple of batch axes
        self._attrs = attrs    # (id(Eqn), attr name) -> tuple of batch positions

    def axes(self, var) -> tuple:
        """The axes of `var` (a Var of `graph`) whose size is the batch size; () for none."""
        return self._axes.get(id(var), ())

    def attr_axes(self, eqn, name: str) -> tuple:
        """The positions of ``eqn.attrs[name]`` (a tuple of sizes) that are the batch size."""
        return self._attrs.get((id(eqn), name), ())

    def shape(self, var) -> tuple:
        """`var`'s shape with None at its batch axes."""
        batch = self.axes(var)
        return tuple(None if i in batch else d for i, d in enumerate(var.aval.shape))


def with_batch(avals, size: int, axis: int = 0) -> list:
    """`avals` with the size of `axis` set to `size` wherever their rank reaches it."""
    return [Aval(a.shape[:axis] + (size,) + a.shape[axis + 1:], a.dtype) if a.ndim > axis
            else a for a in avals]


def free_batch(model, avals, in_tree: Tree, what: str, axis: int = 0) -> FreeBatch:
    """`model`'s graph for inputs like `avals` (flat, as `abstract_inputs` gives them) with a
    free batch size on `axis` of every input of rank > `axis`; raises a FluxValueError naming
    the user's line where the graph depends on the batch size otherwise."""
    if not any(a.ndim > axis for a in avals):
        raise FluxValueError(f"{what}: no input has a batch axis (axis {axis}); the inputs "
                             f"are {', '.join(str(a.shape) for a in avals) or 'none'}")
    graphs = [trace(model, with_batch(avals, size, axis), in_tree, loops=False)
              for size in TRIAL]
    return _Comparison(what).run(*graphs)


class _Comparison:
    """The walk over two graphs traced at the two `TRIAL` sizes."""

    def __init__(self, what: str):
        self.what = what
        self.axes: dict = {}
        self.attrs: dict = {}

    def run(self, one: Graph, two: Graph) -> FreeBatch:
        for group in ("inputs", "param_vars", "consts", "outputs", "eqns"):
            if len(getattr(one, group)) != len(getattr(two, group)):
                self._fail(None, f"the number of {_WORDS[group]} changes with the batch size "
                                 f"({len(getattr(one, group))} at batch {TRIAL[0]}, "
                                 f"{len(getattr(two, group))} at {TRIAL[1]}): the model's "
                                 f"Python code depends on it (a loop over the batch?)")
        for a, b in zip(one.inputs + one.param_vars + one.consts,
                        two.inputs + two.param_vars + two.consts):
            self._var(None, a, b)
        for a, b in zip(one.const_values, two.const_values):
            if np.shape(a) != np.shape(b) or not np.array_equal(a, b):
                self._fail(None, "a constant array changes with the batch size")
        for e, f in zip(one.eqns, two.eqns):
            self._eqn(e, f)
        for a, b in zip(one.outputs, two.outputs):
            self._atom(None, a, b)
        return FreeBatch(one, self.axes, self.attrs)

    def _eqn(self, e, f) -> None:
        if e.prim is not f.prim or len(e.inputs) != len(f.inputs) \
                or len(e.outputs) != len(f.outputs) or set(e.attrs) != set(f.attrs):
            self._fail(e, f"the computation changes with the batch size ({e.prim.name} at "
                          f"batch {TRIAL[0]}, {f.prim.name} at {TRIAL[1]})")
        for a, b in zip(e.inputs, f.inputs):
            self._atom(e, a, b)
        for a, b in zip(e.outputs, f.outputs):
            self._var(e, a, b)
        for name, value in e.attrs.items():
            positions = _batch_positions(value, f.attrs[name])
            if positions is None:
                self._fail(e, f"its {name}= changes with the batch size ({value!r:.60} at "
                              f"batch {TRIAL[0]}, {f.attrs[name]!r:.60} at {TRIAL[1]})")
            if positions:
                self.attrs[(id(e), name)] = positions

    def _atom(self, eqn, a, b) -> None:
        if isinstance(a, Literal) or isinstance(b, Literal):
            if not (isinstance(a, Literal) and isinstance(b, Literal) and _same_number(a, b)):
                self._fail(eqn, f"a number in it changes with the batch size ({_text(a)} at batch "
                                f"{TRIAL[0]}, {_text(b)} at {TRIAL[1]}: a mean or count over the "
                                f"batch?)")
            return
        self._var(eqn, a, b)

    def _var(self, eqn, a, b) -> None:
        if a.aval.dtype != b.aval.dtype:
            self._fail(eqn, "a dtype changes with the batch size")
        positions = _batch_positions(a.aval.shape, b.aval.shape)
        if positions is None:
            self._fail(eqn, f"a value's shape changes with the batch size other than by its "
                            f"batch axis ({a.aval.shape} at batch {TRIAL[0]}, {b.aval.shape} "
                            f"at {TRIAL[1]})")
        if positions:
            self.axes[id(a)] = positions

    def _fail(self, eqn, why: str):
        where, trace = "", []
        if eqn is not None:          # the model frames name the user's line; else the source
            trace = eqn.source.frames
            where = f" in {eqn.prim.name}" + ("" if trace else
                                              f" at {eqn.source.file}:{eqn.source.line}")
        raise FluxValueError(f"{self.what}: the model's graph is not the same for every batch "
                             f"size{where}: {why}. Pass example inputs to get a graph for "
                             f"one batch size", trace=trace)


_WORDS = {"inputs": "inputs", "param_vars": "parameters", "consts": "constants",
          "outputs": "outputs", "eqns": "equations"}


def _batch_positions(one, two):
    """The positions where `one` (at batch ``TRIAL[0]``) and `two` hold the two trial sizes;
    () where equal; None where they differ otherwise."""
    if _same(one, two):
        return ()
    if not (isinstance(one, tuple) and isinstance(two, tuple) and len(one) == len(two)):
        return None
    positions = []
    for i, (a, b) in enumerate(zip(one, two)):
        if isinstance(a, int) and isinstance(b, int) and (a, b) == TRIAL:
            positions.append(i)
        elif not _same(a, b):
            return None
    return tuple(positions)


def _same_number(a: Literal, b: Literal) -> bool:
    return a.value == b.value or (a.value != a.value and b.value != b.value)     # NaN


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return False


def _text(atom) -> str:
    return repr(atom.value.item()) if isinstance(atom, Literal) else f"an array {atom.aval}"
