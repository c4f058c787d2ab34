"""A recurrence traced step by step: the hidden state at the first step, and the steps as
copies of the step model in one acyclic graph (full unrolling, with `flip`'s backward pass).

`traced_steps` is what `unroll` falls back to where a step cannot be one loop (see
`flux.transforms.looping`); `seq` and the helpers here serve both.
"""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxError, FluxValueError, ShapeError
from flux.ir.graph import Aval, Var
from flux.ir.pytree import flatten, unflatten
from flux.ir.trace import Tracer, current_trace
from flux.model.state import TimeStep
from flux.ops import numpy_api as api
from flux.transforms.carry import carried_state

__all__ = ["check_steps", "start", "traced_steps", "stack", "rank", "seq", "checked_seq",
           "Steps", "point_shape"]


def check_steps(n, what: str) -> int:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise FluxValueError(f"{what} needs a whole number of steps n ≥ 1, found {n!r}")
    return int(n)


def point_shape(shape: tuple, batch) -> tuple:
    """One data point's state shape, from an initial value's shape: a leading axis of 1 (the
    seed's row vectors, ``(1, out)``) or of the batch size is a batch axis."""
    if len(shape) >= 2 and shape[0] in (1, batch):
        return shape[1:]
    return shape


def initial(value, batch):
    """A State field's initial value for this call: ``(out,)`` and ``(1, out)`` become
    ``(batch, out)`` (or ``(out,)`` for a single sequence); a value that already has the batch
    axis is used as it is."""
    value = api.lift(value)
    shape = tuple(value.shape) if isinstance(value, Tracer) else tuple(np.shape(value))
    point = point_shape(shape, batch)
    target = point if batch is None else (batch,) + point
    if target == shape:
        return value
    if batch is None:
        return api.reshape(value, target)
    return api.broadcast_to(value, target)


def start(owner, variables, batch) -> dict:
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
            point = point_shape(tuple(np.shape(v.initial)), batch)
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
            history[v.key] = [initial(v.initial, batch)]
    return history


def traced_steps(owner, variables, inputs, history):
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


class Steps:
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


def checked_seq(x, n, axis):
    x = api._as_tracer_or_array(x)
    if rank(x) <= axis or x.shape[axis] != n:
        seq(x, n, axis=axis)            # raises the error naming both lengths
    return x


def stack(outputs, axis: int):
    """Stack per-step outputs (arrays or tuples of them) along the time axis."""
    leaves = [flatten(out) for out in outputs]
    tree = leaves[0][1]
    stacked = [api.stack([lv[0][i] for lv in leaves], axis=axis)
               for i in range(len(leaves[0][0]))]
    return unflatten(tree, stacked)


def rank(x) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def seq(x, n: int, axis: int | None = None) -> list:
    """Split a sequence into a list of its `n` steps: ``(batch, n, ...)`` along axis 1, a
    single sequence ``(n, ...)`` (rank ≤ 2) along axis 0.

    >>> [s.shape for s in seq(np.zeros((4, 3, 2)), 3)]
    [(4, 2), (4, 2), (4, 2)]
    """
    n = check_steps(n, "seq(x, n)")
    x = api._as_tracer_or_array(x)
    if axis is None:
        axis = 1 if rank(x) >= 3 else 0
    if rank(x) <= axis or x.shape[axis] != n:
        found = x.shape[axis] if rank(x) > axis else None
        raise ShapeError(f"expected a sequence of length {n} (axis {axis} of the input), found "
                         f"length {found} in a value of shape {tuple(x.shape)}")
    index = (slice(None),) * axis
    return [api.getitem(x, index + (t,)) for t in range(n)]
