"""Primitives, tracers and the trace that records equations: the machinery behind `@net`.

A `Primitive` is one operation of the closed IR vocabulary. Applying it to concrete NumPy
arrays runs its NumPy implementation; applying it while a `Trace` is active records an `Eqn`
(after running its shape rule, so shape errors surface at the user's line) and returns
`Tracer`s standing for the results.
"""
from __future__ import annotations

import numbers
import threading
from typing import Callable

import numpy as np

from ._errors import ShapeError, TraceError
from ._ir import Aval, Eqn, Graph, Literal, Var, dce, maybe_check
from ._source import ModelCall, Source, capture

# -- primitives ---------------------------------------------------------------------------------


class Primitive:
    """One IR operation; its rules are registered next to its definition in `_primitives`.

    - ``shape_rule(*avals, **params) -> Aval`` (or a list when `multiple_results`), raising
      `ShapeError` with a message naming the shapes;
    - ``impl(*arrays, **params)``: the NumPy implementation;
    - ``vjp(g, out, *ins, **params) -> [cotangent or None per input]``, written with traced ops;
    - ``ufunc``: the NumPy ufunc computing it elementwise, if any (lets executors pass ``out=``);
    - ``view``: its result may alias its first input (reshape, transpose, ...).
    """

    def __init__(self, name: str, *, view: bool = False, multiple_results: bool = False):
        self.name = name
        self.view = view
        self.multiple_results = multiple_results
        self.ufunc: np.ufunc | None = None
        self.shape_rule: Callable | None = None
        self.impl: Callable | None = None
        self.vjp: Callable | None = None

    def __repr__(self) -> str:
        return f"{self.name}_p"

    def abstract_eval(self, *avals, **params) -> list[Aval]:
        out = self.shape_rule(*avals, **params)
        return list(out) if self.multiple_results else [out]

    def __call__(self, *args, **params):
        return bind(self, args, params)


def bind(prim: Primitive, args, params):
    """Apply `prim`: record it into the active trace, or compute it now on concrete arrays."""
    trace = _state.trace
    if trace is not None:
        return trace.bind(prim, args, params)
    for arg in args:
        if isinstance(arg, Tracer):
            raise TraceError(ESCAPED)
    values = [a.value if isinstance(a, Literal) else np.asarray(a) for a in args]
    return prim.impl(*values, **params)


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

    # NumPy protocol and Python operators are filled in by _numpy_api (they need the primitives).


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

class _State(threading.local):
    """The trace being recorded in this thread (each thread traces independently)."""

    trace: "Trace | None" = None


_state = _State()


def current_trace() -> "Trace | None":
    return _state.trace


