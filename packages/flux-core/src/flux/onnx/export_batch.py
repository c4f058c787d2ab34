"""The batch axis of an exported graph: which sizes in a traced graph are the batch size, so
that `flux.onnx.export(..., dynamic_batch=True)` writes one ONNX graph for every batch size.

flux traces for concrete shapes. `batch_shapes` traces the model at two batch sizes (the
examples' n and n + 1, or `TRIAL` = (2, 3) for examples of batch 1, which broadcasts and
would hide the batch) and compares the two graphs equation by equation, loop bodies
included. A size that is ``k·n`` in the first graph and ``k·(n + 1)`` in the second is ``k``
times the batch (`BatchDim`); equal sizes are static.
Anything else that changes with the batch size means that no single graph serves every
batch size, and `batch_shapes` refuses the model with a `FluxValueError` naming the
equation, its primitive and the user's line: a number in an equation (the 1/N of a mean over
the batch), a constant array of batch shape other than one row repeated over the batch (which
the exporter writes as that row expanded to the batch), an attribute that is not a shape, or
a different sequence of equations (a Python loop over the batch).

The result, `BatchShapes`, answers for the first graph: `dims` gives a
value's shape with `BatchDim`s at its batch positions, `attr_dims` the same for a shape
attribute (``shape=`` of reshape, broadcast_to and the gradient primitives), `fill` the row
of a constant of batch shape that repeats one row over the batch.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from flux.errors import FluxError, FluxValueError
from flux.ir.graph import Aval, Graph, Literal

__all__ = ["TRIAL", "BatchDim", "BatchShapes", "batch_shapes", "with_batch", "describe"]

TRIAL = (2, 3)
"""The two batch sizes the model is traced at when the examples do not give one of 2 or
more."""

SHAPE_ATTRS = frozenset({"shape"})
"""Attributes that are shapes (tuples of sizes) and may hold the batch size."""


class BatchDim:
    """A size that is `k` times the batch size."""

    __slots__ = ("k",)

    def __init__(self, k: int):
        self.k = int(k)

    def __eq__(self, other) -> bool:
        return isinstance(other, BatchDim) and other.k == self.k

    def __hash__(self) -> int:
        return hash(("batch", self.k))

    def __repr__(self) -> str:
        return "batch" if self.k == 1 else f"{self.k}*batch"


class BatchShapes:
    """The batch positions of a graph (see the module docstring); `graph` is that graph."""

    def __init__(self, graph: Graph, dims: dict, attrs: dict, fills: dict):
        self.graph = graph
        self._dims = dims      # id(Var) -> dims tuple, for values with a batch position
        self._attrs = attrs    # (id(Eqn), name) -> dims tuple
        self._fills = fills    # id(const Var) -> its one value

    def dims(self, atom) -> tuple:
        """`atom`'s shape, with a `BatchDim` at each position that scales with the batch."""
        if isinstance(atom, Literal):
            return ()
        return self._dims.get(id(atom), atom.aval.shape)

    def attr_dims(self, eqn, name: str) -> tuple:
        """``eqn.attrs[name]`` (a shape), with `BatchDim`s where it scales with the batch."""
        return self._attrs.get((id(eqn), name), tuple(eqn.attrs[name]))

    def fill(self, var):
        """The row (size 1 along the batch axes) that constant `var` repeats over the batch,
        when it is such a constant of batch shape (written as the row expanded to the batch),
        else None."""
        return self._fills.get(id(var))


def with_batch(avals, batched, size: int) -> list:
    """`avals` with axis 0 set to `size` for those `batched` says have a batch axis."""
    return [Aval((size,) + a.shape[1:], a.dtype) if b else a for a, b in zip(avals, batched)]


def batch_shapes(trace: Callable, avals, batched, what: str, traced=None) -> BatchShapes:
    """Trace ``trace(avals)`` at two batch sizes (axis 0 of the inputs that `batched` marks)
    and compare: the graph at the first with its batch positions, or a FluxValueError naming
    the line where the graph depends on the batch size otherwise.

    The sizes are the examples' batch size n and n + 1 when every batched input has the same
    n ≥ 2 (`traced`, the graph already traced at the examples, is then the first graph, and
    the export is the graph of the examples), else `TRIAL`."""
    first = {a.shape[0] for a, b in zip(avals, batched) if b}
    sizes = (first.pop(), 0) if len(first) == 1 else (0, 0)
    sizes = (sizes[0], sizes[0] + 1) if sizes[0] >= 2 else TRIAL
    graphs = [traced] if traced is not None and sizes != TRIAL else []
    for size in sizes[len(graphs):]:
        try:
            graphs.append(trace(with_batch(avals, batched, size)))
        except FluxError as error:
            message = (f"{what}: with dynamic_batch=True the first axis of every input is its "
                       f"batch axis, but the model does not trace at batch size {size}: "
                       f"{error.message}. Its graph depends on the batch size; pass "
                       f"dynamic_batch=False to export it for the example's shapes")
            raise FluxValueError(message, trace=error.trace) from error
    return _Comparison(what, sizes).run(*graphs)


