"""Hidden state in exported models: a stateful unrolled model's carried state becomes inputs
and outputs of the ONNX graph.

A stateful unrolled model (`flux.unroll(..., stateful=True)`, `flux.unroll1`) continues each
call from the hidden state the previous call left. Its export makes that state explicit, as
ONNX's own recurrent operators do (LSTM's ``initial_h`` and ``Y_h``): for each State field of
each such model, one more graph input, named by the field's attribute path
(``model.layers.0.y``), holding the state to start from, with the field's initial value as its
default (an initializer of the same name, so a runtime called without it starts from the
initial state, as the model's first call does), and one more output, the same name with
``.final``, holding the state after the call, to pass in at the next call.

`CarrySource` is what the export traces with in place of a compiled model: it hands every
such model its initial state as if a previous call had left it there, which makes the trace
read it through graph inputs (`flux.transforms.carry`). Other owners on the carry boundary
are handled by the export as they come: a layer's Buffers (BatchNorm's running statistics)
are constants, fresh random numbers (Dropout forced into training mode) are drawn by the
runtime (RandomUniformLike), and the new running statistics of a BatchNorm forced into
training mode are not outputs (the export is a function of its inputs).
"""
from __future__ import annotations

import numpy as np

from flux.model.walk import walk
from flux.transforms.carry import Carrier, state_owners
from flux.transforms.unroll import state_vars

__all__ = ["CarrySource", "FINAL", "is_state_owner"]

FINAL = ".final"
"""The suffix of a carried state's output name (its input is named by the field's path)."""


class CarrySource:
    """Stands for a compiled model whose stateful unrolled models all hold their initial
    state (see the module docstring): ``trace(..., carry_source=source)`` after `prime`."""

    def __init__(self, model):
        self.owners = state_owners(model)
        self._paths = {id(obj): path for path, obj in walk(model)}
        self._defaults: dict[int, list] = {}

    def __bool__(self) -> bool:
        return bool(self.owners)

    def prime(self, graph) -> None:
        """Give each stateful owner its initial state in the shapes `graph` (traced without a
        source) carries out for it."""
        for owner in self.owners:
            avals = [v.aval for o, v in zip(graph.carry_out, _carried(graph)) if o is owner]
            if not avals:                      # (not called by this model's forward)
                continue
            values = [_broadcast(v.initial, a.shape, a.dtype)
                      for v, a in zip(self.variables(owner), avals)]
            owner.keep(self, values)

    def variables(self, owner) -> list:
        """The State fields whose values `owner` carries, in its order."""
        return [v for v in state_vars(owner.model) if not v.flipped]

    def names(self, owner) -> list[str]:
        """The attribute paths of `owner`'s carried State fields (its state inputs' names)."""
        base = self._paths.get(id(owner), "")
        inner = f"{base}.model" if base else "model"
        return [f"{inner}.{v.path}" for v in self.variables(owner)]

    def default(self, owner, k: int, shape: tuple, dtype) -> np.ndarray:
        """The initial value of `owner`'s k-th carried field as an array of `shape`."""
        return _broadcast(self.variables(owner)[k].initial, shape, dtype)


def _carried(graph) -> list:
    """The graph's carried-state outputs (after the model's own)."""
    return graph.outputs[len(graph.outputs) - len(graph.carry_out):]


def _broadcast(value, shape: tuple, dtype) -> np.ndarray:
    """A State field's initial value (a point ``(out,)`` or ``(1, out)``, or a whole batch) as
    an array of `shape`."""
    array = np.asarray(value.peek() if hasattr(value, "peek") else value, dtype)
    if array.shape == tuple(shape):
        return array.copy()
    if array.size == int(np.prod(shape, dtype=np.int64)):
        return array.reshape(shape).copy()
    point = array.reshape(array.shape[1:]) if array.ndim >= 2 and array.shape[0] == 1 else array
    return np.broadcast_to(point, shape).copy()


def is_state_owner(owner) -> bool:
    """Whether a carry-boundary owner is a stateful unrolled model (whose state is exported
    as inputs and outputs)."""
    return isinstance(owner, Carrier)
