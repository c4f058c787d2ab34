"""Compiled models: a model plus a backend, callable and trainable exactly like the model.

`Compiled` owns everything backends should not redo: turning the user's arguments into flat
arrays and a signature, tracing once per signature, autodiff, checking cotangents, and writing
gradients into Params. A backend only lowers shaped graphs to functions of flat arrays.
"""
from __future__ import annotations

import math

import numpy as np

from ._autodiff import vjp
from ._core import ESCAPED, Trace, Tracer, TraceError
from ._errors import FluxError, FluxTypeError, FluxValueError, ShapeError
from ._ir import Aval
from ._model import is_model, model_paths, params
from ._param import Param, epoch
from ._pytree import LEAF, Tree, flatten, flatten_args, unflatten
from ._source import user_errors, user_facing


def unwrap(args):
    """Batch/Seq arguments as raw arrays, and the function that wraps results back."""
    from ._batching import unwrap as unwrap_batches
    return unwrap_batches(args)

__all__ = ["Compiled", "trace"]


def trace(model, avals, in_tree: Tree, root=None, carry_source=None):
    """Trace `model` called on abstract inputs of the given avals; returns the Graph.

    Model frames and parameter names use attribute paths from `root` (default: `model`);
    stateful unrolled models read their carried hidden state from `carry_source` (a Compiled).
    """
    with Trace(model_paths(model if root is None else root)) as t:
        t.carry_source = carry_source
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

    __slots__ = ("graph", "forward", "single_out", "grad", "n_out")

    def __init__(self, graph, forward):
        self.graph = graph
        self.forward = forward
        self.single_out = graph.out_tree.kind is LEAF and not graph.carry_out
        self.grad = None
        self.n_out = len(graph.outputs) - len(graph.carry_out)


