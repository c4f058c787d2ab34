"""Training on the MXNet side: a training step as one executor (forward, MXNet's own backward)
followed by MXNet's fused optimiser operators on the shared parameter arrays.

flux's optimisers map onto MXNet's update operators exactly:
- SGD, p ← p − η g: ``sgd_update``;
- Momentum, v ← ρ v + η g, p ← p − v: ``sgd_mom_update``, whose momentum slot is −v;
- ADAM with bias correction, p ← p − η m̂/(√v̂ + ε): ``adam_update`` with
  η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ) and ε_t = ε √(1−β₂ᵗ), which is the same expression.
The slots are the optimiser's own state (`Optimiser.state`): loaded from it when its
`state_version` moved and handed back with `Optimiser.defer_state` after each update.
"""
from __future__ import annotations

import math

import mxnet as mx
import numpy as np

import flux

from ._lower import lower_graph, mx_dtype, mx_shape
from ._store import copy_in

__all__ = ["NATIVE", "OptimiserState", "TrainStep", "Unsupported"]

NATIVE = (flux.SGD, flux.Momentum, flux.ADAM)


class Unsupported(Exception):
    """This training step cannot run as one executor (the caller falls back to core's)."""


class OptimiserState:
    """The MXNet-side slots of one optimiser object, per Param, shared by every signature."""

    def __init__(self, opt, store):
        self.opt, self.store = opt, store
        self._slots: dict[int, list] = {}  # id(Param) -> [Param, *NDArrays, (step,) shape]
        self.stateful = not isinstance(opt, flux.SGD)
        self.version = None

    def slots(self, p) -> list:
        found = self._slots.get(id(p))
        if found is None or found[0] is not p or found[-1] != p.shape:
            weight = self.store.array(p)
            zeros = lambda: mx.nd.zeros(weight.shape, ctx=weight.context,  # noqa: E731
                                        dtype=weight.dtype)
            if isinstance(self.opt, flux.Momentum):
                found = [p, zeros(), p.shape]
            elif isinstance(self.opt, flux.ADAM):
                found = [p, zeros(), zeros(), 0, p.shape]
            else:
                found = [p, p.shape]
            self._slots[id(p)] = found
            self.version = None
        return found

    def refresh(self) -> None:
        """Load the slots from ``opt.state`` if it changed outside them."""
        if self.stateful and self.opt._state_version != self.version:
            state = self.opt.state
            for slots in self._slots.values():
                p, entry = slots[0], state.get(id(slots[0]))
                fits = entry is not None and entry[0] is p
                if isinstance(self.opt, flux.Momentum):
                    v = entry[1] if fits else 0.0
                    slots[1][:] = -np.broadcast_to(np.asarray(v, np.float32), p.shape) \
                        .reshape(slots[1].shape)
                else:
                    m, v, t = entry[1:] if fits else (0.0, 0.0, 0)
                    for slot, value in ((slots[1], m), (slots[2], v)):
                        slot[:] = np.broadcast_to(np.asarray(value, np.float32),
                                                  p.shape).reshape(slot.shape)
                    slots[3] = int(t)
            self.version = self.opt._state_version

    def update(self, ps, grads) -> None:
        """One update of `ps` (their store arrays, in place) by the NDArrays `grads`."""
        opt = self.opt
        every = [self.slots(p) for p in ps]      # new slots first, so that refresh fills them
        self.refresh()
        weights = [self.store.array(p) for p in ps]
        if isinstance(opt, flux.SGD):
            self._multi(mx.nd.multi_sgd_update, weights, grads, [], lr=opt.lr)
        elif isinstance(opt, flux.Momentum):
            self._multi(mx.nd.multi_sgd_mom_update, weights, grads,
                        [slots[1] for slots in every], lr=opt.lr, momentum=opt.rho)
        else:
            self._adam(weights, grads, every)
        self.store.hold(ps)
        if self.stateful:
            self.version = opt.defer_state(self)

    def _adam(self, weights, grads, every) -> None:
        """Adam with flux's bias correction, one `adam_update` per weight (see the module)."""
        opt = self.opt
        for g, slots, w in zip(grads, every, weights):
            slots[3] += 1
            t = slots[3]
            correction = math.sqrt(1 - opt.beta2 ** t)
            mx.nd.adam_update(w, g, slots[1], slots[2],
                              lr=opt.lr * correction / (1 - opt.beta1 ** t),
                              beta1=opt.beta1, beta2=opt.beta2,
                              epsilon=opt.eps * correction, wd=0.0, out=w)

    @staticmethod
    def _multi(op, weights, grads, moms, lr, **hyper) -> None:
        """One of MXNet's multi-tensor updates over every float32 weight (one operator call
        for all of them), the per-weight operator for others. The arguments go in as
        weight, grad[, mom] per weight."""
        single = {mx.nd.multi_sgd_update: mx.nd.sgd_update,
                  mx.nd.multi_sgd_mom_update: mx.nd.sgd_mom_update}[op]
        moms = moms or [None] * len(weights)
        batch = [(w, g, m) for w, g, m in zip(weights, grads, moms) if w.dtype == np.float32]
        for w, g, m in zip(weights, grads, moms):
            if w.dtype != np.float32:
                single(w, g, *([m] if m is not None else []), lr=lr, wd=0.0, out=w, **hyper)
        if batch:
            n = len(batch)
            args = [a for triple in batch for a in triple if a is not None]
            op(*args, lrs=(lr,) * n, wds=(0.0,) * n, num_weights=n,
               out=[w for w, _, _ in batch], **hyper)

    def fetch_state(self, opt) -> dict:
        """``opt.state`` with the slots held here (called by `opt` when its state is read)."""
        state = dict(opt._state or {})
        for slots in self._slots.values():
            p = slots[0]
            if isinstance(opt, flux.Momentum):
                state[id(p)] = (p, -slots[1].asnumpy().reshape(p.shape))
            elif isinstance(opt, flux.ADAM):
                state[id(p)] = (p, slots[1].asnumpy().reshape(p.shape),
                                slots[2].asnumpy().reshape(p.shape), slots[3])
        return state


