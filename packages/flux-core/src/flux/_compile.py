"""Compiled models: a model plus a backend, callable and trainable exactly like the model.

`Compiled` owns everything backends should not redo: turning the user's arguments into flat
arrays and a signature, tracing once per signature, autodiff, checking cotangents, and writing
gradients into Params. A backend only lowers shaped graphs to functions of flat arrays.
"""
from __future__ import annotations

import numpy as np

from ._autodiff import vjp
from ._core import ESCAPED, Trace, Tracer, TraceError
from ._errors import FluxError, FluxTypeError, FluxValueError, ShapeError
from ._ir import Aval
from ._model import is_model, model_paths, params
from ._param import Param, epoch
from ._pytree import LEAF, Tree, flatten, unflatten

__all__ = ["Compiled", "trace"]


def trace(model, avals, in_tree: Tree, root=None):
    """Trace `model` called on abstract inputs of the given avals; returns the Graph.

    Model frames and parameter names use attribute paths from `root` (default: `model`).
    """
    with Trace(model_paths(model if root is None else root)) as t:
        tracers = [t.new_input(aval) for aval in avals]
        out = model(*unflatten(in_tree, tracers))
        leaves, out_tree = flatten(out)
        graph = t.graph([x.variable for x in tracers], leaves, in_tree, out_tree)
    return graph


def _model_dtype(model):
    """The one floating dtype of the model's Params (inputs are cast to it), else None."""
    dtypes = {p.dtype for p in params(model).values() if p.dtype.kind == "f"}
    return dtypes.pop() if len(dtypes) == 1 else None


def as_input_array(value, dtype, where: str) -> np.ndarray:
    """A numeric array for one input leaf, cast to the model's dtype; else a TypeError naming it."""
    if isinstance(value, Param):
        value = value.value
    if isinstance(value, Tracer):
        raise TraceError(ESCAPED)
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise FluxTypeError(f"{where}: expected a numeric array, found "
                             f"{type(value).__name__} with dtype {array.dtype}: {value!r:.80}")
    if dtype is not None and array.dtype != dtype:
        array = array.astype(dtype)
    return array


class _Entry:
    """What is built for one input signature: the graph and its lowered functions."""

    __slots__ = ("graph", "forward", "single_out", "grad", "steps")

    def __init__(self, graph, forward):
        self.graph = graph
        self.forward = forward
        self.single_out = graph.out_tree.kind is LEAF
        self.grad = None
        self.steps = {}


class Compiled:
    """`model` compiled for `backend`: call it, `flux.back`/`update`/`train` it like the model.

    Parameters stay in the model's `Param` objects: updates made through the compiled model
    are seen by the model and the other way round.
    """

    def __init__(self, model, backend, options=None):
        self.model = model
        self.backend = backend
        self.options = dict(options or {})
        self._entries: dict = {}
        self._fast: dict = {}
        self._epoch = -1
        self._dtype = None

    def __repr__(self) -> str:
        return f"{self.backend.name}({self.model!r})"

    @property
    def dtype(self):
        self._refresh()
        return self._dtype

    def _refresh(self) -> None:
        if self._epoch != epoch.value:
            self._entries.clear()
            self._fast.clear()
            self._dtype = _model_dtype(self.model)
            self._epoch = epoch.value

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, *args):
        if self._epoch != epoch.value:
            self._refresh()
        if len(args) == 1:
            x = args[0]
            if type(x) is np.ndarray and (x.dtype == self._dtype or self._dtype is None):
                entry = self._fast.get((x.shape, x.dtype))
                if entry is not None:
                    outs = entry.forward(x)
                    return outs[0] if entry.single_out else unflatten(entry.graph.out_tree, outs)
        leaves, entry = self._prepare(args)
        outs = entry.forward(*leaves)
        return outs[0] if entry.single_out else unflatten(entry.graph.out_tree, outs)

    def _prepare(self, args):
        """Flat input arrays for `args` and the entry for their signature (built if new)."""
        if self._epoch != epoch.value:
            self._refresh()
        raw, tree = flatten(args)
        leaves = [as_input_array(v, self._dtype, f"input {i}") for i, v in enumerate(raw)]
        key = (tree, tuple((x.shape, x.dtype) for x in leaves))
        entry = self._entries.get(key)
        if entry is None:
            graph = trace(self.model, [Aval(x.shape, x.dtype) for x in leaves], tree)
            entry = self._entries[key] = _Entry(graph, self.backend.lower(graph, self.options))
            if len(leaves) == 1 and tree == _ONE_ARG:
                self._fast[(leaves[0].shape, leaves[0].dtype)] = entry
        return leaves, entry

    def all_params(self) -> list:
        """The model's Params (`flux.params`), then any other Param its traced graphs use
        (e.g. one a forward function reaches through a closure)."""
        found = {id(p): p for p in params(self.model).values()}
        for entry in list(self._entries.values()):
            for p in (entry.graph.param_objs if isinstance(entry, _Entry) else entry.params):
                found.setdefault(id(p), p)
        return list(found.values())

    def graph(self, *args):
        """The traced graph for these inputs (arrays or shapes' example arrays)."""
        return self._prepare(args)[1].graph

    # -- gradients ------------------------------------------------------------------------------

    def back(self, delta, *args):
        """Accumulate parameter gradients for output cotangent `delta`; return input gradients."""
        leaves, entry = self._prepare(args)
        graph = entry.graph
        if entry.grad is None:
            entry.grad = self.backend.lower(vjp(graph), self.options)
        deltas = _cotangents(delta, graph)
        outs = entry.grad(*leaves, *deltas)
        n_out, n_in = len(graph.outputs), len(graph.inputs)
        input_grads = outs[n_out:n_out + n_in]
        accumulate(graph.param_objs, outs[n_out + n_in:])
        return tuple(unflatten(graph.in_tree, input_grads))

    def loss_and_grads(self, loss, x, y):
        """The loss of one `(x, y)` pair and the gradient of every param: one backend call.

        Returns ``(loss, params, grads)`` with `params` the graph's Param objects.
        """
        if self._epoch != epoch.value:
            self._refresh()
        if type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype == self._dtype:
            step = self._fast.get((loss, x.shape, y.shape))
            if step is not None:
                outs = step.run(x, y)
                return outs[0], step.params, outs[1:]
        step, leaves = self._step(loss, x, y)
        outs = step.run(*leaves)
        return outs[0], step.params, outs[1:]

    def _step(self, loss, x, y):
        if self._epoch != epoch.value:
            self._refresh()
        raw, tree = flatten((x, y))
        leaves = [as_input_array(v, self._dtype, f"input {i}") for i, v in enumerate(raw)]
        key = (id(loss), tree, tuple((a.shape, a.dtype) for a in leaves))
        step = self._entries.get(key)
        if step is None:
            step = self._entries[key] = _TrainStep(self, loss, leaves, tree)
            if tree == _TWO_ARGS and self._dtype is not None and all(
                    a.dtype == self._dtype for a in leaves):
                self._fast[(loss, leaves[0].shape, leaves[1].shape)] = step
        return step, leaves


