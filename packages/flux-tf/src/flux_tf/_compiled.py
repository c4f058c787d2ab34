"""`TFCompiled`: a flux model compiled for TensorFlow, with its Params kept in `tf.Variable`s.

Each Param gets one `tf.Variable` (a Param used twice is one variable), owned by the compiled
model and kept current by version (`Variables`, a `flux.backends.ParamMirror`: before each call
only the Params changed since cost a copy). Forward graphs and `flux.back`'s vjp graphs become
one traced `tf.function` per signature, called as its concrete function (no argument matching
or retracing checks per call). `flux.train` runs a whole step (forward, TF's gradients, the
optimiser's update, skipped when the loss is not finite) in one concrete function per signature
and optimiser (`Trainer`), and `flux.update` the update alone (`apply_update`); the new values
stay in the variables, and each Param fetches its value from them when next read.

The update is the optimiser's own `rule` run on TF tensors (`OptimiserVariables`, a
`flux.backends.OptimiserMirror`): hyper-parameters read before every step into one float64
variable (changing ``opt.lr`` needs no retrace), slots in TF variables, loaded from
``opt.state`` when it changed elsewhere and handed back after each step, so checkpoints and
NumPy updates continue from the TF-side values.
"""
from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf

import flux
from flux import BackendError
from flux.backends import (MirroredCompiled, OptimiserMirror, ParamMirror, backend_error,
                           parse_device)

from . import _distributed as dist
from ._loop import located
from ._lower import build

__all__ = ["TFCompiled", "Variables", "OptimiserVariables", "check_options", "graph_function"]

OPTIONS = ("jit_compile", "check_numerics", "device", "strategy", "timeout")
NATIVE = (flux.SGD, flux.Momentum, flux.ADAM)     # optimisers whose update runs inside TF


