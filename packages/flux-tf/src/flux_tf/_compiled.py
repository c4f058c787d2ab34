"""`TFCompiled`: a flux model compiled for TensorFlow, with its Params kept in `tf.Variable`s.

Each Param gets one `tf.Variable` (a Param used twice is one variable), created on first use and
owned by the compiled model (`Variables`). Before every call, Params whose values changed since
they were last copied in (assigned, written in place, or updated through NumPy by
`flux.update`) are copied into their variables again; the check compares against a snapshot.
Forward graphs and `flux.back`'s vjp graphs are lowered to one `tf.function` per signature.
`flux.train` runs a whole step (forward, gradients, optimiser update, skipped when the loss is
not finite) in one `tf.function` per signature and optimiser (`_TrainFunction`), then writes
the new values back into the Params in place.
"""
from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

import flux
from flux import Compiled
from flux._compile import unwrap
from flux._source import user_facing

from ._lower import backend_error, build
from ._optimisers import OptimiserState

__all__ = ["TFCompiled", "Variables"]

OPTIONS = ("jit_compile", "check_numerics")


class Variables:
    """One `tf.Variable` per Param, and the snapshot of the value last copied into it."""

    def __init__(self):
        self._records: dict[int, list] = {}     # id(Param) -> [Param, Variable, snapshot]

    def record(self, p) -> list:
        rec = self._records.get(id(p))
        if rec is None or rec[0] is not p or tuple(rec[1].shape) != p.shape:
            value = np.array(p.value)
            rec = [p, tf.Variable(value, trainable=True), value]
            self._records[id(p)] = rec
        return rec

    def of(self, params) -> list:
        return [self.record(p)[1] for p in params]

    def sync(self, records) -> None:
        """Copy into its variable every Param whose value differs from its snapshot."""
        for rec in records:
            value, snapshot = rec[0]._value, rec[2]
            if value.shape != snapshot.shape or not (value == snapshot).all():
                rec[2] = np.array(value)
                rec[1].assign(rec[2])

    def write_back(self, records, values) -> None:
        """New values computed in TF (already in the variables) into the Params, in place."""
        for rec, value in zip(records, values):
            np.copyto(rec[0]._value, value)
            rec[2] = value

    def pull(self, params) -> None:
        """Variables changed outside flux (Keras, a GradientTape loop) into their Params."""
        for p in params:
            rec = self._records.get(id(p))
            if rec is not None and rec[0] is p:
                value = rec[1].numpy()
                np.copyto(p._value, value)
                rec[2] = value


def tf_function(fn, graph, options):
    """`fn` as a `tf.function` with the graph's input signature (fixed shapes: one trace)."""
    spec = [tf.TensorSpec(v.aval.shape, tf.as_dtype(v.aval.dtype)) for v in graph.inputs]
    return tf.function(fn, input_signature=spec,
                       jit_compile=bool(options.get("jit_compile", False)))


def lower_graph(graph, variables: Variables, options: dict):
    """`graph` as one `tf.function` reading the Params' variables in `variables`; the result
    takes and returns NumPy arrays, copying changed Params into their variables first."""
    body = build(graph, bool(options.get("check_numerics", False)))
    records = [variables.record(p) for p in graph.param_objs]
    params = [rec[1] for rec in records]
    fn = tf_function(lambda *xs: body(xs, params), graph, options)
    sync = variables.sync

    def run(*xs):
        sync(records)
        try:
            outs = fn(*xs)
        except tf.errors.OpError as error:
            raise backend_error(error, graph) from error
        return _numpy(outs)

    run.tf_function = fn
    return run


def _numpy(outs) -> list:
    return [np.asarray(o) if o.shape.rank == 0 else o.numpy() for o in outs]


class TFCompiled(Compiled):
    """A flux model running on TensorFlow; called, trained and differentiated like the model."""

    def __init__(self, model, backend, options=None):
        super().__init__(model, backend, self.check_options(options))
        self.variables = Variables()
        self._trainers = weakref.WeakKeyDictionary()    # optimiser -> (state, {step id: fn})

    @staticmethod
    def check_options(options) -> dict:
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"the tf backend takes the options {', '.join(OPTIONS)}; "
                            f"given {', '.join(unknown)}")
        return options

    def lower(self, graph):
        """`graph` as one `tf.function` reading this model's variables; NumPy in and out."""
        return lower_graph(graph, self.variables, self.options)

    def _tf_function(self, fn, graph):
        return tf_function(fn, graph, self.options)

    def train_step(self, loss, opt, x, y) -> float:
        """Forward, gradients and the update of `opt` in one `tf.function` (see the module)."""
        if not isinstance(opt, (flux.SGD, flux.Momentum, flux.ADAM)):
            return super().train_step(loss, opt, x, y)
        try:
            (x, y), _ = unwrap((x, y))
            step, leaves = self._step(loss, x, y)
            found = self._trainers.get(opt)
            if found is None:
                found = self._trainers[opt] = (OptimiserState(opt), {})
            state, per_step = found
            trainer = per_step.get(id(step))
            if trainer is None or trainer.step is not step:
                trainer = per_step[id(step)] = _TrainFunction(self, step, state)
            return trainer(leaves)
        except Exception as error:
            raise user_facing(error) from error.__cause__


class _TrainFunction:
    """One training step of one signature for one optimiser, as one `tf.function`.

    The function runs the forward graph ``loss(model(x), y)`` (flux's objective graph, lowered
    like any other) under a `tf.GradientTape` watching the Params' variables, takes the
    gradients with TF's own autodiff, and applies the optimiser's update of the variables under
    ``tf.cond(isfinite(loss))``. It returns the loss, the carried state (no gradient flows
    through it) and the new parameter values (written back into the Params)."""

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
        # all the new values as one flat tensor (one copy out of TF) when they share a dtype
        self.flat = bool(variables) and len({v.dtype for v in variables}) == 1
        self.shapes = [tuple(v.shape) for v in variables]
        self.bounds = np.cumsum([0] + [int(np.prod(s, dtype=np.int64)) for s in self.shapes])

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
            if self.flat:
                return [value, *carried, tf.concat([tf.reshape(v.read_value(), [-1])
                                                    for v in variables], 0)]
            return [value, *carried, *(v.read_value() for v in variables)]

        self.fn = compiled._tf_function(train, forward)

    def __call__(self, leaves) -> float:
        compiled, graph = self.compiled, self.graph
        compiled.variables.sync(self.records)
        self.state.refresh()
        try:
            outs = self.fn(*leaves, *compiled._carried(graph))
        except tf.errors.OpError as error:
            raise backend_error(error, graph) from error
        outs = _numpy(outs)
        compiled._keep_carried(graph, outs, 1)
        new = outs[1 + self.n_carry:]
        if self.flat:
            flat, b = new[0], self.bounds
            new = [flat[b[i]:b[i + 1]].reshape(shape) for i, shape in enumerate(self.shapes)]
        compiled.variables.write_back(self.records, new)
        return float(outs[0])


def _then(op):
    with tf.control_dependencies([op]):
        return tf.constant(True)


def _nothing():
    return tf.constant(False)
