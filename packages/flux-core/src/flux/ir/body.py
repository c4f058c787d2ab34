"""Tracing a loop's body: a `BodyTrace` records one step of a loop as its own closed graph.

The body is traced inside the trace of the model around it (the outer trace), with the same
model frames, paths and mode, so errors and `flux.shapes` point at the user's lines as usual.
Whatever the body reads from outside, values of the outer trace (or of traces around that)
and Params, becomes an input of the body (`captured`): the loop passes those as its loop
invariants (`scan`'s consts), so the body graph itself has no free variables but its inputs
and constants. Hidden state carried between calls and fresh random numbers cannot be made
once for every step: reaching them raises `NeedsUnrolling`, and the caller unrolls instead.
"""
from __future__ import annotations

from flux.errors import TraceError
from flux.ir.trace import ESCAPED, Trace, Tracer

__all__ = ["BodyTrace", "NeedsUnrolling"]


class NeedsUnrolling(Exception):
    """A loop body used something that differs step by step outside the loop's carried values
    (a nested stateful recurrence's carried state, fresh random numbers): unroll instead."""


class _NoCarry:
    """The body's `trace.carry`: any use means the loop must be unrolled."""

    def __getattr__(self, name):
        raise NeedsUnrolling(name)


class BodyTrace(Trace):
    """The trace of one loop step inside `outer` (see the module docstring)."""

    def __init__(self, outer: Trace):
        super().__init__(outer.paths)
        self.outer = outer
        self.calls = outer.calls            # the same model call stack
        self.training = outer.training
        self.time_step = outer.time_step
        self.loops = outer.loops
        self.watch_draws = outer.watch_draws
        self.carry = _NoCarry()
        self.captured: list = []            # outer Tracers, in the order of body inputs
        self.captured_inputs: list = []     # the body input standing for each
        self._captures: dict[int, Tracer] = {}

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if self.first_draw is not None and self.outer.first_draw is None:
            self.outer.first_draw = self.first_draw

    def capture(self, value: Tracer) -> Tracer:
        """The body input standing for `value`, a Tracer of a trace around this one."""
        if value.trace is self:
            return value
        known = self._captures.get(id(value.variable))
        if known is not None:
            return known
        outer = self.outer
        if value.trace is not outer:
            if not isinstance(outer, BodyTrace):
                raise TraceError(ESCAPED)
            value = outer.capture(value)
        inner = self.new_input(value.aval)
        self.captured.append(value)
        self.captured_inputs.append(inner)
        self._captures[id(value.variable)] = inner
        return inner

    def param(self, p) -> Tracer:
        return self.capture(self.outer.param(p))

    def atom(self, value):
        if isinstance(value, Tracer) and value.trace is not self:
            return self.capture(value).variable
        return super().atom(value)

    def body_graph(self, inputs: list, outputs: list):
        """The closed body graph: the captured values' inputs first, then `inputs`."""
        self.carry = None
        outputs = [self.atom(value) for value in outputs]     # (captures what they read)
        return self.graph([t.variable for t in self.captured_inputs] +
                          [t.variable for t in inputs], outputs)
