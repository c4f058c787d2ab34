"""Hidden state carried from one call to the next, in one place.

A stateful unrolled model (`unroll(..., stateful=True)`, `unroll1`) keeps its final hidden
state for its next call, separately for each compiled copy of the model around it. Three
parties take part, all defined here:

- the owner (`Carrier`, mixed into `Unrolled` and `Unroll1`) keeps the arrays per compiled
  copy (`carried`, `keep`, `reset`);
- while a graph is traced, `CarriedState` (``trace.carry``) makes what the owner kept into new
  graph inputs at its first use, and what it holds after its call into graph outputs, so
  backends see ordinary inputs and outputs (`Graph.carry_in` / `Graph.carry_out` name the
  owner of each, after the model's own inputs and outputs);
- the compiled model's `CarryBook` passes the kept arrays in and stores the new ones, and
  adds their shapes to its cache keys.

Autodiff passes carried state through without cotangents, so the gradient stops at the call
boundary (truncated backpropagation through time).

The same boundary carries the two other things a compiled model, not its caller, hands a graph
at every call: fresh random numbers (`fresh_uniform`: an input whose owner is a `Draw`, drawn
from flux's generator at each call, so masks differ call to call, follow `flux.seed` and are
restored with a checkpoint's generator state, and every backend sees the same numbers), and
non-trainable layer state such as BatchNorm's running statistics (the layer is the owner:
its `Buffer`s go in, and in training mode their new values come out and are written back).
"""
from __future__ import annotations

import weakref

import numpy as np

from flux.ir.graph import Aval
from flux.ir.source import user_errors
from flux.ir.trace import current_trace
from flux.model.param import rng
from flux.model.walk import walk

__all__ = ["Carrier", "CarriedState", "carried_state", "CarryBook", "state_owners", "reset",
           "Draw", "fresh_uniform"]


class Carrier:
    """Hidden state kept between calls, per compiled copy (see the module docstring)."""

    def _init_carrier(self, stateful: bool) -> None:
        object.__setattr__(self, "stateful", bool(stateful))
        object.__setattr__(self, "_kept", weakref.WeakKeyDictionary())

    def carried(self, compiled):
        """What this model kept for `compiled` after its last call (None: nothing yet)."""
        return self._kept.get(compiled) if self.stateful else None

    def carry_signature(self, compiled):
        kept = self.carried(compiled)
        return None if kept is None else tuple(a.shape for a in kept)

    def keep(self, compiled, arrays) -> None:
        self._kept[compiled] = list(arrays)

    def reset(self) -> None:
        """Forget the hidden state of every compiled copy: the next call starts afresh."""
        self._kept.clear()


class Draw:
    """The owner of one graph input of uniform [0, 1) numbers, drawn afresh at every call."""

    def __init__(self, aval: Aval):
        self.aval = aval

    def carried(self, compiled) -> list:
        shape, dtype = self.aval.shape, self.aval.dtype
        draw = rng().random(shape, dtype=dtype if dtype in (np.float32, np.float64) else None)
        return [draw.astype(dtype, copy=False)]


def fresh_uniform(shape, dtype=np.float32):
    """Uniform [0, 1) numbers of `shape`, new at every call of the model being traced (a graph
    input drawn from flux's generator); outside a trace, drawn now."""
    trace = current_trace()
    if trace is None:
        return Draw(Aval(shape, dtype)).carried(None)[0]
    return carried_state(trace).draw(Aval(shape, dtype))


class CarriedState:
    """Carried hidden state while one graph is traced for `source` (a compiled model, or None
    when nothing was kept: tracing for `flux.shapes`, `flux_mxnet.symbol` ...)."""

    def __init__(self, trace, source):
        self.trace = trace
        self.source = source
        self.inputs: list = []    # (owner, Tracer) for each carried-state input
        self._now: dict = {}      # id(owner) -> [owner, its hidden state now (list) or None]

    def read(self, owner):
        """`owner`'s hidden state at this point of the trace, as a list of values: at its first
        use, new graph inputs for what it kept from its previous call (None if it kept nothing:
        start from the initial state); later, what it last wrote."""
        entry = self._now.get(id(owner))
        if entry is None:
            kept = owner.carried(self.source) if self.source is not None else None
            values = None
            if kept:
                values = [self.trace.new_input(Aval(a.shape, a.dtype)) for a in kept]
                self.inputs.extend((owner, t) for t in values)
            entry = self._now[id(owner)] = [owner, values]
        return entry[1]

    def draw(self, aval: Aval):
        """A new graph input of fresh random numbers (see `fresh_uniform`)."""
        value = self.trace.new_input(aval)
        self.inputs.append((Draw(aval), value))
        return value

    def write(self, owner, values) -> None:
        """`owner`'s hidden state after its call: the graph outputs it for the next call."""
        self._now[id(owner)] = [owner, list(values)]

    def boundary(self) -> tuple[list, list]:
        """``(inputs, outputs)``: (owner, value) pairs entering and leaving the graph."""
        outputs = [(owner, v) for owner, values in self._now.values() if values for v in values]
        return self.inputs, outputs


def carried_state(trace) -> CarriedState:
    """The trace's `CarriedState` (made, with nothing kept, on first use)."""
    if trace.carry is None:
        trace.carry = CarriedState(trace, None)
    return trace.carry


class CarryBook:
    """A compiled model's side of carried state: the owners it carries state for, the part of
    its cache keys that depends on their state, and the arrays in and out of each call."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.owners: list = []

    def refresh(self, model) -> None:
        """Start again from the stateful unrolled models under `model` (its structure moved)."""
        self.owners = state_owners(model)

    def key(self) -> tuple:
        return tuple(owner.carry_signature(self.compiled) for owner in self.owners)

    def learn(self, graph) -> None:
        """Owners found while tracing `graph` (e.g. reached through a closure)."""
        for owner in graph.carry_out:
            if all(owner is not known for known in self.owners):
                self.owners.append(owner)

    def inputs(self, graph) -> list:
        """The hidden-state arrays `graph` takes after the model's own inputs."""
        arrays = []
        for owner in _unique(graph.carry_in):
            arrays.extend(owner.carried(self.compiled))
        return arrays

    def keep(self, graph, outs, n_out: int):
        """Give each owner its new hidden state: the outputs after the model's own `n_out`.
        Returns `outs`."""
        if graph.carry_out:
            state = outs[n_out:n_out + len(graph.carry_out)]
            for owner in _unique(graph.carry_out):
                count = sum(1 for o in graph.carry_out if o is owner)
                owner.keep(self.compiled, state[:count])
                state = state[count:]
        return outs


def _unique(owners) -> list:
    """`owners` without repeats, in order of first appearance (compared by identity)."""
    seen: dict[int, object] = {}
    for owner in owners:
        seen.setdefault(id(owner), owner)
    return list(seen.values())


def state_owners(model) -> list:
    """The stateful unrolled models under `model` (itself included): whose hidden state a
    compiled `model` carries between calls."""
    return [obj for _, obj in walk(model) if isinstance(obj, Carrier) and obj.stateful]


@user_errors
def reset(model) -> None:
    """Put every hidden state under `model` back to its initial value (for every compiled
    copy): the next call of a stateful unrolled model starts from its State fields' values."""
    target = model.model if getattr(model, "__flux_compiled__", False) else model
    for owner in state_owners(target):
        owner.reset()
