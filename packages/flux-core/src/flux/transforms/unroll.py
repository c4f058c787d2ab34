"""Unrolling recurrent models: `unroll`, `unroll1`, `flip`, `seq`.

An unrolled model traces its inner model once per time step, each time inside a
`TimeStep` that gives the recurrent variables (`State` fields) their values: ``prev(v)``
at step t is what step t−1 assigned (the initial state at the first step, broadcast over the
batch). The steps are inlined copies in one acyclic graph, so shape inference, autodiff and
every backend work on unrolled models unchanged; backpropagation runs through all the steps.

A stateful unrolled model carries its hidden state from one call to the next, each compiled
copy its own (`flux.transforms.carry`; `flux.reset` forgets it).

`flip(model)` runs a recurrence backwards in time. Its steps are traced first, from the last
step to the first (the rest of the step is traced too, and discarded); the forward pass then
uses their results. So the input of a flipped model may depend on the step's inputs, but not
on another recurrence of the same step.
"""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxError, FluxValueError, ShapeError
from flux.ir import primitives as P
from flux.ir.body import BodyTrace, NeedsUnrolling
from flux.ir.graph import Aval, Var
from flux.ir.pytree import flatten, unflatten
from flux.ir.recording import named
from flux.ir.trace import Tracer, current_trace
from flux.model.net import FunctionModel, call_model
from flux.model.state import StateVar, TimeStep, current_time_step
from flux.model.walk import input_shape, is_model, walk
from flux.ops import numpy_api as api
from flux.transforms.carry import Carrier, carried_state

__all__ = ["unroll", "unroll1", "flip", "seq", "Unrolled", "Unroll1", "Flipped", "state_vars"]


def _check_steps(n, what: str) -> int:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise FluxValueError(f"{what} needs a whole number of steps n ≥ 1, found {n!r}")
    return int(n)


def _point_shape(shape: tuple, batch) -> tuple:
    """One data point's state shape, from an initial value's shape: a leading axis of 1 (the
    seed's row vectors, ``(1, out)``) or of the batch size is a batch axis."""
    if len(shape) >= 2 and shape[0] in (1, batch):
        return shape[1:]
    return shape


def _initial(value, batch):
    """A State field's initial value for this call: ``(out,)`` and ``(1, out)`` become
    ``(batch, out)`` (or ``(out,)`` for a single sequence); a value that already has the batch
    axis is used as it is."""
    value = api.lift(value)
    shape = tuple(value.shape) if isinstance(value, Tracer) else tuple(np.shape(value))
    point = _point_shape(shape, batch)
    target = point if batch is None else (batch,) + point
    if target == shape:
        return value
    if batch is None:
        return api.reshape(value, target)
    return api.broadcast_to(value, target)


def _start(owner, variables, batch) -> dict:
    """Each variable's history at the first step: kept hidden state, else its initial value."""
    trace = current_trace()
    kept = carried_state(trace).read(owner) if owner.stateful else None
    forward = [v for v in variables if not v.flipped]
    history = {}
    if kept is not None:
        if len(kept) != len(forward):
            raise FluxError(f"{type(owner).__name__}: its model's recurrent variables changed "
                            f"since the last call; call flux.reset(model)")
        for v, value in zip(forward, kept):
            point = _point_shape(tuple(np.shape(v.initial)), batch)
            wanted = point if batch is None else (batch,) + point
            if tuple(value.shape) != wanted:
                this = "a single sequence" if batch is None else f"a batch of {batch}"
                raise ShapeError(
                    f"the hidden state {v.path} carried from the previous call has shape "
                    f"{tuple(value.shape)}, but this input ({this}) needs {wanted}. A "
                    f"stateful unrolled model continues each call from the last one's state: "
                    f"for batches that do not continue the previous ones (shuffled batches, a "
                    f"smaller last batch) unroll with stateful=False, or call "
                    f"flux.reset(model) to start again from the initial state")
            history[v.key] = [value]
    for v in variables:
        if v.key not in history:
            history[v.key] = [_initial(v.initial, batch)]
    return history