def check_options(options) -> dict:
    """The options given to `flux.compile(model, "tf", ...)`, checked; a ``device`` becomes the
    TF device name, checked against the devices TensorFlow sees here."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"the tf backend takes the options {', '.join(OPTIONS)}; "
                        f"given {', '.join(unknown)}")
    if options.get("device") is not None:
        device = parse_device(options["device"], "tf")
        wanted = f"/{device.kind.upper()}:{device.index}"
        here = [d.name.replace("/device:", "/") for d in tf.config.list_logical_devices()]
        if wanted not in here:
            raise BackendError(f"tf backend: there is no device {wanted} here; TensorFlow sees "
                               f"{', '.join(here)}", trace=[])
        options["device"] = wanted
    if options.get("strategy") is not None:
        dist.check_strategy(options["strategy"], options)
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0
                                or options.get("strategy") is None):
        raise BackendError(f"tf backend: timeout= is the seconds (> 0) a collective of a "
                           f"strategy= may wait; found timeout={timeout!r} with strategy="
                           f"{options.get('strategy')!r}", trace=[])
    return options


def placed(device):
    """``with placed(device):`` puts what is created inside on `device` (None: TF's choice)."""
    return tf.device(device) if device else contextlib.nullcontext()


class Variables(ParamMirror):
    """One `tf.Variable` per Param, on `device` (or the `tf.distribute` `strategy`'s variable
    on each of its devices), kept current by version (`record`, `sync`, `hold`, `pull`,
    `fetch`: see `flux.backends.ParamMirror`)."""

    def __init__(self, device=None, strategy=None):
        super().__init__()
        self.device = device
        self.strategy = strategy

    def new(self, value):
        with placed(self.device), dist.scope(self.strategy):
            return tf.Variable(value, trainable=True)

    def assign(self, array, value) -> None:
        array.assign(value)

    def read(self, array) -> np.ndarray:
        return array.numpy()


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
        raise backend_error("tf", error, graph) from error


def _run(fn, graph, xs) -> list:
    try:
        return fn(*xs)
    except tf.errors.OpError as error:            # at its equation, inside loops too
        raise backend_error("tf", error, *located(graph, str(error))) from error


def _numpy(outs) -> list:
    return [np.asarray(o) if o.shape.rank == 0 else o.numpy() for o in outs]


def graph_function(graph, variables: Variables, options: dict):
    """`graph` as one concrete TF function reading the Params' variables in `variables`; the
    result takes and returns NumPy arrays, copying changed Params into their variables first."""
    body = build(graph, bool(options.get("check_numerics", False)))
    records = variables.records(graph.param_objs)
    params = [rec.array for rec in records]
    fn = concrete_function(lambda *xs: body(xs, params), graph, options)
    sync = variables.sync

    def run(*xs):
        sync(records)
        return _numpy(_run(fn, graph, xs))

    return run


class TFCompiled(MirroredCompiled):
    """A flux model running on TensorFlow; called, trained and differentiated like the model.
    Its Params live in `variables` (the `flux.backends.MirroredCompiled` mirror)."""

    def __init__(self, model, backend, options=None):
        options = check_options(options)
        self.strategy = options.get("strategy")
        self.timeout = float(options.get("timeout") or dist.DEFAULT_TIMEOUT)
        super().__init__(model, backend, options,
                         Variables(options.get("device"), self.strategy))
        self.variables = self.mirror
        self.tensor_graphs: dict = {}                        # what `flux_tf.tensor` built
        if self.strategy is not None:                        # data-parallel (`_distributed`)
            self.rank, self.workers = dist.cluster_of(self.strategy)

    def lower(self, graph):
        """`graph` as one `tf.function` reading this model's variables; NumPy in and out."""
        return graph_function(graph, self.variables, self.options)

    def trains(self, opt) -> bool:
        return type(opt) in NATIVE

    def new_optimiser_mirror(self, opt) -> OptimiserVariables:
        return OptimiserVariables(opt, self.strategy)

    def build_trainer(self, step, opt_mirror):
        """Forward, gradients and the update of the optimiser in one TF function."""
        return Trainer(self, step, opt_mirror)

    def update(self, opt_mirror, records, grads) -> None:
        """`flux.update` on TF: the optimiser's update of the variables, one concrete function
        per optimiser and set of Params."""
        ps = [rec.param for rec in records]
        key = tuple((id(p), p.shape) for p in ps)
        found = opt_mirror.updaters.get(key)
        if found is None or any(a is not b for a, b in zip(found[0], ps)):
            slots = opt_mirror.slots_of(records)
            spec = [tf.TensorSpec(p.shape, tf.as_dtype(p.dtype)) for p in ps]
            strategy, timeout = self.strategy, self.timeout

            def apply(*gs):
                if strategy is not None:      # this worker's gradients averaged with the others'
                    gs = dist.all_mean(list(gs), timeout)
                return [_then(opt_mirror.update(slots, gs))]
            if strategy is not None:
                apply = dist.replicated(strategy, apply)
            fn = tf.function(apply, input_signature=spec, autograph=False).get_concrete_function()
            found = opt_mirror.updaters[key] = (ps, fn)
        try:
            found[1](*(np.asarray(g, p.dtype) for g, p in zip(grads, ps)))
        except dist.COLLECTIVE_ERRORS as error:
            if self.strategy is None:
                raise
            raise dist.collective_error(error, self.timeout) from error


class OptimiserVariables(OptimiserMirror):
    """The TF side of one optimiser for one compiled model (see the module): its slots as TF
    variables beside each Param's variable, its hyper-parameters, its update, and the concrete
    functions that apply it (`trainers` per training step, `updaters` per set of Params)."""

    def __init__(self, opt, strategy=None):
        super().__init__(opt)
        self.strategy = strategy
        self.last = opt.hyper()
        with dist.scope(strategy):
            self.hyper = tf.Variable(np.array(list(self.last.values()), np.float64),
                                     trainable=False)
        self.updaters: dict = {}

    def refresh(self) -> None:
        """Copy the optimiser's hyper-parameters in if they changed, and its state if it
        changed outside these variables."""
        hyper = self.opt.hyper()
        if hyper != self.last:
            self.last = hyper
            self.hyper.assign(np.array(list(hyper.values()), np.float64))
        super().refresh()

    def new_slots(self, p, array) -> list:
        # beside the parameter (a strategy's variables are on each of its devices)
        beside = tf.device(array.device) if self.strategy is None else dist.scope(self.strategy)
        with beside:
            return [tf.Variable(tf.zeros((), tf.int64) if isinstance(init, int)   # counters
                                else tf.zeros_like(array), trainable=False)
                    for init in self.opt.initial_slots()]

    def load_slots(self, p, slots, values) -> None:
        for slot, value in zip(slots, values):
            slot.assign(np.broadcast_to(np.asarray(value, slot.dtype.as_numpy_dtype),
                                        slot.shape))

    def read_slots(self, p, slots) -> tuple:
        return tuple(int(s.numpy()) if s.dtype.is_integer else s.numpy() for s in slots)

    def slots_of(self, records) -> list:
        """``(variable, slots)`` of each record's Param, for `update`."""
        return [(rec.array, self.slots(rec.param, rec.array)) for rec in records]

    def update(self, slots, grads):
        """The assignments of one step (inside a `tf.function`): the optimiser's `rule` on TF
        tensors, hyper-parameters cast to each parameter's dtype; ADAM's bias corrections in
        float64 from the step counter."""
        opt = self.opt
        h64 = dict(zip(self.last, tf.unstack(self.hyper)))
        corrections = getattr(opt, "bias_corrections", None)
        if opt.clip_norm is not None:         # every gradient scaled by one factor
            floating = [g for g in grads if g.dtype.is_floating]
            norm = tf.cast(tf.linalg.global_norm(floating), tf.float64) if floating else 0.0
            scale = tf.minimum(tf.constant(1.0, tf.float64), h64["clip_norm"] / (norm + 1e-6))
            grads = [g * tf.cast(scale, g.dtype) if g.dtype.is_floating else g for g in grads]
        ops = []
        for (variable, state), g in zip(slots, grads):
            dt = variable.dtype
            h = {name: tf.cast(value, dt) for name, value in h64.items()}
            if corrections is not None:
                t = next(s for s in state if s.dtype.is_integer)
                c1, c2 = corrections(h64, tf.cast(t + 1, tf.float64))
                h["c1"], h["c2"] = tf.cast(c1, dt), tf.cast(c2, dt)
            step, new = opt.rule(g, tuple(state), h, sqrt=tf.sqrt, clip=tf.clip_by_value,
                                 p=variable)
            ops += [s.assign(value) for s, value in zip(state, new)]
            ops.append(variable.assign_sub(step))
        return tf.group(*ops)


class Trainer:
    """One training step of one signature for one optimiser, as one concrete TF function.

    The function runs the forward graph ``loss(model(x), y)`` (the step's objective, lowered
    like any other) under a `tf.GradientTape` watching the Params' variables, takes the
    gradients with TF's own autodiff, and applies the optimiser's update of the variables under
    ``tf.cond`` (the loss and every gradient finite). It returns the loss, the carried state
    (no gradient flows through it) and whether the gradients were finite; the new parameter
    values stay in the variables. With a `tf.distribute` strategy the step runs on every
    replica (``strategy.run``), the loss and gradients averaged over all of them before the
    update (`flux_tf._distributed`)."""

    def __init__(self, compiled: TFCompiled, step, mirror: OptimiserVariables):
        graph = self.graph = step.objective
        body = build(graph, bool(compiled.options.get("check_numerics", False)))
        records = compiled.variables.records(graph.param_objs)
        variables = [rec.array for rec in records]
        slots = mirror.slots_of(records)
        watched = [v for v in variables if v.dtype.is_floating]
        strategy = self.strategy = compiled.strategy
        self.timeout = compiled.timeout

        def train(*xs):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(watched)
                outs = body(xs, variables)         # the loss, then the carried state
            found = iter(tape.gradient(outs[0], watched,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO))
            grads = [tf.convert_to_tensor(next(found)) if v.dtype.is_floating
                     else tf.zeros_like(v) for v in variables]
            if strategy is not None:          # the mean over the workers: one combined batch
                loss, *grads = dist.all_mean([outs[0], *grads], self.timeout)
                outs = [loss, *outs[1:]]
            grads_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g))
                                          for g in grads if g.dtype.is_floating] or [True])
            tf.cond(tf.math.is_finite(outs[0]) & grads_finite,
                    lambda: _then(mirror.update(slots, grads)), lambda: tf.constant(False))
            return [*outs, grads_finite]

        if strategy is not None:
            train = dist.replicated(strategy, train)
        self.fn = concrete_function(train, graph, compiled.options)

    def __call__(self, inputs) -> tuple:
        try:
            outs = _run(self.fn, self.graph, inputs)
        except BackendError as error:
            cause = error.__cause__
            if self.strategy is None or not isinstance(cause, dist.COLLECTIVE_ERRORS):
                raise
            raise dist.collective_error(cause, self.timeout) from cause
        return float(outs[0]), _numpy(outs[1:-1]), bool(outs[-1])


def _then(op):
    with tf.control_dependencies([op]):
        return tf.constant(True)