class Compiled:
    """`model` compiled for `backend`: call it, `flux.back`/`update`/`train` it like the model.

    Parameters stay in the model's `Param` objects: updates made through the compiled model
    are seen by the model and the other way round. The hidden state of stateful unrolled
    models inside belongs to each compiled copy (`flux.reset` puts it back).
    """

    def __init__(self, model, backend, options=None):
        self.model = model
        self.backend = backend
        self.options = dict(options or {})
        self._entries: dict = {}
        self._fast: dict = {}
        self._epoch = -1
        self._dtype = None
        self._owners: list = []     # stateful unrolled models whose hidden state we carry

    def __repr__(self) -> str:
        return f"{self.backend.name}({self.model!r})"

    def lower(self, graph):
        """The backend's function for `graph` (subclasses may lower with more context)."""
        return self.backend.lower(graph, self.options)

    @property
    def dtype(self):
        self._refresh()
        return self._dtype

    def _refresh(self) -> None:
        if self._epoch != epoch.value:
            from ._unroll import state_owners
            self._entries.clear()
            self._fast.clear()
            self._dtype = _model_dtype(self.model)
            self._owners = state_owners(self.model)
            self._epoch = epoch.value

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, *args):
        try:
            if self._epoch != epoch.value:
                self._refresh()
            if len(args) == 1:
                x = args[0]
                if type(x) is np.ndarray and (x.dtype == self._dtype or self._dtype is None):
                    entry = self._fast.get((x.shape, x.dtype))
                    if entry is not None:
                        outs = entry.forward(x)
                        return outs[0] if entry.single_out else unflatten(entry.graph.out_tree,
                                                                          outs)
            args, wrap = unwrap(args)
            leaves, entry = self._prepare(args)
            outs = entry.forward(*leaves, *self._carried(entry.graph))
        except Exception as error:
            raise user_facing(error) from error.__cause__
        outs = self._keep_carried(entry.graph, outs, entry.n_out)
        return wrap(outs[0] if entry.single_out else unflatten(entry.graph.out_tree, outs))

    def _prepare(self, args):
        """Flat input arrays for `args` and the entry for their signature (built if new)."""
        if self._epoch != epoch.value:
            self._refresh()
        raw, tree = flatten_args(args)
        leaves = [as_input_array(v, self._dtype, f"input {i}") for i, v in enumerate(raw)]
        key = (tree, tuple((x.shape, x.dtype) for x in leaves), self._carry_key())
        entry = self._entries.get(key)
        if entry is None:
            try:
                graph = trace(self.model, [Aval(x.shape, x.dtype) for x in leaves], tree,
                              carry_source=self)
            except TraceError as error:
                self._name_backend(error)
                raise
            self._learn_owners(graph)
            entry = self._entries[key] = _Entry(graph, self.lower(graph))
            if len(leaves) == 1 and tree == _ONE_ARG and not (graph.carry_in or graph.carry_out):
                self._fast[(leaves[0].shape, leaves[0].dtype)] = entry
        return leaves, entry

    def _name_backend(self, error: TraceError) -> None:
        """Name the backend being compiled for in the first line of `error`."""
        if self.backend.name != "numpy" and "backend" not in error.message.split("\n")[0]:
            first, _, rest = error.message.partition("\n")
            error.message = f"{first} (compiling for the {self.backend.name} backend)" + (
                f"\n{rest}" if rest else "")
            error.args = (error.message,)

    # -- carried hidden state -------------------------------------------------------------------

    def _carry_key(self) -> tuple:
        return tuple(owner.carry_signature(self) for owner in self._owners)

    def _learn_owners(self, graph) -> None:
        for owner in graph.carry_out:
            if all(owner is not known for known in self._owners):
                self._owners.append(owner)

    def _carried(self, graph) -> list:
        """The hidden-state arrays `graph` takes, from their owners."""
        arrays = []
        for owner in _unique(graph.carry_in):
            arrays.extend(owner.carried(self))
        return arrays

    def _keep_carried(self, graph, outs, n_out):
        """Give each owner its new hidden state (the outputs after the model's own)."""
        if graph.carry_out:
            state = outs[n_out:n_out + len(graph.carry_out)]
            for owner in _unique(graph.carry_out):
                count = sum(1 for o in graph.carry_out if o is owner)
                owner.keep(self, state[:count])
                state = state[count:]
        return outs

    def all_params(self) -> list:
        """The model's Params (`flux.params`), then any other Param its traced graphs use
        (e.g. one a forward function reaches through a closure)."""
        found = {id(p): p for p in params(self.model).values()}
        for entry in list(self._entries.values()):
            for p in (entry.graph.param_objs if isinstance(entry, _Entry) else entry.params):
                found.setdefault(id(p), p)
        return list(found.values())

    @user_errors
    def graph(self, *args):
        """The traced graph for these inputs (arrays or shapes' example arrays)."""
        return self._prepare(unwrap(args)[0])[1].graph

    # -- gradients ------------------------------------------------------------------------------

    @user_errors
    def back(self, delta, *args):
        """Accumulate parameter gradients for output cotangent `delta`; return input gradients.

        For a stateful unrolled model this is a call too: it starts from the current hidden
        state and advances it, and the gradient stops at the call boundary.
        """
        args, _ = unwrap(args)
        delta, _ = unwrap((delta,))
        leaves, entry = self._prepare(args)
        graph = entry.graph
        if entry.grad is None:
            entry.grad = self.lower(vjp(graph))
        deltas = _cotangents(delta[0], graph, entry.n_out)
        outs = entry.grad(*leaves, *self._carried(graph), *deltas)
        self._keep_carried(graph, outs, entry.n_out)
        n_all, n_in = len(graph.outputs), len(leaves)
        input_grads = outs[n_all:n_all + n_in]
        accumulate(graph.param_objs, outs[n_all + n_in:])
        return tuple(unflatten(graph.in_tree, input_grads))

    def loss_and_grads(self, loss, x, y):
        """The loss of one `(x, y)` pair and the gradient of every param: one backend call.

        Returns ``(loss, params, grads)`` with `params` the graph's Param objects.
        """
        step, leaves = self.training_step(loss, x, y)
        graph = step.graph
        outs = step.run(*leaves, *self._carried(graph))
        self._keep_carried(graph, outs, 1)
        return outs[0], step.params, outs[1 + len(graph.carry_out):]

    def train_step(self, loss, opt, x, y) -> float:
        """One training step on the pair ``(x, y)``: the loss before the update, as a float.

        The update is applied only when the loss is finite (`flux.train` then stops with an
        error naming the step). Backends that run whole steps themselves override this (with
        the same contract: afterwards the model's Params hold the new values).
        """
        value, ps, grads = self.loss_and_grads(loss, x, y)
        value = float(value)
        if math.isfinite(value):
            opt.apply(ps, grads)
        return value

    def apply_update(self, opt, ps, grads) -> None:
        """Apply `opt` to the Params `ps` with the gradients `grads` (`flux.update`); backends
        that keep parameters themselves override this to update on their side."""
        opt.apply(ps, grads)

    def training_step(self, loss, x, y) -> tuple:
        """``(step, leaves)``: the `_TrainStep` for ``loss(model(x), y)`` (built on first use)
        and the flat input arrays. Plain arrays of the model's dtype, the common case, take a
        shortcut past argument flattening; backends' `train_step` start here too."""
        if self._epoch != epoch.value:
            self._refresh()
        if type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype == self._dtype:
            step = self._fast.get((loss, x.shape, y.shape))
            if step is not None:
                return step, (x, y)
        (x, y), _ = unwrap((x, y))
        return self._step(loss, x, y)

    def _step(self, loss, x, y):
        if self._epoch != epoch.value:
            self._refresh()
        raw, tree = flatten_args((x, y))
        leaves = [as_input_array(v, self._dtype, f"input {i}") for i, v in enumerate(raw)]
        key = (loss, tree, tuple((a.shape, a.dtype) for a in leaves), self._carry_key())
        step = self._entries.get(key)
        if step is None:
            try:
                step = self._entries[key] = _TrainStep(self, loss, leaves, tree)
            except TraceError as error:
                self._name_backend(error)
                raise
            self._learn_owners(step.objective)
            stateless = not (step.objective.carry_in or step.objective.carry_out)
            if tree == _TWO_ARGS and stateless and self._dtype is not None and all(
                    a.dtype == self._dtype for a in leaves):
                self._fast[(loss, leaves[0].shape, leaves[1].shape)] = step
        return step, leaves


