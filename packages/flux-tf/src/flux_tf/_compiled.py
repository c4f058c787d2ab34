"""`TFCompiled`: a flux model compiled for TensorFlow, with its Params kept in `tf.Variable`s.

Each Param gets one `tf.Variable` (a Param used twice is one variable), created on first use and
owned by the compiled model (`Variables`). Before every call, Params whose `version` moved since
they were last copied in (assigned, written in place, updated through NumPy by `flux.update`,
trained by another compiled copy) are copied into their variables again; the others cost one
integer comparison. Forward graphs and `flux.back`'s vjp graphs are lowered to one traced
`tf.function` per signature and called as its concrete function (no argument matching or
retracing checks per call). `flux.train` runs a whole step (forward, gradients, optimiser update,
skipped when the loss is not finite) in one concrete function per signature and optimiser
(`_TrainFunction`), and `flux.update` the optimiser's update alone (`apply_update`); the new
values stay in the variables and each Param is told so (`Param.defer`): it fetches its value
from its variable the next time it is read.
"""
from __future__ import annotations

import contextlib
import math
import re
import weakref

import numpy as np
import tensorflow as tf

import flux
from flux import BackendError, Compiled, FluxValueError
from flux._source import user_facing

from ._lower import backend_error, build
from ._optimisers import OptimiserState

__all__ = ["TFCompiled", "Variables"]

OPTIONS = ("jit_compile", "check_numerics", "device")

_DEVICE = re.compile(r"/?(?:device:)?(cpu|gpu|tpu)(?::(\d+))?", re.IGNORECASE)


def tf_device(name) -> str:
    """The TF device name for a ``device=`` option (``"cpu"``, ``"gpu"``, ``"gpu:1"``,
    ``"/GPU:0"``), checked against the devices TensorFlow sees here."""
    match = _DEVICE.fullmatch(str(name).strip())
    if match is None:
        raise FluxValueError(f"tf backend: device= takes 'cpu', 'gpu', 'gpu:1' or a TF device "
                             f"name such as '/GPU:0'; found {name!r}")
    wanted = f"/{match.group(1).upper()}:{match.group(2) or 0}"
    here = [d.name.replace("/device:", "/") for d in tf.config.list_logical_devices()]
    if wanted not in here:
        raise BackendError(f"tf backend: there is no device {wanted} here; TensorFlow sees "
                           f"{', '.join(here)}", trace=[])
    return wanted


def placed(device):
    """``with placed(device):`` puts what is created inside on `device` (None: TF's choice)."""
    return tf.device(device) if device else contextlib.nullcontext()


class Variables:
    """One `tf.Variable` per Param, with the Param `version` it holds.

    A record is ``[Param, Variable, version]``. `sync` copies a Param in when its version
    differs from the record's; `hold` records that the variables are newer than the Params
    (after a training step or a Keras `fit`), which the Params fetch from them (`fetch`) when
    next read."""

    def __init__(self, device=None):
        self._records: dict[int, list] = {}
        self.device = device

    def record(self, p) -> list:
        rec = self._records.get(id(p))
        if rec is None or rec[0] is not p or tuple(rec[1].shape) != p.shape:
            version = p.version
            with placed(self.device):
                rec = [p, tf.Variable(p.peek(), trainable=True), version]
            self._records[id(p)] = rec
        return rec

    def of(self, params) -> list:
        return [self.record(p)[1] for p in params]

    @staticmethod
    def sync(records) -> None:
        """Copy into its variable every Param changed since the variable last took it."""
        for rec in records:
            p = rec[0]
            if p._version != rec[2]:
                rec[1].assign(p.peek())       # fetched first if another copy holds it
                rec[2] = p._version

    def hold(self, records) -> None:
        """The variables of `records` now hold the newest values of their Params."""
        for rec in records:
            rec[2] = rec[0].defer(self)

    def fetch(self, p) -> np.ndarray:
        """The value of `p`'s variable (called by `p` when it is read after `hold`)."""
        return self._records[id(p)][1].numpy()

    def pull(self, params) -> None:
        """Variables changed outside flux (Keras, a GradientTape loop) hold the newest
        values of their Params."""
        found = [(p, self._records.get(id(p))) for p in params]
        self.hold([rec for p, rec in found if rec is not None and rec[0] is p])


def concrete_function(fn, graph, options):
    """`fn` traced once for the graph's input signature (fixed shapes), as the concrete
    function to call (it skips `tf.function`'s per-call argument matching)."""
    spec = [tf.TensorSpec(v.aval.shape, tf.as_dtype(v.aval.dtype)) for v in graph.inputs]
    device = options.get("device")

    def on_device(*xs):
        with placed(device):
            return fn(*xs)
    # autograph=False: the lowering is plain Python building TF ops, with no Python control
    # flow on tensors to convert; AutoGraph's per-call wrapping tripled tracing time
    traced = tf.function(on_device, input_signature=spec, autograph=False,
                         jit_compile=bool(options.get("jit_compile", False)))
    try:
        return traced.get_concrete_function()
    except Exception as error:
        raise backend_error(error, graph) from error


def lower_graph(graph, variables: Variables, options: dict):
    """`graph` as one concrete TF function reading the Params' variables in `variables`; the
    result takes and returns NumPy arrays, copying changed Params into their variables first."""
    body = build(graph, bool(options.get("check_numerics", False)))
    records = [variables.record(p) for p in graph.param_objs]
    params = [rec[1] for rec in records]
    fn = concrete_function(lambda *xs: body(xs, params), graph, options)
    sync = variables.sync

    def run(*xs):
        sync(records)
        try:
            outs = fn(*xs)
        except tf.errors.OpError as error:
            raise backend_error(error, graph) from error
        return _numpy(outs)

    return run