def state_vars(model) -> list[StateVar]:
    """The recurrent variables under `model`, in model order then declaration order; unrolled
    models inside are opaque (they own their states); `flip` marks its variables."""
    def opaque(obj):
        return isinstance(obj, (Unrolled, Unroll1))
    found = list(walk(model, stop=opaque))
    flipped = {id(obj) for _, f in found if isinstance(f, Flipped)
               for _, obj in walk(f.model, stop=opaque)}
    return [StateVar(obj, name, f"{path}.{name}" if path else name, id(obj) in flipped)
            for path, obj in found if is_model(obj) and not opaque(obj)
            for name in getattr(type(obj), "__flux_states__", ())]


def _steps(owner, variables, inputs, history):
    """Trace the time steps; returns the per-step outputs and the final hidden state."""
    n = len(inputs)
    replay = _flipped_pass(owner, variables, inputs, history) if any(
        v.flipped for v in variables) else None
    outputs = []
    for t in range(n):
        step = TimeStep(owner, variables, history, t)
        step.replay = list(replay[t]) if replay is not None else None
        with step:
            outputs.append(owner.model(*inputs[t]))
        for v in variables:
            if not v.flipped:
                history[v.key].append(step.assigned.get(v.key, history[v.key][-1]))
        if any(d > 1 for d in step.depth.values()):
            deep = [k for k, d in step.depth.items() if d > 1]
            if owner.stateful:
                raise FluxError(f"prev(v, n) with n > 1 is supported in stateless unrolled "
                                f"models only (unroll(..., stateful=False)); used for "
                                f"{', '.join(step.variables[k].path for k in deep)}")
    final = [history[v.key][-1] for v in variables if not v.flipped]
    return outputs, final


def _flipped_pass(owner, variables, inputs, history):
    """Trace the steps from last to first for the flipped variables; returns, per step, the
    outputs of the flipped models' calls in that step."""
    trace = current_trace()
    first_eqn = len(trace.eqns)
    poison: set[int] = set()
    past = {}
    for v in variables:
        if v.flipped:
            past[v.key] = list(history[v.key])
        else:
            start = history[v.key][-1]
            aval = start.aval if isinstance(start, Tracer) else Aval(np.shape(start),
                                                                     np.asarray(start).dtype)
            stand_in = Tracer(Var(aval), trace)   # any use of it must not reach an output
            poison.add(id(stand_in.variable))
            past[v.key] = [stand_in]
    results = [None] * len(inputs)
    for t in reversed(range(len(inputs))):
        step = TimeStep(owner, variables, past, t)
        with step:
            owner.model(*inputs[t])
        results[t] = step.flipped_calls
        for v in variables:
            if v.flipped:
                past[v.key].append(step.assigned.get(v.key, past[v.key][-1]))
    _check_independent(trace, first_eqn, results, poison)
    return results


def _check_independent(trace, first_eqn, results, poison) -> None:
    producer = {id(v): eqn for eqn in trace.eqns[first_eqn:] for v in eqn.outputs}
    todo = [leaf.variable for calls in results for out in calls for leaf in flatten(out)[0]
            if isinstance(leaf, Tracer)]
    seen: set[int] = set()
    while todo:
        var = todo.pop()
        if id(var) in seen:
            continue
        seen.add(id(var))
        if id(var) in poison:
            raise FluxError("the input of a flip()ped model depends on another recurrence in "
                            "the same step; a flipped model runs backwards in time, so its "
                            "input may depend only on the step's inputs")
        eqn = producer.get(id(var))
        if eqn is not None:
            todo.extend(a for a in eqn.inputs if isinstance(a, Var))


class _Steps:
    """The per-step inputs of a sequence, sliced only when full unrolling asks for them."""

    def __init__(self, args, n, axis):
        self.args, self.n, self.axis = args, n, axis
        self._steps = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, t):
        if self._steps is None:
            self._steps = list(zip(*(seq(x, self.n, axis=self.axis) for x in self.args)))
        return self._steps[t]