class TrainStep:
    """``loss(model(x), y)`` (core's objective graph) bound as one executor whose parameter
    arguments are the store's shared arrays, with gradient buffers for the floating ones;
    a call runs forward and backward, reads the loss, and, if it is finite, updates."""

    def __init__(self, compiled, step, names):
        graph = step.objective
        input_names, param_names = names
        self.graph, self.step, self.compiled = graph, step, compiled
        lowered = lower_graph(graph, input_names(len(graph.inputs)), param_names(graph),
                              fuse_affine=True)
        if lowered.symbol is None or any(kind != "sym" for kind, _ in lowered.outputs):
            raise Unsupported("a constant output")
        ctx, store = compiled.ctx, compiled.store
        self.params = list(graph.param_objs)
        self.inputs = [mx.nd.empty(lowered.shapes[n], ctx=ctx, dtype=lowered.dtypes[n])
                       for n in lowered.input_names]
        self.input_shapes = [lowered.shapes[n] for n in lowered.input_names]
        args = dict(zip(lowered.input_names, self.inputs))
        args.update((n, store.array(p)) for n, p in zip(lowered.param_names, self.params))
        args.update((n, mx.nd.array(v, ctx=ctx, dtype=v.dtype))
                    for n, v in lowered.consts.items())
        trained = [(n, p) for n, p in zip(lowered.param_names, self.params)
                   if p.dtype.kind == "f"]
        self.trained = [p for _, p in trained]
        self.grads = [mx.nd.zeros(mx_shape(p.shape), ctx=ctx, dtype=lowered.dtypes[n])
                      for n, p in trained]
        grad_req = {n: "null" for n in args}
        grad_req.update((n, "write") for n, _ in trained)
        self.executor = lowered.symbol.bind(ctx, args=args,
                                            args_grad=dict(zip((n for n, _ in trained),
                                                               self.grads)),
                                            grad_req=grad_req)
        # d loss / d loss = 1; the carried hidden state (the other outputs) is not trained
        # through: the gradient stops at the call boundary, as in core's step
        self.head = [mx.nd.ones((1,), ctx=ctx, dtype=mx_dtype(graph.outputs[0].aval.dtype))]
        self.head += [mx.nd.zeros(mx_shape(a.aval.shape), ctx=ctx, dtype=mx_dtype(a.aval.dtype))
                      for a in graph.outputs[1:]]
        self.carried = [a.aval for a in graph.outputs[1:]]
        self.store = store

    def __call__(self, leaves, state: OptimiserState) -> float:
        compiled, graph = self.compiled, self.graph
        self.store.sync(self.params)
        if graph.carry_in:
            leaves = [*leaves, *compiled._carried(graph)]
        for array, shape, x in zip(self.inputs, self.input_shapes, leaves):
            copy_in(array, x, shape)
        executor = self.executor
        executor.forward(is_train=True)
        executor.backward(out_grads=self.head)
        outs = executor.outputs
        value = float(outs[0].asnumpy()[0])
        if self.carried:
            state_out = [o.asnumpy().reshape(a.shape).astype(a.dtype, copy=False)
                         for o, a in zip(outs[1:], self.carried)]
            compiled._keep_carried(graph, [value, *state_out], 1)
        if math.isfinite(value):
            state.update(self.trained, self.grads)
        return value
