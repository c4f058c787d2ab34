"""`summary`: a table of a model's layers with their output shapes and parameter counts."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flux.backends.tracing import abstract_inputs
from flux.debug.shapes import _trace, live_vars
from flux.ir.pytree import flatten
from flux.ir.source import user_errors
from flux.ir.trace import Tracer
from flux.model.net import FunctionModel
from flux.model.walk import params

__all__ = ["summary", "Summary", "Row"]


@dataclass
class Row:
    """One layer: its attribute `path`, `type` name, `output` shape(s) (of its first call),
    the number of parameters under it (`params`; a Param shared by several layers of the same
    depth is counted once, where it first appears) and its nesting `depth`."""

    path: str
    type: str
    output: tuple
    params: int
    depth: int
    calls: int = 1
    """How many times the layer ran (an unrolled model calls its layers once per step)."""


@dataclass
class Summary:
    """What `flux.summary` returns; ``str()`` is the table, `rows` the layers in call order."""

    model: str
    rows: list = field(default_factory=list)
    total: int = 0
    trainable: int = 0
    input_shapes: list = field(default_factory=list)

    def __str__(self) -> str:
        header = ("Layer (path)", "Type", "Output shape", "Params")
        body = [("  " * (r.depth - 1) + (r.path or "(model)"),
                 r.type + (f" ×{r.calls}" if r.calls > 1 else ""), _shape_text(r.output),
                 f"{r.params:,}") for r in self.rows]
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h)
                  for i, h in enumerate(header)]
        rule = "  ".join("-" * w for w in widths)

        def line(cells):
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))
        text = [f"{self.model} on inputs {', '.join(map(str, self.input_shapes))}", rule,
                line(header), rule, *(line(row) for row in body), rule,
                f"Total params: {self.total:,} (trainable: {self.trainable:,})"]
        return "\n".join(text)

    def __repr__(self) -> str:
        return str(self)


def _shape_text(output) -> str:
    if isinstance(output, list):
        return ", ".join(str(s) for s in output)
    return str(output)


@user_errors
def summary(model, *input_shapes, depth: int | None = 2) -> Summary:
    """A table of the layers of `model` called on inputs of these shapes (or arrays): each
    layer's path, type, output shape and parameter count, like Keras' ``model.summary()``.

    `depth` is how many levels of nested models to list (1: only the model; 2: its direct
    layers, the default; None: all). Computed by abstract evaluation: no array work.

    >>> from flux import Affine, Chain, relu
    >>> print(summary(Chain(Affine(4, 8), relu, Affine(8, 2)), (3, 4)).rows[1])
    Row(path='layers.0', type='Affine', output=(3, 8), params=40, depth=2, calls=1)
    """
    model, avals, tree = abstract_inputs(model, input_shapes, "summary")
    trace, _, out, error = _trace(model, avals, tree, tolerant=True)
    if error is None and trace.log.failures:
        error = trace.log.failures[0][0]
    if error is not None:
        raise error
    live = live_vars(trace, out)
    rows, counted, by_call = [], {}, {}
    for event in trace.log.events:
        if event.call is None or event.replayed or (depth is not None and event.depth > depth):
            continue
        results = [v.variable for v in flatten(event.result)[0] if isinstance(v, Tracer)]
        if not any(id(v) in live for v in results):
            continue   # discarded work (e.g. the backward pass of flip), not a call
        target = event.target
        repeat = by_call.get((id(target), event.depth))
        if repeat is not None:
            repeat.calls += event.repeats
            continue
        outputs = [v.shape for v in flatten(event.result)[0] if isinstance(v, Tracer)]
        done = counted.setdefault(event.depth, set())   # once per level of nesting
        own = [p for p in params(target).values() if id(p) not in done]
        done.update(id(p) for p in own)
        name = target._name if isinstance(target, FunctionModel) else type(target).__name__
        row = Row(event.call.path, name, outputs[0] if len(outputs) == 1 else outputs,
                  sum(int(np.prod(p.shape)) for p in own), event.depth, event.repeats)
        by_call[(id(target), event.depth)] = row
        rows.append(row)
    all_params = params(model)
    total = sum(int(np.prod(p.shape)) for p in all_params.values())
    shapes = [a.shape for a in avals]
    return Summary(type(model).__name__ if not isinstance(model, FunctionModel)
                   else model._name, rows, total, total, shapes)
