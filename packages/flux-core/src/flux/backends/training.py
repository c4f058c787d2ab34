"""Training steps: the objective ``loss(model(x), y)`` of a compiled model as one graph, and
(built only when asked for) its gradient graph; and the cotangents `flux.back` takes."""
from __future__ import annotations

import numpy as np

from flux.backends.tracing import trace
from flux.errors import FluxValueError, ShapeError
from flux.ir.graph import Aval
from flux.ir.pytree import flatten
from flux.transforms.autodiff import vjp

__all__ = ["TrainingStep", "Objective", "cotangents"]


class TrainingStep:
    """The graph ``loss(model(x), y)`` (`objective`), and, built on first use, the same
    differentiated with respect to every param (`graph`) and lowered (`run`); a backend that
    differentiates the objective itself never pays for those two."""

    def __init__(self, compiled, loss, leaves, tree):
        model = compiled.model
        graph = trace(Objective(model, loss), [Aval(a.shape, a.dtype) for a in leaves], tree,
                      root=model, carry_source=compiled, training=True)
        n_out = len(graph.outputs) - len(graph.carry_out)
        if n_out != 1 or graph.outputs[0].aval.shape != ():
            shapes = [o.aval.shape for o in graph.outputs[:n_out]]
            raise ShapeError(f"the loss must return one number (a 0-d value); "
                             f"{getattr(loss, '__name__', loss)} returned shapes {shapes}")
        self.objective = graph
        self.param_objs = graph.param_objs
        self.loss = loss
        self._compiled = compiled

    def __getattr__(self, name):
        """`graph` and `run` are made the first time they are asked for."""
        if name not in ("graph", "run"):
            raise AttributeError(name)
        n_inputs = len(self.objective.inputs) - len(self.objective.carry_in)
        self.graph = vjp(self.objective, wrt_inputs=[False] * n_inputs, seed=1.0)
        self.run = self._compiled.lower(self.graph)
        return getattr(self, name)


class Objective:
    """``loss(model(x), y)`` as one traceable callable (paths stay those of the model)."""

    def __init__(self, model, loss):
        self.model = model
        self.loss = loss

    def __call__(self, x, y):
        return self.loss(self.model(x), y)


def cotangents(delta, graph, n_out: int) -> list:
    leaves, tree = flatten(delta)
    if tree != graph.out_tree and not (len(leaves) == n_out == 1):
        raise FluxValueError(f"the cotangent Δ must have the structure of the model's output "
                        f"({graph.out_tree}), found {tree}")
    out = []
    for i, (value, atom) in enumerate(zip(leaves, graph.outputs[:n_out])):
        array = np.asarray(value, dtype=atom.aval.dtype)
        if array.shape != atom.aval.shape:
            try:
                array = np.broadcast_to(array, atom.aval.shape)
            except ValueError:
                raise ShapeError(f"the cotangent Δ (output {i}) has shape {array.shape}; the "
                                 f"model's output has shape {atom.aval.shape}") from None
        out.append(array)
    return out