def describe(eqn) -> str:
    """An equation as errors name it: ``reshape[shape=(4, 3)] of (2, 6) at model.py:12``."""
    attrs = ", ".join(f"{k}={_short(v)}" for k, v in eqn.attrs.items() if not isinstance(v, Graph))
    shapes = ", ".join(str(a.aval.shape) for a in eqn.inputs)
    return (f"{eqn.prim.name}{f'[{attrs}]' if attrs else ''} of {shapes or 'no inputs'} at "
            f"{eqn.source.file}:{eqn.source.line}")


def _short(value) -> str:
    text = f"array{value.shape}" if isinstance(value, np.ndarray) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Comparison:
    """The walk over the two graphs (and their loop bodies) traced at batch `sizes`."""

    def __init__(self, what: str, sizes: tuple):
        self.what = what
        self.sizes = sizes
        self.dims: dict = {}
        self.attrs: dict = {}
        self.fills: dict = {}

    def at(self, one, two) -> str:
        """``<one> at batch n, <two> at n + 1``: what differs between the two traces."""
        return f"{one} at batch {self.sizes[0]}, {two} at {self.sizes[1]}"

    def run(self, one: Graph, two: Graph) -> BatchShapes:
        self._graph(one, two)
        if any(a is not b for a, b in zip(one.param_objs, two.param_objs)):
            self._fail(None, one, "the model's parameters change with the batch size")
        return BatchShapes(one, self.dims, self.attrs, self.fills)

    def _graph(self, one: Graph, two: Graph) -> None:
        for group in ("eqns", "inputs", "param_vars", "consts", "outputs"):
            m, n = len(getattr(one, group)), len(getattr(two, group))
            if m != n:
                where = _divergence(one.eqns, two.eqns) if group == "eqns" else None
                self._fail(where, one, f"the number of {group.replace('_vars', 's')} changes "
                                       f"with the batch size ({self.at(m, n)}): the model's "
                                       f"Python code depends on it")
        for a, b in zip(one.inputs + one.param_vars + one.consts,
                        two.inputs + two.param_vars + two.consts):
            self._var(None, a, b)
        for var, a, b in zip(one.consts, one.const_values, two.const_values):
            self._const(one, var, np.asarray(a), np.asarray(b))
        for e, f in zip(one.eqns, two.eqns):
            self._eqn(e, f)
        for a, b in zip(one.outputs, two.outputs):
            self._atom(None, a, b, one)

    def _eqn(self, e, f) -> None:
        if e.prim is not f.prim or len(e.inputs) != len(f.inputs) \
                or len(e.outputs) != len(f.outputs) or set(e.attrs) != set(f.attrs):
            self._fail(e, None, f"the computation changes with the batch size "
                                f"({self.at(e.prim.name, f.prim.name)})")
        for a, b in zip(e.inputs, f.inputs):
            self._atom(e, a, b)
        for a, b in zip(e.outputs, f.outputs):
            self._var(e, a, b)
        for name, value in e.attrs.items():
            other = f.attrs[name]
            if isinstance(value, Graph):
                self._graph(value, other)
            elif name in SHAPE_ATTRS:
                dims = _dims(tuple(value), tuple(other), self.sizes)
                if dims is None:
                    self._fail(e, None, f"its {name}= changes with the batch size other than "
                                        f"by a multiple of it "
                                        f"({self.at(tuple(value), tuple(other))})")
                if dims != tuple(value):
                    self.attrs[(id(e), name)] = dims
            elif not same(value, other):
                self._fail(e, None, f"its {name}= changes with the batch size "
                                    f"({self.at(_short(value), _short(other))})")

    def _atom(self, eqn, a, b, graph=None) -> None:
        if isinstance(a, Literal) or isinstance(b, Literal):
            if not (isinstance(a, Literal) and isinstance(b, Literal) and _same_number(a, b)):
                self._fail(eqn, graph, f"a number in it changes with the batch size "
                                       f"({self.at(_text(a), _text(b))}: a mean or a count "
                                       f"over the batch?)")
            return
        self._var(eqn, a, b, graph)

    def _var(self, eqn, a, b, graph=None) -> None:
        if a.aval.dtype != b.aval.dtype:
            self._fail(eqn, graph, "a value's dtype changes with the batch size")
        dims = _dims(a.aval.shape, b.aval.shape, self.sizes)
        if dims is None:
            self._fail(eqn, graph, f"a value's shape changes with the batch size other than "
                                   f"by a multiple of it ({self.at(a.aval.shape, b.aval.shape)})")
        if dims != a.aval.shape:
            self.dims[id(a)] = dims

    def _const(self, graph, var, a, b) -> None:
        if a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
            return
        dims = self.dims.get(id(var), ())
        row, other = _row(a, dims), _row(b, dims)
        if row is not None and other is not None and np.array_equal(
                row, other, equal_nan=a.dtype.kind in "fc"):
            self.fills[id(var)] = row          # (a row repeated over the batch)
            return
        self._fail(None, graph, f"a constant array in it changes with the batch size (shape "
                                f"{self.at(a.shape, b.shape)}), and it is not the same values "
                                f"repeated over the batch", users_of=var)

    def _fail(self, eqn, graph, why: str, users_of=None):
        if eqn is None and graph is not None:
            eqn = _first_user(graph, users_of)
        trace, where = [], ""
        if eqn is not None:
            trace = list(eqn.source.frames)
            where = f" at the equation {describe(eqn)}"
        raise FluxValueError(f"{self.what}: the model's graph is not the same for every batch "
                             f"size{where}: {why}. Pass dynamic_batch=False to export it for "
                             f"the example's batch size", trace=trace)