def _numpy(outs) -> list:
    return [np.asarray(o) if o.shape.rank == 0 else o.numpy() for o in outs]


class TFCompiled(Compiled):
    """A flux model running on TensorFlow; called, trained and differentiated like the model."""

    def __init__(self, model, backend, options=None):
        super().__init__(model, backend, self.check_options(options))
        self.variables = Variables(self.options.get("device"))
        self._trainers = weakref.WeakKeyDictionary()    # optimiser -> (state, {step id: fn})
        self._updaters = weakref.WeakKeyDictionary()    # optimiser -> {Params: fn}

    @staticmethod
    def check_options(options) -> dict:
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"the tf backend takes the options {', '.join(OPTIONS)}; "
                            f"given {', '.join(unknown)}")
        if options.get("device") is not None:
            options["device"] = tf_device(options["device"])
        return options

    def lower(self, graph):
        """`graph` as one `tf.function` reading this model's variables; NumPy in and out."""
        return lower_graph(graph, self.variables, self.options)

    def _concrete_function(self, fn, graph):
        return concrete_function(fn, graph, self.options)

    def train_step(self, loss, opt, x, y) -> float:
        """Forward, gradients and the update of `opt` in one TF function (see the module)."""
        if type(opt) not in _NATIVE:
            return super().train_step(loss, opt, x, y)
        try:
            step, leaves = self.training_step(loss, x, y)
            state = self._optimiser_state(opt)
            per_step = self._trainers[opt][1]
            trainer = per_step.get(id(step))
            if trainer is None or trainer.step is not step:
                trainer = per_step[id(step)] = _TrainFunction(self, step, state)
            return trainer(leaves)
        except Exception as error:
            raise user_facing(error) from error.__cause__

    def _optimiser_state(self, opt) -> OptimiserState:
        found = self._trainers.get(opt)
        if found is None:
            found = self._trainers[opt] = (OptimiserState(opt), {})
        return found[0]

    def apply_update(self, opt, ps, grads) -> None:
        """`flux.update` on TF: the gradients go in, the optimiser's update runs on the
        variables (one concrete function per optimiser and set of Params), and the Params
        fetch the new values when next read."""
        if type(opt) not in _NATIVE:
            return super().apply_update(opt, ps, grads)
        state = self._optimiser_state(opt)
        per_params = self._updaters.setdefault(opt, {})
        key = tuple((id(p), p.shape) for p in ps)
        found = per_params.get(key)
        if found is None or any(a is not b for a, b in zip(found[0], ps)):
            records = [self.variables.record(p) for p in ps]
            slots = [state.slots(p, rec[1]) for p, rec in zip(ps, records)]
            spec = [tf.TensorSpec(p.shape, tf.as_dtype(p.dtype)) for p in ps]

            def update(*gs):
                with tf.control_dependencies([state.update(slots, list(gs))]):
                    return tf.constant(True)
            fn = tf.function(update, input_signature=spec,
                             autograph=False).get_concrete_function()
            found = per_params[key] = (list(ps), records, fn)
        _, records, fn = found
        self.variables.sync(records)
        state.refresh()
        fn(*(np.asarray(g, p.dtype) for g, p in zip(grads, ps)))
        self.variables.hold(records)
        state.stepped()


_NATIVE = (flux.SGD, flux.Momentum, flux.ADAM)


class _TrainFunction:
    """One training step of one signature for one optimiser, as one concrete TF function.

    The function runs the forward graph ``loss(model(x), y)`` (flux's objective graph, lowered
    like any other) under a `tf.GradientTape` watching the Params' variables, takes the
    gradients with TF's own autodiff, and applies the optimiser's update of the variables under
    ``tf.cond(isfinite(loss))``. It returns the loss and the carried state (no gradient flows
    through it); the new parameter values stay in the variables (`Variables.hold`)."""

    def __init__(self, compiled: TFCompiled, step, state: OptimiserState):
        self.step, self.compiled = step, compiled
        forward = step.objective     # core's traced loss(model(x), y), not differentiated
        self.graph = forward
        body = build(forward, bool(compiled.options.get("check_numerics", False)))
        self.records = [compiled.variables.record(p) for p in forward.param_objs]
        variables = [rec[1] for rec in self.records]
        self.state = state
        slots = [state.slots(rec[0], rec[1]) for rec in self.records]
        n_carry = len(forward.carry_out)
        self.n_carry = n_carry
        update = state.update
        floating = [v.dtype.is_floating for v in variables]
        watched = [v for v, f in zip(variables, floating) if f]

        def train(*xs):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(watched)
                outs = body(xs, variables)
            value, carried = outs[0], outs[1:1 + n_carry]
            found = iter(tape.gradient(value, watched,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO))
            grads = [tf.convert_to_tensor(next(found)) if f else tf.zeros_like(v)
                     for v, f in zip(variables, floating)]
            tf.cond(tf.math.is_finite(value), lambda: _then(update(slots, grads)), _nothing)
            return [value, *carried]

        self.fn = compiled._concrete_function(train, forward)

    def __call__(self, leaves) -> float:
        compiled, graph, records = self.compiled, self.graph, self.records
        variables = compiled.variables
        variables.sync(records)
        self.state.refresh()
        try:
            outs = self.fn(*leaves, *compiled._carried(graph))
        except tf.errors.OpError as error:
            raise backend_error(error, graph) from error
        value = float(outs[0])
        if self.n_carry:
            compiled._keep_carried(graph, _numpy(outs), 1)
        if math.isfinite(value):            # the update was applied
            variables.hold(records)
            self.state.stepped()
        return value


def _then(op):
    with tf.control_dependencies([op]):
        return tf.constant(True)


def _nothing():
    return tf.constant(False)
