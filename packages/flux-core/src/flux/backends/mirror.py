"""Mirrors: a backend's own copies of Params and of optimiser state, kept current by version.

A backend that keeps parameters on its side (TensorFlow variables, MXNet arrays, GPU arrays)
subclasses `ParamMirror` and says how to make, write and read one of its arrays; the mirror
does the rest of the protocol of `flux.Param`:

- `record(p)` makes the backend array of a Param on first use (again if its shape changed);
- `sync(records)` copies in each Param whose `version` moved since its array last took it
  (an assignment, an in-place write, a NumPy update, training elsewhere): one integer
  comparison per Param per call, nothing copied for the others;
- `hold(records)`, after the backend updated its arrays, makes each Param defer to the mirror
  (`Param.defer`): it fetches its value (`fetch`) the next time anyone reads it, so a training
  loop that does not look at the Params copies nothing back.

`OptimiserMirror` does the same for an optimiser's slots (`Optimiser.state`): loaded from the
optimiser when its `state_version` moved, handed back (`Optimiser.defer_state`) after each
update the backend applied, so checkpoints, `resume` and NumPy updates continue from the
backend's values.
"""
from __future__ import annotations

import weakref
from abc import ABC, abstractmethod

import numpy as np

__all__ = ["ParamMirror", "Mirrored", "OptimiserMirror"]


class Mirrored:
    """A Param, its backend array, and the Param `version` that array holds."""

    __slots__ = ("param", "array", "version", "shape")

    def __init__(self, param, array, version: int):
        self.param = param
        self.array = array
        self.version = version
        self.shape = param.shape


class ParamMirror(ABC):
    """One backend array per Param (see the module docstring). Subclasses implement `new`,
    `assign` and `read`."""

    def __init__(self):
        self._records: dict[int, Mirrored] = {}

    # -- what a backend implements ----------------------------------------------------------------

    @abstractmethod
    def new(self, value: np.ndarray):
        """A new backend array holding `value`."""

    @abstractmethod
    def assign(self, array, value: np.ndarray) -> None:
        """Write `value` (a NumPy array of the Param's shape) into the backend `array`."""

    @abstractmethod
    def read(self, array) -> np.ndarray:
        """The backend `array` as a NumPy array (of the Param's size)."""

    # -- the protocol -----------------------------------------------------------------------------

    def record(self, p) -> Mirrored:
        """`p`'s record, made on first use (and again when `p` changed shape)."""
        rec = self._records.get(id(p))
        if rec is None or rec.param is not p or rec.shape != p.shape:
            version = p.version
            rec = self._records[id(p)] = Mirrored(p, self.new(p.peek()), version)
        return rec

    def records(self, ps) -> list[Mirrored]:
        return [self.record(p) for p in ps]

    def array(self, p):
        """`p`'s backend array (made on first use)."""
        return self.record(p).array

    def sync(self, records) -> None:
        """Copy into its array every Param changed since the array last took it."""
        assign = self.assign
        for rec in records:
            p = rec.param
            if p._version != rec.version:
                assign(rec.array, p.peek())      # (fetched first if another mirror holds it)
                rec.version = p._version

    def hold(self, records) -> None:
        """The arrays of `records` now hold the newest values of their Params."""
        for rec in records:
            rec.version = rec.param.defer(self)

    def pull(self, params) -> None:
        """Arrays changed outside flux (a Keras `fit`, a hand-written loop) hold the newest
        values of their Params."""
        found = (self._records.get(id(p)) for p in params)
        self.hold([rec for p, rec in zip(params, found) if rec is not None and rec.param is p])

    def fetch(self, p) -> np.ndarray:
        """The value of `p`'s array (called by `p` when it is read after `hold`)."""
        return self.read(self._records[id(p)].array)


class OptimiserMirror(ABC):
    """The backend side of one optimiser's state, per Param: the backend's arrays for the
    optimiser's slots (`Optimiser.slot_names`), shared by every training step of one compiled
    model. Subclasses implement `new_slots`, `load_slots` and `read_slots`."""

    def __init__(self, opt):
        self._opt = weakref.ref(opt)    # (the mirror lives as long as the optimiser, no longer)
        self.stateful = bool(opt.slot_names)
        self.version = None          # the opt.state_version the slots hold (None: load them)
        self._slots: dict[int, tuple] = {}   # id(Param) -> (Param, its array, slots)
        self.trainers = weakref.WeakKeyDictionary()   # TrainingStep -> (trainer, records)

    @property
    def opt(self):
        return self._opt()

    # -- what a backend implements ----------------------------------------------------------------

    @abstractmethod
    def new_slots(self, p, array) -> list:
        """Backend objects for `p`'s slots, one per `opt.slot_names`, beside its `array`."""

    @abstractmethod
    def load_slots(self, p, slots, values: tuple) -> None:
        """Write `values` (NumPy arrays or numbers, one per slot name) into `slots`."""

    @abstractmethod
    def read_slots(self, p, slots) -> tuple:
        """The values of `slots` as NumPy arrays (or numbers, for counters)."""

    # -- the protocol -----------------------------------------------------------------------------

    def slots(self, p, array) -> list:
        """`p`'s slots, made on first use (and again when `p`'s backend array was remade),
        loaded from the optimiser's current state."""
        found = self._slots.get(id(p))
        if found is None or found[0] is not p or found[1] is not array:
            slots = self.new_slots(p, array)
            if self.stateful:
                self.load_slots(p, slots, self.opt.current_slots(p))
            found = self._slots[id(p)] = (p, array, slots)
        return found[2]

    def refresh(self) -> None:
        """Load every slot from ``opt.state`` if it changed outside this mirror."""
        opt = self.opt
        if self.stateful and opt.state_version != self.version:
            for p, _, slots in self._slots.values():
                self.load_slots(p, slots, opt.current_slots(p))
            self.version = opt.state_version

    def stepped(self) -> None:
        """An update was applied here: the newest state is in this mirror now."""
        if self.stateful:
            self.version = self.opt.defer_state(self)

    def fetch_state(self, opt) -> dict:
        """``opt.state`` with the slots held here (called by `opt` when its state is read)."""
        state = dict(opt._state or {})
        for p, _, slots in self._slots.values():
            state[id(p)] = (p, *self.read_slots(p, slots))
        return state