def _checked_seq(x, n, axis):
    x = api._as_tracer_or_array(x)
    if _rank(x) <= axis or x.shape[axis] != n:
        seq(x, n, axis=axis)            # raises the error naming both lengths
    return x


def _loop(owner, variables, args, history, axis, batch):
    """The steps as one `scan` (see `flux.ir.primitives.loop`): ``(output, final states)``,
    or None where the steps must be unrolled (``FLUX_LOOPS=unroll``, flip, prev(v, n > 1),
    `flux.shapes`, or a step that reaches carried state or fresh random numbers)."""
    outer = current_trace()
    if not outer.loops or any(v.flipped for v in variables):
        return None
    if outer.log is not None:
        return _shown_once(owner, variables, args, history, axis, batch)
    inits = [api.lift(history[v.key][0]) for v in variables]
    for _ in range(2):          # a second time if a state's dtype changed in the step
        try:
            traced = _trace_step(owner, variables, inits, args, axis, outer)
        except NeedsUnrolling:
            return None
        if traced is None:
            return None
        body, captured, tree, retype = traced
        if not retype:
            break
        inits = [api.astype(x, dtype) if dtype is not None else x
                 for x, dtype in zip(inits, retype)]
    else:
        return None
    xs = list(args) if axis is not None else []
    n_y = len(body.outputs) - len(inits)
    y_axis = 1 if batch is not None else 0
    outs = P.scan_p(*captured, *inits, *xs, body=body, length=owner.n,
                    n_consts=len(captured), n_carry=len(inits), x_axes=(axis,) * len(xs),
                    y_axes=(y_axis,) * n_y, reverse=False)
    return unflatten(tree, outs[len(inits):]), outs[:len(inits)]


def _shown_once(owner, variables, args, history, axis, batch):
    """For `flux.shapes`: the step traced once, between ``step(x)`` (one step of each input
    sequence) and ``over_n_steps(y)`` (each output stacked over the n steps), so the
    printout shows the body once with its step count, as the loop runs it."""
    def step(x):
        return api.getitem(x, P.step_index(axis, 0))

    n, y_axis = owner.n, 1 if batch is not None else 0

    def stacked(y):
        y = api.expand_dims(y, y_axis)
        return api.broadcast_to(y, y.shape[:y_axis] + (n,) + y.shape[y_axis + 1:])
    stacked.__name__ = f"over_{n}_steps"
    inputs = [tuple(named(step)(x) for x in args)] if axis is not None else [args]
    log = current_trace().log
    first = len(log.events)
    outputs, final = _steps(owner, variables, inputs, history)
    for event in log.events[first:]:
        event.repeats *= n
    leaves, tree = flatten(outputs[0])
    return unflatten(tree, [named(stacked)(y) for y in leaves]), final


def _trace_step(owner, variables, inits, args, axis, outer):
    """One step traced as a closed body graph: ``(body, captured, out_tree, retype)`` with
    `retype` the new dtypes of states whose dtype the step changed (then trace again), or
    None to unroll."""
    body = BodyTrace(outer)
    with body:
        carries = [body.new_input(_aval(x)) for x in inits]
        steps = [body.new_input(Aval(x.shape[:axis] + x.shape[axis + 1:], x.dtype))
                 for x in args] if axis is not None else []
        history = {v.key: [c] for v, c in zip(variables, carries)}
        step = TimeStep(owner, variables, history, 0)
        with step:
            out = owner.model(*(steps if axis is not None else args))
        if any(d > 1 for d in step.depth.values()):
            return None
        new = [api.lift(step.assigned.get(v.key, c)) for v, c in zip(variables, carries)]
        retype = [None] * len(new)
        for i, (v, old, value) in enumerate(zip(variables, carries, new)):
            found = _aval(value)
            if found.shape != old.shape:
                raise _changing_state(body, v, old, value)
            if found.dtype != old.dtype:
                retype[i] = found.dtype
        leaves, tree = flatten(out)
        graph = body.body_graph(carries + steps, new + leaves)
    return graph, body.captured, tree, retype if any(r is not None for r in retype) else None


