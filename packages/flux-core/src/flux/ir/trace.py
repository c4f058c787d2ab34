"""Primitives, tracers and the trace that records equations: the machinery behind `@net`.

A `Primitive` is one operation of the closed IR vocabulary. Applying it to concrete NumPy
arrays runs its NumPy implementation; applying it while a `Trace` is active records an `Eqn`
(after running its shape rule, so shape errors surface at the user's line) and returns
`Tracer`s standing for the results.
"""
from __future__ import annotations

import numbers
import os
from typing import Callable

import numpy as np

from flux.errors import ShapeError, TraceError, tracing
from flux.ir.graph import Aval, Eqn, Graph, Literal, Var
from flux.ir.passes import dce, maybe_check
from flux.ir.source import ModelCall, Source, capture

# -- primitives ---------------------------------------------------------------------------------


class Primitive:
    """One IR operation, declared with everything passes and backends need to know about it
    (see `flux.ir.primitives` for the closed set):

    - ``impl(*arrays, **attrs)``: the NumPy implementation (a `np.ufunc` for most elementwise
      primitives, which lets executors pass ``out=``);
    - ``shape_rule(*avals, **attrs) -> Aval`` (or a list when `multiple_results`), raising
      `ShapeError` with a message naming the shapes;
    - ``vjp(g, out, *ins, **attrs) -> [cotangent or None per input]``, written with traced ops.
      A cotangent may have the shape its input was broadcast to: autodiff sums it back down;
    - ``elementwise``: the result is computed element by element from inputs broadcast
      together with NumPy's rules (the result has the broadcast shape);
    - ``reduction``: it reduces its input over ``attrs["axes"]``;
    - ``view``: its result may alias its first input (reshape, transpose, ...);
    - ``floats_only``: it takes floating inputs only (NumPy's functions convert integers to
      float64 first, and so does flux's translation of them);
    - ``result_dtype``: the dtype of every result regardless of the inputs (bool for the
      comparisons), or None when it follows the inputs or the attributes.
    """

    def __init__(self, name: str, *, impl: Callable, shape_rule: Callable,
                 vjp: Callable | None = None, elementwise: bool = False,
                 reduction: bool = False, view: bool = False, floats_only: bool = False,
                 result_dtype=None, multiple_results: bool = False):
        self.name = name
        self.impl = impl
        self.shape_rule = shape_rule
        self.vjp = vjp
        self.elementwise = elementwise
        self.reduction = reduction
        self.view = view
        self.floats_only = floats_only
        self.result_dtype = None if result_dtype is None else np.dtype(result_dtype)
        self.multiple_results = multiple_results

    def __repr__(self) -> str:
        return f"{self.name}_p"

    def abstract_eval(self, *avals, **attrs) -> list[Aval]:
        out = self.shape_rule(*avals, **attrs)
        return list(out) if self.multiple_results else [out]

    def __call__(self, *args, **attrs):
        return bind(self, args, attrs)


def bind(prim: Primitive, args, attrs):
    """Apply `prim`: record it into the active trace, or compute it now on concrete arrays."""
    trace = _state.trace
    if trace is not None:
        return trace.bind(prim, args, attrs)
    for arg in args:
        if isinstance(arg, Tracer):
            raise TraceError(ESCAPED)
    values = [a.value if isinstance(a, Literal) else np.asarray(a) for a in args]
    return prim.impl(*values, **attrs)


ESCAPED = (
    "a traced value was used outside the model call that made it; values computed inside a "
    "forward function cannot be kept in globals or attributes and used later"
)

# -- tracers ------------------------------------------------------------------------------------


class Tracer:
    """Stands for an array while a forward function is traced: it has a shape and a dtype,
    supports Python operators and NumPy functions (each recorded as an equation), but no values.
    """

    __slots__ = ("variable", "trace")
    __array_priority__ = 1000
    __hash__ = None

    def __init__(self, var: Var, trace: "Trace"):
        self.variable = var
        self.trace = trace

    aval = property(lambda self: self.variable.aval)
    shape = property(lambda self: self.variable.aval.shape)
    dtype = property(lambda self: self.variable.aval.dtype)
    ndim = property(lambda self: self.variable.aval.ndim)
    size = property(lambda self: self.variable.aval.size)

    def __repr__(self) -> str:
        return f"Traced<{self.shape} {self.dtype}>"

    def __len__(self) -> int:
        if not self.shape:
            raise TraceError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __bool__(self):
        raise _value_error("a Python `if`, `while`, `and`/`or` or bool() on a traced value")

    def __float__(self):
        raise _value_error("float() on a traced value")

    def __int__(self):
        raise _value_error("int() on a traced value")

    def __index__(self):
        raise _value_error("using a traced value as an index or size")

    def __array__(self, dtype=None, copy=None):
        raise _value_error("converting a traced value to a NumPy array (np.asarray, np.array; "
                           "or a NumPy function given a list of traced values: np.stack them "
                           "first, or use flux.sum/flux.mean, which do)")

    def __setitem__(self, index, value):
        raise TraceError(
            "item assignment `x[...] = v` on a traced value: a dataflow graph cannot mutate "
            "values; "
            "build a new value instead (e.g. with np.where or hcat)"
        ).with_trace(self.trace.source().frames)

    # NumPy protocol and Python operators are installed by flux.ops.methods (they need the
    # primitives, a layer above).


