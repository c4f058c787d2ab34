"""Compiled models: a model plus a backend, callable and trainable exactly like the model.

`Compiled` owns everything backends should not redo: turning the user's arguments into flat
arrays and a signature, tracing once per signature, autodiff, checking cotangents, and writing
gradients into Params. A backend only lowers shaped graphs to functions of flat arrays.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from flux.backends.tracing import model_dtype, trace
from flux.backends.training import TrainingStep, cotangents
from flux.data.batching import unwrap
from flux.errors import FluxError, FluxTypeError, FluxValueError
from flux.ir.graph import Aval
from flux.ir.pytree import LEAF, flatten_args, unflatten
from flux.ir.source import user_errors, user_facing
from flux.ir.trace import ESCAPED, Tracer, TraceError
from flux.model.param import Param, structure_version
from flux.model.modes import is_modal
from flux.model.walk import params, walk
from flux.transforms.autodiff import vjp
from flux.transforms.carry import CarryBook

__all__ = ["Compiled", "as_input_array", "accumulate", "MAX_SIGNATURES", "NonFiniteGradient",
           "all_finite"]

MAX_SIGNATURES = 32
"""How many input signatures (and training steps) a compiled model keeps planned at once:
calling it with more distinct shapes drops the least recently used (traced again if it
comes back), so memory stays bounded, while the shapes in use are never traced twice."""


def as_input_array(value, dtype, where: str) -> np.ndarray:
    """A numeric array for one input leaf, floating ones cast to the model's dtype (integers,
    such as indices, and booleans stay as they are); else a TypeError naming it."""
    if isinstance(value, Param):
        value = value.value
    if isinstance(value, Tracer):
        raise TraceError(ESCAPED)
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise FluxTypeError(f"{where}: expected a numeric array, found "
                             f"{type(value).__name__} with dtype {array.dtype}: {value!r:.80}")
    if dtype is not None and array.dtype != dtype and array.dtype.kind == "f":
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
    models inside belongs to each compiled copy (`flux.reset` puts it back): `carry` passes
    it in and out of every graph that takes it (backends call ``carry.inputs(graph)`` and
    ``carry.keep(graph, outs, n_out)`` around graphs they run themselves).
    """

    __flux_compiled__ = True

    rank = 0
    """This process's position among the workers that train the model together (0: the
    chief, who writes checkpoints); a backend running data-parallel across processes sets it."""
    workers = 1
    """How many worker processes train the model together (1: this one alone)."""

    def __init__(self, model, backend, options=None):
        self.model = model
        self.backend = backend
        self.options = dict(options or {})
        self.carry = CarryBook(self)
        self._entries: OrderedDict = OrderedDict()   # signature -> _Entry / TrainingStep (LRU)
        self._fast: dict = {}
        self._structure = -1        # the structure_version the caches were built for
        self._dtype = None

    def __repr__(self) -> str:
        return f"{self.backend.name}({self.model!r})"

    def lower(self, graph):
        """The backend's function for `graph` (subclasses may lower with more context)."""
        return self.backend.lower(graph, self.options)

    def input_array(self, value, where: str):
        """One input leaf as the array this model's functions take: a NumPy array in the
        model's dtype (`as_input_array`). A backend that also takes its own arrays (CuPy
        arrays on the GPU, without a copy through the host) overrides it; the cache key is
        the array's shape and dtype either way."""
        return as_input_array(value, self._dtype, where)

    @property
    def dtype(self):
        self._refresh()
        return self._dtype

    def _refresh(self) -> None:
        if self._structure != structure_version.value:
            self._entries.clear()
            self._fast.clear()
            self._dtype = model_dtype(self.model)
            self._modal = any(is_modal(obj) for _, obj in walk(self.model))
            self.carry.refresh(self.model)
            self._structure = structure_version.value

    # -- calling --------------------------------------------------------------------------------

    def __call__(self, *args):
        try:
            if self._structure != structure_version.value:
                self._refresh()
            if len(args) == 1 and type(args[0]) is np.ndarray:
                # the fast path: one plain array of a signature already planned (entries are
                # keyed by the dtype they were planned for, so others take the path below)
                entry = self._fast.get((args[0].shape, args[0].dtype))
                if entry is not None:
                    outs = entry.forward(args[0])
                    return outs[0] if entry.single_out else unflatten(entry.graph.out_tree,
                                                                      outs)
            args, wrap = unwrap(args)
            leaves, entry = self._prepare(args)
            outs = entry.forward(*leaves, *self.carry.inputs(entry.graph))
        except Exception as error:
            raise user_facing(error) from error.__cause__
        outs = self.carry.keep(entry.graph, outs, entry.n_out)
        return wrap(outs[0] if entry.single_out else unflatten(entry.graph.out_tree, outs))

    def _prepare(self, args, training: bool = False):
        """Flat input arrays for `args` and the entry for their signature (built if new);
        `training` traces layers in auto mode as training (for `back`), where it matters."""
        if self._structure != structure_version.value:
            self._refresh()
        raw, tree = flatten_args(args)
        leaves = [self.input_array(v, f"input {i}") for i, v in enumerate(raw)]
        training = training and self._modal
        key = (tree, tuple((x.shape, x.dtype) for x in leaves), self.carry.key(), training)
        entry = self._cached(key)
        if entry is None:
            try:
                graph = trace(self.model, [Aval(x.shape, x.dtype) for x in leaves], tree,
                              carry_source=self, training=training)
            except TraceError as error:
                self._name_backend(error)
                raise
            self.carry.learn(graph)
            entry = self._cache(key, _Entry(graph, self.lower(graph)))
            if len(leaves) == 1 and tree == _ONE_ARG and not (
                    graph.carry_in or graph.carry_out or training):
                self._fast[(leaves[0].shape, leaves[0].dtype)] = entry
        return leaves, entry

    def _cached(self, key):
        """The entry for a signature, if it is cached (it becomes the most recently used)."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def _cache(self, key, entry):
        """Keep `entry` for its signature; beyond `MAX_SIGNATURES` the least recently used
        one (its graphs, its backend function and their buffers) is dropped."""
        self._entries[key] = entry
        while len(self._entries) > MAX_SIGNATURES:
            _, old = self._entries.popitem(last=False)
            for fast, value in list(self._fast.items()):
                if value is old:
                    del self._fast[fast]
        return entry

    def _name_backend(self, error: TraceError) -> None:
        """Name the backend being compiled for in the first line of `error`."""
        if self.backend.name != "numpy" and "backend" not in error.message.split("\n")[0]:
            first, _, rest = error.message.partition("\n")
            error.message = f"{first} (compiling for the {self.backend.name} backend)" + (
                f"\n{rest}" if rest else "")
            error.args = (error.message,)

    def all_params(self) -> list:
        """The model's Params (`flux.params`), then any other Param its traced graphs use
        (e.g. one a forward function reaches through a closure)."""
        found = {id(p): p for p in params(self.model).values()}
        for entry in list(self._entries.values()):
            for p in (entry.graph.param_objs if isinstance(entry, _Entry) else entry.param_objs):
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
        leaves, entry = self._prepare(args, training=True)
        graph = entry.graph
        if entry.grad is None:
            entry.grad = self.lower(vjp(graph))
        deltas = cotangents(delta[0], graph, entry.n_out)
        outs = entry.grad(*leaves, *self.carry.inputs(graph), *deltas)
        self.carry.keep(graph, outs, entry.n_out)
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
        outs = step.run(*leaves, *self.carry.inputs(graph))
        self.carry.keep(graph, outs, 1)
        return outs[0], step.param_objs, outs[1 + len(graph.carry_out):]

    def train_step(self, loss, opt, x, y) -> float:
        """One training step on the pair ``(x, y)``: the loss before the update, as a float.

        The update is applied only when the loss and every gradient are finite: with a finite
        loss and a non-finite gradient it raises `NonFiniteGradient` naming the Param
        (`flux.train` then stops with an error naming the step), with a non-finite loss it
        returns it. Backends that run whole steps themselves override this (with the same
        contract: afterwards the model's Params hold the new values).
        """
        value, ps, grads = self.loss_and_grads(loss, x, y)
        value = float(value)
        if math.isfinite(value):
            for p, g in zip(ps, grads):
                if not all_finite(g):
                    raise NonFiniteGradient(f"the gradient of {self._name_of(p)} is not "
                                            f"finite (the loss is {value})")
            opt.apply(ps, grads)
        return value

    def _name_of(self, p) -> str:
        name = next((n for n, q in params(self.model).items() if q is p), None)
        return f"the Param {name}" if name else "a Param (reached by the model's code)"

    def apply_update(self, opt, ps, grads) -> None:
        """Apply `opt` to the Params `ps` with the gradients `grads` (`flux.update`); backends
        that keep parameters themselves override this to update on their side."""
        opt.apply(ps, grads)

    def training_step(self, loss, x, y) -> tuple:
        """``(step, leaves)``: the `TrainingStep` for ``loss(model(x), y)`` (built on first use)
        and the flat input arrays. Plain arrays of the model's dtype, the common case, take a
        shortcut past argument flattening; backends' `train_step` start here too."""
        if self._structure != structure_version.value:
            self._refresh()
        if type(x) is np.ndarray and type(y) is np.ndarray and x.dtype == y.dtype == self._dtype:
            step = self._fast.get((loss, x.shape, y.shape))
            if step is not None:
                return step, (x, y)
        (x, y), _ = unwrap((x, y))
        return self._step(loss, x, y)

    def _step(self, loss, x, y):
        if self._structure != structure_version.value:
            self._refresh()
        raw, tree = flatten_args((x, y))
        leaves = [self.input_array(v, f"input {i}") for i, v in enumerate(raw)]
        key = (loss, tree, tuple((a.shape, a.dtype) for a in leaves), self.carry.key())
        step = self._cached(key)
        if step is None:
            try:
                step = self._cache(key, TrainingStep(self, loss, leaves, tree))
            except TraceError as error:
                self._name_backend(error)
                raise
            self.carry.learn(step.objective)
            stateless = not (step.objective.carry_in or step.objective.carry_out)
            if tree == _TWO_ARGS and stateless and self._dtype is not None and all(
                    a.dtype == self._dtype for a in leaves):
                self._fast[(loss, leaves[0].shape, leaves[1].shape)] = step
        return step, leaves


_ONE_ARG = flatten_args((np.zeros(()),))[1]
_TWO_ARGS = flatten_args((np.zeros(()), np.zeros(())))[1]


class NonFiniteGradient(FluxValueError):
    """A training step whose loss is finite but one of whose gradients is not (its update is
    not applied)."""


def all_finite(g: np.ndarray) -> bool:
    """Whether every element of `g` is finite (one reduction for the common case)."""
    if g.dtype.kind != "f":
        return True
    return bool(np.isfinite(np.add.reduce(g, axis=None))) or bool(np.isfinite(g).all())


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