def _aval(x) -> Aval:
    return x.aval if isinstance(x, Tracer) else Aval(np.shape(x), np.asarray(x).dtype)


def _changing_state(body, v, old, value) -> ShapeError:
    """The error for a State whose shape the step changes, at the line that assigned it."""
    error = ShapeError(
        f"the State {type(v.model).__name__}.{v.name} enters each step with shape "
        f"{old.shape} but this step assigns it a value of shape {_aval(value).shape}: a "
        f"recurrent variable keeps its shape from step to step (one loop body serves every "
        f"step)")
    made = next((e for e in body.eqns if isinstance(value, Tracer)
                 and value.variable in e.outputs), None)
    source = made.source if made is not None else body.source()
    error.message += f"\n  at {source.file}:{source.line}"
    return error.with_trace(source.frames)


def _stack(outputs, axis: int):
    """Stack per-step outputs (arrays or tuples of them) along the time axis."""
    leaves = [flatten(out) for out in outputs]
    tree = leaves[0][1]
    stacked = [api.stack([lv[0][i] for lv in leaves], axis=axis)
               for i in range(len(leaves[0][0]))]
    return unflatten(tree, stacked)


def _rank(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


class Unrolled(Carrier):
    """`model` run over `n` time steps: ``unroll(model, n, stateful=True, seq=True)``.

    Input ``(batch, n, features)`` (or one sequence ``(n, features)``) gives
    ``(batch, n, out)`` (or ``(n, out)``). With ``seq=False`` the input is one value fed at
    every step (rank ≥ 2 means it has a batch axis). See the module docstring for state.
    """

    __flux_model__ = True
    __flux_fields__ = ("model",)

    def __init__(self, model, n: int, stateful: bool = True, seq: bool = True):
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "n", _check_steps(n, "unroll(model, n)"))
        object.__setattr__(self, "seq", bool(seq))
        self._init_carrier(stateful)

    def __repr__(self) -> str:
        return (f"unroll({self.model!r}, {self.n}, stateful={self.stateful}, "
                f"seq={self.seq})")

    @property
    def input_shape(self):
        """One sequence ``(n, features...)`` (``seq=False``: one point), from the model's."""
        inner = input_shape(self.model)
        return None if inner is None else ((self.n,) + inner if self.seq else inner)

    def __call__(self, *args):
        return call_model(self, self._forward, args, {}, "Unrolled")

    def _forward(self, *args):
        if not args:
            raise FluxValueError("an unrolled model takes at least one input")
        first = api._as_tracer_or_array(args[0])
        if self.seq:
            axis = 1 if _rank(first) >= 3 else 0
            batch = first.shape[0] if axis == 1 else None
            args = [_checked_seq(x, self.n, axis) for x in args]
            inputs = _Steps(args, self.n, axis)
        else:
            batch = first.shape[0] if _rank(first) >= 2 else None
            inputs = [args] * self.n
        variables = state_vars(self.model)
        history = _start(self, variables, batch)
        looped = _loop(self, variables, args, history, axis if self.seq else None, batch)
        if looped is not None:
            out, final = looped
        else:
            outputs, final = _steps(self, variables, inputs, history)
            out = _stack(outputs, 1 if batch is not None else 0)
        if self.stateful:
            carried_state(current_trace()).write(self, final)
        return out