class Trace:
    """Records equations while a forward function runs on Tracers.

    Use as a context manager. Params met while tracing become graph params (one per Param
    object), concrete arrays become consts, Python numbers become Literals.
    """

    def __init__(self, paths: dict[int, str] | None = None):
        self.eqns: list[Eqn] = []
        self.params: list[Var] = []
        self.param_objs: list = []
        self._param_vars: dict[int, Tracer] = {}
        self.consts: list[Var] = []
        self.const_values: list = []
        self._const_vars: dict[int, Var] = {}
        self._const_values_by_var: dict[int, np.ndarray] = {}
        self._keep: list = []   # values whose id() keys _const_vars stay alive while tracing
        self.calls: list[ModelCall] = []
        self.paths = paths or {}
        self.source_override: Source | None = None
        self.step = None            # the StepContext of the time step being traced, if any
        self.log: list | None = None   # CallEvents, when calls are recorded (flux.shapes)
        self.tolerant = False       # shapes mode: a ShapeError is recorded, tracing goes on
        self.failures: list = []    # (ShapeError, index of the equation that failed)
        self.tainted: set = set()   # ids of Vars whose shapes are guesses after a failure
        self.carry_source = None    # the Compiled whose carried hidden state this trace reads
        self.carry_in: list = []    # (owner, Tracer) for each carried-state input
        self._carried: dict = {}    # id(owner) -> [owner, its hidden state now (list) or None]
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

    def param(self, p) -> Tracer:
        tracer = self._param_vars.get(id(p))
        if tracer is None:
            var = Var(Aval(p.value.shape, p.value.dtype))
            self.params.append(var)
            self.param_objs.append(p)
            tracer = self._param_vars[id(p)] = Tracer(var, self)
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

    def _guess(self, prim: Primitive, atoms, params, error):
        """Shapes mode: record the failure (unless a guess caused it), then go on with a guessed
        output shape so the rest of the model can still be shown; its Vars are tainted."""
        guess = guess_shape(prim, [a.aval for a in atoms], params)
        if guess is None:
            raise error
        if not any(id(a) in self.tainted for a in atoms):
            self.failures.append((error, len(self.eqns)))
        out = Var(guess)
        self.tainted.add(id(out))
        self.eqns.append(Eqn(prim, atoms, [out], params, self.source()))
        return Tracer(out, self)

    def _fold(self, prim: Primitive, atoms, params):
        """Compute now an equation whose inputs are all constants (its shape rule has passed)."""
        values = [a.value if isinstance(a, Literal) else self._const_values_by_var[id(a)]
                  for a in atoms]
        aval = prim.abstract_eval(*(a.aval for a in atoms), **params)[0]
        folded = np.asarray(prim.impl(*values, **params), dtype=aval.dtype)
        if folded.ndim == 0:
            return Literal(folded.item(), aval.dtype)
        return Tracer(self.const(np.ascontiguousarray(folded)), self)

    def source(self) -> Source:
        if self.source_override is not None:
            return self.source_override
        return capture(self.calls, skip=2)

    def bind(self, prim: Primitive, args, params):
        atoms = [self.atom(a) for a in args]
        try:
            avals = prim.abstract_eval(*(a.aval for a in atoms), **params)
        except (ShapeError, ValueError, RuntimeError) as error:
            if not isinstance(error, ShapeError):   # NumPy's own refusal (e.g. > 32 axes)
                error = ShapeError(f"{prim.name}: {error} (shapes "
                                   f"{', '.join(str(a.aval.shape) for a in atoms)})")
            if self.tolerant:
                return self._guess(prim, atoms, params, error)
            source = self.source()
            error.with_trace(source.frames)
            if not source.frames:
                error.message += f"\n  at {source.file}:{source.line}"
            raise error.with_traceback(None) from None
        if not prim.multiple_results and all(
                isinstance(a, Literal) or id(a) in self._const_values_by_var for a in atoms):
            return self._fold(prim, atoms, params)
        outs = [Var(aval) for aval in avals]
        if self.tainted and any(id(a) in self.tainted for a in atoms):
            self.tainted.update(id(v) for v in outs)
        self.eqns.append(Eqn(prim, atoms, outs, params, self.source()))
        tracers = [Tracer(v, self) for v in outs]
        return tracers if prim.multiple_results else tracers[0]

    def carried(self, owner):
        """`owner`'s hidden state at this point of the trace, as a list of values: at its first
        use, new graph inputs for what it kept from its previous call (None if it kept nothing:
        start from the initial state); later, what it last set with `set_carried`."""
        entry = self._carried.get(id(owner))
        if entry is None:
            kept = owner.carried(self.carry_source) if self.carry_source is not None else None
            values = None
            if kept:
                values = [self.new_input(Aval(a.shape, a.dtype)) for a in kept]
                self.carry_in.extend((owner, t) for t in values)
            entry = self._carried[id(owner)] = [owner, values]
        return entry[1]

    def set_carried(self, owner, values) -> None:
        """`owner`'s hidden state after its call: the graph outputs it for the next call."""
        self._carried[id(owner)] = [owner, list(values)]

    def graph(self, inputs: list[Var], outputs: list, in_tree=None, out_tree=None) -> Graph:
        carry_out = [(owner, v) for owner, values in self._carried.values() if values
                     for v in values]
        inputs = list(inputs) + [t.variable for _, t in self.carry_in]
        outputs = list(outputs) + [v for _, v in carry_out]
        out_atoms = [self.atom(value) for value in outputs]
        names = [self.paths.get(id(p), f"p{i}") for i, p in enumerate(self.param_objs)]
        graph = Graph(inputs, self.params, self.param_objs, self.consts, self.const_values,
                      self.eqns, out_atoms, in_tree, out_tree, names,
                      [o for o, _ in self.carry_in], [o for o, _ in carry_out])
        return maybe_check(dce(graph))


def guess_shape(prim: Primitive, avals, params):
    """A plausible output for an equation whose shape rule failed (for showing the rest of a
    model after a shape error), or None where there is none."""
    if prim.name == "matmul" and all(a.ndim >= 2 for a in avals):
        a, b = avals
        return Aval(a.shape[:-1] + b.shape[-1:], a.dtype)
    if prim.ufunc is not None or prim.name in ("where", "logistic", "relu"):
        biggest = max(avals, key=lambda a: (a.ndim, a.size))
        dtype = np.bool_ if prim.name in ("gt", "ge", "lt", "le", "eq", "ne", "and", "or") \
            else avals[-1].dtype
        return Aval(biggest.shape, dtype)
    if prim.name in ("reshape", "broadcast_to"):
        return Aval(params["shape"], avals[0].dtype)
    return None


__all__ = ["Primitive", "Tracer", "Trace", "bind", "current_trace", "guess_shape"]
