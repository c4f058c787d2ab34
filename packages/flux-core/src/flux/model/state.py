"""Recurrent variables: `State` fields, `prev`, and the step context that gives them values.

A field annotated ``y: flux.State`` is a recurrent variable; its value is the initial state.
While an unrolled model traces one time step, a `TimeStep` is active: reading ``self.y``
before assigning it gives a `StateRef` that only `prev` accepts; ``prev(self.y, n)`` is the
value of ``y`` n steps earlier; ``self.y = ...`` defines the value at this step (and later
reads of ``self.y`` in the same step see it). Outside a step, a State field is just its
initial value.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

from flux.ir.trace import current_trace
from flux.errors import FluxError, FluxValueError, TraceError
from flux.model.param import structure_version

__all__ = ["State", "prev", "StateRef", "TimeStep", "StateVar", "current_time_step",
           "is_recurrent", "check_unrolled"]


class State:
    """Annotation of a recurrent variable field: ``y: flux.State``. The field's value is the
    variable's initial state (one data point's, e.g. shape ``(out,)``); a Param there makes the
    initial state trainable."""


READ_BEFORE_ASSIGN = (
    "{model}.{name} is a State read before it is assigned in this step: use "
    "prev(self.{name}) for its value at the previous step, or assign self.{name} first")

NOT_UNROLLED = (
    "{model} has a recurrence (State {names}): a recurrent model runs over a sequence, so unroll "
    "it first: flux.unroll(model, n) for n steps, or flux.unroll1(model) for one step at a time")


class StateRef:
    """``self.v`` inside a step, before ``self.v`` is assigned: only `prev` may take it."""

    __slots__ = ("model", "name")

    def __init__(self, model, name: str):
        self.model = model
        self.name = name

    def misuse(self, *args, **kwargs):
        raise TraceError(READ_BEFORE_ASSIGN.format(model=type(self.model).__name__,
                                                   name=self.name))

    def __repr__(self) -> str:
        return f"<State {type(self.model).__name__}.{self.name}: use prev() to read it>"


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__truediv__", "__rtruediv__", "__matmul__", "__rmatmul__", "__pow__", "__neg__",
              "__getitem__", "__array__", "__array_ufunc__", "__array_function__", "__len__",
              "__iter__", "__bool__", "__float__", "__lt__", "__gt__", "__le__", "__ge__"):
    setattr(StateRef, _name, StateRef.misuse)


@dataclass(frozen=True)
class StateVar:
    """One recurrent variable of an unrolled model: `model`'s State field `name`."""

    model: object
    name: str
    path: str
    flipped: bool = False

    @property
    def key(self) -> tuple:
        return (id(self.model), self.name)

    @property
    def initial(self):
        return self.model.__dict__[self.name]


class TimeStep:
    """The values of the recurrent variables while one time step is traced.

    `history[key]` lists the variable's earlier values, most recent last (the initial value
    first); `assigned` collects what this step assigns. `manages` is the set of models whose
    State fields this context serves.
    """

    def __init__(self, owner, variables, history: dict, t: int):
        self.owner = owner
        self.variables = {v.key: v for v in variables}
        self.manages = {id(v.model) for v in variables}
        self.history = history
        self.t = t
        self.assigned: dict = {}
        self.names: dict[int, tuple] = {}   # id(assigned value) -> key, for prev(self.v) after v=
        self.depth: dict = {}               # key -> deepest prev(v, n) seen
        self.flipped_calls: list = []       # outputs of flipped sub-models, in call order
        self.replay: list | None = None     # pass 2: outputs to return for flipped calls
        self._outer = None

    def __enter__(self):
        trace = current_trace()
        self._outer = trace.time_step
        trace.time_step = self
        return self

    def __exit__(self, *exc):
        current_trace().time_step = self._outer

    def read(self, model, name: str):
        key = (id(model), name)
        if key in self.assigned:
            return self.assigned[key]
        return StateRef(model, name)

    def assign(self, model, name: str, value) -> None:
        key = (id(model), name)
        self.assigned[key] = value
        self.names[id(value)] = key

    def prev(self, key: tuple, n: int):
        self.depth[key] = max(self.depth.get(key, 1), n)
        past = self.history[key]
        return past[-n] if n <= len(past) else past[0]


def current_time_step() -> TimeStep | None:
    trace = current_trace()
    return trace.time_step if trace is not None else None


def prev(v, n: int = 1):
    """The value of a recurrent variable `n` steps earlier (the seed's ``v{-n}``):
    ``prev(self.y)`` inside the forward function of a model with a State field ``y``.

    At the first steps, where there is no earlier value, it is the variable's initial state
    (broadcast over the batch).
    """
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise FluxValueError(f"prev(v, n) reads the value n ≥ 1 steps earlier, found {n!r}: "
                             f"a step cannot read its own State before assigning it, nor a "
                             f"later step's; use prev(self.v) for the previous step's value")
    step = current_time_step()
    if step is None:
        raise FluxError("prev() is used outside a recurrent model being unrolled: it takes a "
                        "State field inside a forward function, e.g. prev(self.y), and the "
                        "model must be unrolled (flux.unroll or flux.unroll1)")
    if isinstance(v, StateRef):
        key = (id(v.model), v.name)
    else:
        key = step.names.get(id(v))
    if key is None or key not in step.variables:
        raise FluxError(f"prev() takes a State field of a model being unrolled, e.g. "
                        f"prev(self.y); found {type(v).__name__}")
    return step.prev(key, int(n))


class StateField:
    """The descriptor @net installs for each State field (see the module docstring)."""

    def __init__(self, name: str):
        self.name = name

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        step = current_time_step()
        if step is not None and id(obj) in step.manages:
            return step.read(obj, self.name)
        try:
            return obj.__dict__[self.name]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value) -> None:
        step = current_time_step()
        if step is not None and id(obj) in step.manages:
            step.assign(obj, self.name, value)
            return
        obj.__dict__[self.name] = value
        structure_version.bump()


def is_recurrent(model) -> bool:
    """True for a model whose own fields include a State."""
    return bool(getattr(type(model), "__flux_states__", ()))


def check_unrolled(model) -> None:
    """Raise the 'unroll it first' error unless a step context manages `model`."""
    step = current_time_step()
    if step is None or id(model) not in step.manages:
        names = ", ".join(type(model).__flux_states__)
        raise FluxError(NOT_UNROLLED.format(model=type(model).__name__, names=names))