def _divergence(one: list, two: list):
    """The first equation of either list where the two stop computing alike (shape attributes
    may differ by the batch)."""
    def alike(e, f) -> bool:
        return e.prim is f.prim and e.attrs.keys() == f.attrs.keys() and all(
            isinstance(v, Graph) or same(v, f.attrs[k]) or (
                k in SHAPE_ATTRS and len(v) == len(f.attrs[k])) for k, v in e.attrs.items())
    for e, f in zip(one, two):
        if not alike(e, f):
            return e
    longer = one if len(one) > len(two) else two
    return longer[min(len(one), len(two))]


def _first_user(graph: Graph, var):
    """The first equation of `graph` reading `var` (any equation when `var` is None)."""
    for eqn in graph.eqns:
        if var is None or any(a is var for a in eqn.inputs):
            return eqn
    return None


def _dims(one: tuple, two: tuple, sizes: tuple):
    """`one` with `BatchDim(k)` where it holds ``k·sizes[0]`` and `two` holds ``k·sizes[1]``;
    None where the two differ otherwise."""
    if len(one) != len(two):
        return None
    dims = []
    for a, b in zip(one, two):
        if a == b:
            dims.append(int(a))
        elif a % sizes[0] == 0 and b * sizes[0] == a * sizes[1]:
            dims.append(BatchDim(a // sizes[0]))
        else:
            return None
    return tuple(dims)


def same(a, b) -> bool:
    """Whether two attribute values are equal: numbers, strings, slices, dtypes, arrays and
    tuples of them."""
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and np.asarray(a).dtype == np.asarray(b).dtype \
            and bool(np.array_equal(a, b))
    if isinstance(a, slice) or isinstance(b, slice):
        return isinstance(a, slice) and isinstance(b, slice) and same(
            (a.start, a.stop, a.step), (b.start, b.stop, b.step))
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False


def _row(a: np.ndarray, dims: tuple):
    """`a` with size 1 along its batch axes (`dims` has `BatchDim(1)` there) when it is that
    repeated over them, else None (also for a size that is a multiple of the batch)."""
    axes = tuple(i for i, d in enumerate(dims) if isinstance(d, BatchDim))
    if not axes or any(dims[i].k != 1 for i in axes) or a.size == 0:
        return None
    row = a[tuple(slice(0, 1) if i in axes else slice(None) for i in range(a.ndim))]
    repeated = np.array_equal(a, np.broadcast_to(row, a.shape), equal_nan=a.dtype.kind in "fc")
    return np.ascontiguousarray(row) if repeated else None


def _same_number(a: Literal, b: Literal) -> bool:
    same_nan = a.value != a.value and b.value != b.value
    return a.dtype == b.dtype and (a.value == b.value or same_nan)


def _text(atom) -> str:
    return repr(atom.value.item()) if isinstance(atom, Literal) else f"an array {atom.aval}"