def _value_error(what: str) -> TraceError:
    trace = _state.trace
    if trace is None:
        return TraceError(ESCAPED)
    error = TraceError(
        f"{what}: the forward function defines a dataflow graph, and traced values have a "
        f"shape but no value while it is recorded. Use np.where(cond, a, b) for data-dependent "
        f"choices; Python control flow may depend only on shapes."
    )
    if trace is not None:
        source = trace.source()
        error.message += f"\n  at {source.file}:{source.line}"
        error.with_trace(source.frames)
    return error


# -- the trace ----------------------------------------------------------------------------------

_state = tracing   # the trace being recorded in this thread (each thread traces independently)


def current_trace() -> "Trace | None":
    return _state.trace


class Trace:
    """Records equations while a forward function runs on Tracers.

    Use as a context manager. Params met while tracing become graph params (one per Param
    object), concrete arrays become consts, Python numbers become Literals.

    Besides equations, a trace holds what the features built on tracing need while it runs,
    each in one attribute: `calls` and `paths` (the model frames of `flux.ir.source`),
    `time_step` (the recurrence's `TimeStep` being traced, `flux.model.state`), `log` (a
    `CallLog` when `flux.shapes` records calls, `flux.ir.recording`) and `carry` (hidden
    state carried between calls, `flux.transforms.carry`).
    """

    def __init__(self, paths: dict[int, str] | None = None):
        self.eqns: list[Eqn] = []
        self.param_vars: list[Var] = []
        self.param_objs: list = []
        self._param_tracers: dict[int, Tracer] = {}
        self.consts: list[Var] = []
        self.const_values: list = []
        self._const_vars: dict[int, Var] = {}
        self._const_values_by_var: dict[int, np.ndarray] = {}
        self._keep: list = []   # values whose id() keys _const_vars stay alive while tracing
        self.calls: list[ModelCall] = []
        self.paths = paths or {}
        self.source_override: Source | None = None
        self.time_step = None       # the TimeStep of the recurrence being traced, if any
        self.log = None             # a CallLog while flux.shapes records calls (tolerant)
        self.carry = None           # the CarriedState of stateful unrolled models, if any
        self.training = False       # traced for a training step or `back` (layer modes)
        self.watch_draws = None     # NumPy's global generator state, while looking for draws
        self.first_draw: Source | None = None     # where the first draw was then seen
        self.loops = loops_default()  # unrolled models trace as loops (`scan`), not n copies
        self._outer = None

    def __enter__(self) -> "Trace":
        self._outer = _state.trace
        _state.trace = self
        return self

    def __exit__(self, *exc) -> None:
        _state.trace = self._outer

    # values entering the trace

    def new_input(self, aval: Aval) -> Tracer:
        return Tracer(Var(aval), self)

    def tracer(self, var: Var) -> Tracer:
        return Tracer(var, self)

    def param(self, p) -> Tracer:
        tracer = self._param_tracers.get(id(p))
        if tracer is None:
            var = Var(Aval(p.shape, p.dtype))
            self.param_vars.append(var)
            self.param_objs.append(p)
            tracer = self._param_tracers[id(p)] = Tracer(var, self)
        return tracer

    def const(self, value) -> Var:
        var = self._const_vars.get(id(value))
        if var is None:
            array = value if isinstance(value, np.ndarray) else np.asarray(value)
            var = Var(Aval(array.shape, array.dtype))
            self.consts.append(var)
            self.const_values.append(array)
            self._const_vars[id(value)] = var
            self._const_values_by_var[id(var)] = array
            self._keep.append(value)
        return var

    def atom(self, value):
        """The Var or Literal standing for `value` in this trace."""
        if isinstance(value, Tracer):
            if value.trace is not self:
                raise TraceError(ESCAPED)
            return value.variable
        if isinstance(value, (Var, Literal)):
            return value
        if getattr(value, "__flux_param__", False):
            return self.param(value).variable
        if isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.generic):
            return Literal(value, np.asarray(value).dtype)
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":
            raise TraceError(f"expected a numeric array, found {type(value).__name__}: "
                             f"{value!r:.60}")
        return self.const(value if isinstance(value, np.ndarray) else array)

    # recording

    def _fold(self, prim: Primitive, atoms, attrs):
        """Compute now an equation whose inputs are all constants (its shape rule has passed)
        and whose result is no bigger than they are: a constant broadcast to a batch stays an
        equation, so that graphs need no batch-sized constants (see `free_batch`)."""
        values = [a.value if isinstance(a, Literal) else self._const_values_by_var[id(a)]
                  for a in atoms]
        aval = prim.abstract_eval(*(a.aval for a in atoms), **attrs)[0]
        folded = np.asarray(prim.impl(*values, **attrs), dtype=aval.dtype)
        if folded.ndim == 0:
            return Literal(folded.item(), aval.dtype)
        return Tracer(self.const(np.ascontiguousarray(folded)), self)

    def source(self) -> Source:
        if self.source_override is not None:
            return self.source_override
        return capture(self.calls, skip=2)

    def bind(self, prim: Primitive, args, attrs):
        if self.watch_draws is not None and self.first_draw is None \
                and global_draws() != self.watch_draws:
            self.first_draw = self.source()          # the first operation after a draw
        atoms = [self.atom(a) for a in args]
        try:
            avals = prim.abstract_eval(*(a.aval for a in atoms), **attrs)
        except (ShapeError, ValueError, RuntimeError) as error:
            if not isinstance(error, ShapeError):   # NumPy's own refusal (e.g. > 32 axes)
                error = ShapeError(f"{prim.name}: {error} (shapes "
                                   f"{', '.join(str(a.aval.shape) for a in atoms)})")
            if self.log is not None:      # flux.shapes: record it and go on
                return self.log.guess(self, prim, atoms, attrs, error)
            source = self.source()
            error.with_trace(source.frames)
            if not source.frames:
                error.message += f"\n  at {source.file}:{source.line}"
            raise error.with_traceback(None) from None
        if not prim.multiple_results and all(
                isinstance(a, Literal) or id(a) in self._const_values_by_var for a in atoms) \
                and avals[0].size <= max((a.aval.size for a in atoms), default=avals[0].size):
            return self._fold(prim, atoms, attrs)      # (a broadcast to more stays an equation)
        outs = [Var(aval) for aval in avals]
        if self.log is not None:
            self.log.taint(atoms, outs)
        self.eqns.append(Eqn(prim, atoms, outs, attrs, self.source()))
        tracers = [Tracer(v, self) for v in outs]
        return tracers if prim.multiple_results else tracers[0]

    def graph(self, inputs: list[Var], outputs: list, in_tree=None, out_tree=None) -> Graph:
        """The recorded graph with these inputs and outputs (dead equations removed); hidden
        state carried between calls, if any, comes after them (`Graph.carry_in/carry_out`)."""
        carry_in, carry_out = self.carry.boundary() if self.carry is not None else ([], [])
        inputs = list(inputs) + [t.variable for _, t in carry_in]
        out_atoms = [self.atom(value) for value in list(outputs) + [v for _, v in carry_out]]
        names = [self.paths.get(id(p), f"p{i}") for i, p in enumerate(self.param_objs)]
        graph = Graph(inputs, self.param_vars, self.param_objs, self.consts, self.const_values,
                      self.eqns, out_atoms, in_tree, out_tree, names,
                      [o for o, _ in carry_in], [o for o, _ in carry_out])
        return maybe_check(dce(graph))


__all__ = ["Primitive", "Tracer", "Trace", "bind", "current_trace", "loops_default"]


def loops_default() -> bool:
    """Whether unrolled models trace as one loop (`scan`, the default) or as one copy of the
    step per time step: ``FLUX_LOOPS=unroll`` in the environment forces full unrolling
    everywhere (``FLUX_LOOPS=scan`` is the default)."""
    setting = os.environ.get("FLUX_LOOPS", "scan") or "scan"
    if setting not in ("scan", "unroll"):
        raise TraceError(f"FLUX_LOOPS must be 'scan' or 'unroll', found {setting!r}")
    return setting == "scan"


def global_draws():
    """Where NumPy's global (legacy) random generator stands: it moves when np.random.*
    functions draw from it (reading it costs ~80 µs, so traces look only when told to)."""
    state = np.random.mtrand._rand._bit_generator.state
    return state["state"]["pos"], int(state["state"]["key"][0])
