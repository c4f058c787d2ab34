"""A recurrence traced as one loop: the step model traced once, as the body of a `scan`
(`flux.ir.primitives.loop`), inside a `BodyTrace` (`flux.ir.body`).

`loop` returns None where the steps must be copies instead (`flux.transforms.steps`): with
``FLUX_LOOPS=unroll`` or a backend without loops, for `flip`, ``prev(v, n > 1)``, and a step
that reaches carried state between calls or fresh random numbers. For `flux.shapes` the step
is traced once between ``step(x)`` and ``over_n_steps(y)``.
"""
from __future__ import annotations

import numpy as np

from flux.errors import ShapeError
from flux.ir import primitives as P
from flux.ir.body import BodyTrace, NeedsUnrolling
from flux.ir.graph import Aval
from flux.ir.pytree import flatten, unflatten
from flux.ir.recording import named
from flux.ir.trace import Tracer, current_trace
from flux.model.state import TimeStep
from flux.ops import numpy_api as api
from flux.transforms.steps import traced_steps

__all__ = ["loop"]


def loop(owner, variables, args, history, axis, batch):
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
    outputs, final = traced_steps(owner, variables, inputs, history)
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
