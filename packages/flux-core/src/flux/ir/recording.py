"""What a trace records for `flux.shapes` and `flux.summary` besides equations: the calls of
models and named functions (`CallEvent`s), and the shape errors it went past (`CallLog`).

A trace with a `CallLog` is *tolerant*: a shape rule that fails is recorded and tracing goes
on with a guessed output shape (`guess_shape`), every value computed from a guess being
*tainted*, so the rest of the model can still be shown.
"""
from __future__ import annotations

import functools

from flux.errors import tracing
from flux.ir.graph import Aval, Eqn, Var

__all__ = ["CallEvent", "CallLog", "named", "guess_shape"]


class CallEvent:
    """One call of a model (or a named function) recorded while tracing: what was called, at
    which depth (1 = the outermost model), with which arguments and result, and the range of
    equations it recorded."""

    __slots__ = ("target", "call", "depth", "args", "result", "start", "end", "replayed",
                 "repeats")

    def __init__(self, target, call, depth, args, start):
        self.target = target
        self.call = call
        self.depth = depth
        self.args = args
        self.result = None
        self.start = start
        self.end = start
        self.replayed = False   # a flip()ped call whose result was computed earlier
        self.repeats = 1        # how many times it runs: the steps of the loops around it


class CallLog:
    """The calls a tolerant trace recorded, the shape errors it went past, and its guesses."""

    def __init__(self):
        self.events: list[CallEvent] = []
        self.failures: list = []    # (ShapeError, index of the equation that failed)
        self.tainted: set = set()   # ids of Vars whose shapes are guesses after a failure

    def guess(self, trace, prim, atoms, params, error):
        """Record the failure (unless a guess caused it), then go on with a guessed output so
        the rest of the model can still be shown; its Var is tainted."""
        guess = guess_shape(prim, [a.aval for a in atoms], params)
        if guess is None:
            raise error
        if not any(id(a) in self.tainted for a in atoms):
            self.failures.append((error, len(trace.eqns)))
        out = Var(guess)
        self.tainted.add(id(out))
        trace.eqns.append(Eqn(prim, atoms, [out], params, trace.source()))
        return trace.tracer(out)

    def taint(self, atoms, outs) -> None:
        """Values computed from a guess are guesses too."""
        if self.tainted and any(id(a) in self.tainted for a in atoms):
            self.tainted.update(id(v) for v in outs)


def guess_shape(prim, avals, params):
    """A plausible output for an equation whose shape rule failed (for showing the rest of a
    model after a shape error), or None where there is none."""
    if prim.name == "matmul" and all(a.ndim >= 2 for a in avals):
        a, b = avals
        return Aval(a.shape[:-1] + b.shape[-1:], a.dtype)
    if prim.elementwise:
        biggest = max(avals, key=lambda a: (a.ndim, a.size))
        dtype = prim.result_dtype or avals[-1].dtype
        return Aval(biggest.shape, dtype)
    if prim.name in ("reshape", "broadcast_to"):
        return Aval(params["shape"], avals[0].dtype)
    return None


def named(fn):
    """Record calls of the composite function `fn` as one call (``softmax(x)``) while a trace
    records its calls, so `flux.shapes` shows them as calls instead of their primitives."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        trace = tracing.trace
        if trace is None or trace.log is None:
            return fn(*args, **kwargs)
        event = CallEvent(wrapper, None, len(trace.calls) + 1, args, len(trace.eqns))
        trace.log.events.append(event)
        event.result = fn(*args, **kwargs)
        event.end = len(trace.eqns)
        return event.result
    return wrapper