class Unroll1(Carrier):
    """`model` one step at a time: ``unroll1(model)``.

    ``u.step(states, x) -> (states, y)`` is a pure function of the hidden states (a tuple, in
    the order the State fields are declared; start from ``u.initial_states()``); it also works
    on traced values inside another model's forward. Calling ``u(x)`` runs one step from the
    model's own hidden state and advances it.
    """

    __flux_model__ = True
    __flux_fields__ = ("model",)

    def __init__(self, model):
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "_pure", None)
        self._init_carrier(True)

    def __repr__(self) -> str:
        return f"unroll1({self.model!r})"

    def initial_states(self) -> tuple:
        """The initial value of each State field (declaration order), as arrays."""
        return tuple(np.array(v.initial) for v in state_vars(self.model))

    input_shape = property(lambda self: input_shape(self.model), doc="The model's.")

    def __call__(self, *args):
        return call_model(self, self._forward, args, {}, "Unroll1")

    def _forward(self, *args):
        first = api._as_tracer_or_array(args[0])
        batch = first.shape[0] if _rank(first) >= 2 else None
        variables = state_vars(self.model)
        history = _start(self, variables, batch)
        (output,), final = _steps(self, variables, [args], history)
        carried_state(current_trace()).write(self, final)
        return output

    def step(self, states, *args):
        """One step from `states`: returns ``(new_states, y)``."""
        if current_trace() is None:
            if self._pure is None:
                object.__setattr__(self, "_pure", FunctionModel(self.step))
            return self._pure(tuple(states), *args)
        variables = [v for v in state_vars(self.model) if not v.flipped]
        states = tuple(states)
        if len(states) != len(variables):
            names = ", ".join(v.path for v in variables)
            raise FluxValueError(f"step() takes one state per State field ({names}): "
                                 f"{len(variables)} states, found {len(states)}")
        history = {v.key: [api.lift(s)] for v, s in zip(variables, states)}
        step = TimeStep(self, variables, history, 0)
        with step:
            y = self.model(*args)
        if any(d > 1 for d in step.depth.values()):
            raise FluxError("unroll1(...).step supports prev(v) (one step back) only")
        new = tuple(step.assigned.get(v.key, history[v.key][-1]) for v in variables)
        return new, y


class Flipped:
    """`model` run backwards in time when unrolled: ``flip(model)`` (see the module
    docstring)."""

    __flux_model__ = True
    __flux_fields__ = ("model",)

    def __init__(self, model):
        object.__setattr__(self, "model", model)

    def __repr__(self) -> str:
        return f"flip({self.model!r})"

    input_shape = property(lambda self: input_shape(self.model), doc="The model's.")

    def __call__(self, *args):
        return call_model(self, self._forward, args, {}, "Flipped")

    def _forward(self, *args):
        step = current_time_step()
        if step is None or id(self.model) not in step.manages:
            raise FluxError("flip(model) runs backwards in time inside an unrolled model; "
                            "unroll the model that contains it (flux.unroll(..., n))")
        if step.replay is not None:
            trace = current_trace()
            if trace.log is not None and trace.log.events:
                trace.log.events[-1].replayed = True   # this call's event: it computes nothing
            return step.replay.pop(0)
        out = self.model(*args)
        step.flipped_calls.append(out)
        return out


def unroll(model, n: int, *, stateful: bool = True, seq: bool = True) -> Unrolled:
    """A feed-forward model over `n` steps of a recurrent `model` (see `Unrolled`)."""
    return Unrolled(model, n, stateful=stateful, seq=seq)


def unroll1(model) -> Unroll1:
    """`model` one step at a time, with explicit states (see `Unroll1`)."""
    return Unroll1(model)


def flip(model) -> Flipped:
    """The same recurrence run backwards in time (for bidirectional encoders)."""
    return Flipped(model)


def seq(x, n: int, axis: int | None = None) -> list:
    """Split a sequence into a list of its `n` steps: ``(batch, n, ...)`` along axis 1, a
    single sequence ``(n, ...)`` (rank ≤ 2) along axis 0.

    >>> [s.shape for s in seq(np.zeros((4, 3, 2)), 3)]
    [(4, 2), (4, 2), (4, 2)]
    """
    n = _check_steps(n, "seq(x, n)")
    x = api._as_tracer_or_array(x)
    if axis is None:
        axis = 1 if _rank(x) >= 3 else 0
    if _rank(x) <= axis or x.shape[axis] != n:
        found = x.shape[axis] if _rank(x) > axis else None
        raise ShapeError(f"expected a sequence of length {n} (axis {axis} of the input), found "
                         f"length {found} in a value of shape {tuple(x.shape)}")
    index = (slice(None),) * axis
    return [api.getitem(x, index + (t,)) for t in range(n)]