def _unique(owners) -> list:
    """`owners` without repeats, in order of first appearance (compared by identity)."""
    seen: dict[int, object] = {}
    for owner in owners:
        seen.setdefault(id(owner), owner)
    return list(seen.values())


_ONE_ARG = flatten_args((np.zeros(()),))[1]
_TWO_ARGS = flatten_args((np.zeros(()), np.zeros(())))[1]


class _TrainStep:
    """The graph ``loss(model(x), y)`` (`objective`), and, built on first use, the same
    differentiated with respect to every param (`graph`) and lowered (`run`); a backend that
    differentiates the objective itself never pays for those two."""

    def __init__(self, compiled: Compiled, loss, leaves, tree):
        model = compiled.model
        graph = trace(_Objective(model, loss), [Aval(a.shape, a.dtype) for a in leaves], tree,
                      root=model, carry_source=compiled)
        n_out = len(graph.outputs) - len(graph.carry_out)
        if n_out != 1 or graph.outputs[0].aval.shape != ():
            shapes = [o.aval.shape for o in graph.outputs[:n_out]]
            raise ShapeError(f"the loss must return one number (a 0-d value); "
                             f"{getattr(loss, '__name__', loss)} returned shapes {shapes}")
        self.objective = graph
        self.params = graph.param_objs
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


class _Objective:
    """``loss(model(x), y)`` as one traceable callable (paths stay those of the model)."""

    def __init__(self, model, loss):
        self.model = model
        self.loss = loss

    def __call__(self, x, y):
        return self.loss(self.model(x), y)


def _cotangents(delta, graph, n_out: int) -> list:
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
