"""Unrolling recurrent models: `unroll`, `unroll1`, `flip`, `seq`.

An unrolled model traces its inner model inside a `TimeStep` that gives the recurrent
variables (`State` fields) their values: ``prev(v)`` at step t is what step t−1 assigned (the
initial state at the first step, broadcast over the batch). The step is traced once, as the
body of one loop (`flux.transforms.looping`), or, where a loop cannot hold it, once per time
step as copies in one acyclic graph (`flux.transforms.steps`); either way backpropagation runs
through all the steps.

A stateful unrolled model carries its hidden state from one call to the next, each compiled
copy its own (`flux.transforms.carry`; `flux.reset` forgets it).

`flip(model)` runs a recurrence backwards in time. Its steps are traced first, from the last
step to the first (the rest of the step is traced too, and discarded); the forward pass then
uses their results. So the input of a flipped model may depend on the step's inputs, but not
on another recurrence of the same step.
"""
from __future__ import annotations

import numpy as np

from flux.errors import FluxError, FluxValueError
from flux.ir.trace import current_trace
from flux.model.net import FunctionModel, call_model
from flux.model.state import StateVar, TimeStep, current_time_step
from flux.model.walk import input_shape, is_model, walk
from flux.ops import numpy_api as api
from flux.transforms.carry import Carrier, carried_state
from flux.transforms.looping import loop
from flux.transforms.steps import (Steps, check_steps, checked_seq, rank, seq, stack, start,
                                   traced_steps)

__all__ = ["unroll", "unroll1", "flip", "seq", "Unrolled", "Unroll1", "Flipped", "state_vars"]


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
        object.__setattr__(self, "n", check_steps(n, "unroll(model, n)"))
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
            axis = 1 if rank(first) >= 3 else 0
            batch = first.shape[0] if axis == 1 else None
            args = [checked_seq(x, self.n, axis) for x in args]
            inputs = Steps(args, self.n, axis)
        else:
            batch = first.shape[0] if rank(first) >= 2 else None
            inputs = [args] * self.n
        variables = state_vars(self.model)
        history = start(self, variables, batch)
        looped = loop(self, variables, args, history, axis if self.seq else None, batch)
        if looped is not None:
            out, final = looped
        else:
            outputs, final = traced_steps(self, variables, inputs, history)
            out = stack(outputs, 1 if batch is not None else 0)
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
        batch = first.shape[0] if rank(first) >= 2 else None
        variables = state_vars(self.model)
        history = start(self, variables, batch)
        (output,), final = traced_steps(self, variables, [args], history)
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