_ONE_ARG = flatten((np.zeros(()),))[1]
_TWO_ARGS = flatten((np.zeros(()), np.zeros(())))[1]


class _TrainStep:
    """The graph ``loss(model(x), y)`` differentiated with respect to every param, lowered."""

    def __init__(self, compiled: Compiled, loss, leaves, tree):
        model = compiled.model
        graph = trace(_Objective(model, loss), [Aval(a.shape, a.dtype) for a in leaves], tree,
                      root=model)
        if len(graph.outputs) != 1 or graph.outputs[0].aval.shape != ():
            shapes = [o.aval.shape for o in graph.outputs]
            raise ShapeError(f"the loss must return one number (a 0-d value); "
                             f"{getattr(loss, '__name__', loss)} returned shapes {shapes}")
        self.graph = vjp(graph, wrt_inputs=[False] * len(graph.inputs), seed=1.0)
        self.params = graph.param_objs
        self.run = compiled.backend.lower(self.graph, compiled.options)
        self.loss = loss


class _Objective:
    """``loss(model(x), y)`` as one traceable callable (paths stay those of the model)."""

    def __init__(self, model, loss):
        self.model = model
        self.loss = loss

    def __call__(self, x, y):
        return self.loss(self.model(x), y)


def _cotangents(delta, graph) -> list:
    leaves, tree = flatten(delta)
    if tree != graph.out_tree and not (len(leaves) == len(graph.outputs) == 1):
        raise FluxValueError(f"the cotangent Δ must have the structure of the model's output "
                        f"({graph.out_tree}), found {tree}")
    out = []
    for i, (value, atom) in enumerate(zip(leaves, graph.outputs)):
        array = np.asarray(value, dtype=atom.aval.dtype)
        if array.shape != atom.aval.shape:
            try:
                array = np.broadcast_to(array, atom.aval.shape)
            except ValueError:
                raise ShapeError(f"the cotangent Δ (output {i}) has shape {array.shape}; the "
                                 f"model's output has shape {atom.aval.shape}") from None
        out.append(array)
    return out


def accumulate(param_objs, grads) -> None:
    """Add `grads` into the Params' gradient buffers (all checked before any is changed)."""
    for p, g in zip(param_objs, grads):
        if g.shape != p.shape:
            raise FluxError(f"internal: gradient of shape {g.shape} for a Param of shape {p.shape}")
    for p, g in zip(param_objs, grads):
        if p._grad is None:
            p._grad = g if g.flags.writeable and g.base is None else np.array(g)
        else:
            p._grad += g


def compiled_of(model) -> Compiled:
    """The Compiled a model runs through: itself if compiled, else its NumPy twin."""
    if isinstance(model, Compiled):
        return model
    from ._model import compiled_numpy
    if is_model(model):
        return compiled_numpy(model)
    raise FluxTypeError(f"expected a flux model (an @net class instance, a Chain, a layer or a "
                    f"compiled model), found {type(model).__name__}")
