"""flux's optimisers as MXNet's fused update operators on the shared parameter arrays (the
update of a training step run on the MXNet side, and of `flux.update`).

flux's optimisers map onto MXNet's update operators exactly:
- SGD, p ← p − η g: ``sgd_update``;
- Momentum, v ← ρ v + η g, p ← p − v: ``sgd_mom_update``, whose momentum slot is −v;
- ADAM with bias correction, p ← p − η m̂/(√v̂ + ε): ``adam_update`` with
  η_t = η √(1−β₂ᵗ)/(1−β₁ᵗ) and ε_t = ε √(1−β₂ᵗ), which is the same expression.
The slots are the optimiser's own state (`Optimiser.state`), kept by
`flux.backends.OptimiserMirror`: loaded from it when its `state_version` moved and handed
back after each update.
"""
from __future__ import annotations

import math

import mxnet as mx
import numpy as np

import flux
from flux.backends import OptimiserMirror

from ._symbol import copy_in

__all__ = ["NATIVE", "OptimiserState"]

NATIVE = (flux.SGD, flux.Momentum, flux.ADAM)


class OptimiserState(OptimiserMirror):
    """The MXNet-side slots of one optimiser object, per Param, shared by every signature:
    Momentum's is an NDArray holding −v, ADAM's the NDArrays m and v and the step count t."""

    def __init__(self, opt):
        super().__init__(opt)
        self.sign = -1 if isinstance(opt, flux.Momentum) else 1     # MXNet's slot is −v

    def new_slots(self, p, array) -> list:
        """An NDArray per slot (`Optimiser.slot_names`) but ADAM's step count, an int."""
        return [0 if name == "t" else mx.nd.zeros(array.shape, ctx=array.context,
                                                  dtype=array.dtype)
                for name in self.opt.slot_names]

    def load_slots(self, p, slots, values) -> None:
        for i, value in enumerate(values):
            if isinstance(slots[i], mx.nd.NDArray):
                copy_in(slots[i], self.sign * np.broadcast_to(np.asarray(value), p.shape))
            else:
                slots[i] = int(value)

    def read_slots(self, p, slots) -> tuple:
        return tuple(self.sign * s.asnumpy().reshape(p.shape) if isinstance(s, mx.nd.NDArray)
                     else s for s in slots)

    def update(self, records, grads) -> None:
        """One update of the Params of `records` (their shared arrays, in place) by the
        NDArrays `grads` (the caller syncs, refreshes and hands the new values back). The
        optimiser's options: `clip_norm` scales the gradients first, `clip_value` is MXNet's
        ``clip_gradient``, and the decoupled weight decay ``lr · λ · p`` (of the weights
        before the update) is subtracted after MXNet's operator."""
        opt = self.opt
        every = [self.slots(rec.param, rec.array) for rec in records]
        weights = [rec.array for rec in records]
        if opt.clip_norm is not None:
            _scale_to_norm(grads, opt.clip_norm)
        clip = {"clip_gradient": opt.clip_value} if opt.clip_value is not None else {}
        decay = [w * (opt.lr * opt.weight_decay) for w in weights] if opt.weight_decay else []
        if isinstance(opt, flux.SGD):
            _multi(mx.nd.multi_sgd_update, weights, grads, [], lr=opt.lr, **clip)
        elif isinstance(opt, flux.Momentum):
            _multi(mx.nd.multi_sgd_mom_update, weights, grads, [s[0] for s in every],
                   lr=opt.lr, momentum=opt.rho, **clip)
        else:
            for g, slots, w in zip(grads, every, weights):
                slots[2] += 1
                t = slots[2]
                correction = math.sqrt(1 - opt.beta2 ** t)
                mx.nd.adam_update(w, g, slots[0], slots[1],
                                  lr=opt.lr * correction / (1 - opt.beta1 ** t),
                                  beta1=opt.beta1, beta2=opt.beta2,
                                  epsilon=opt.eps * correction, wd=0.0, out=w, **clip)
        for w, d in zip(weights, decay):
            w -= d


def _scale_to_norm(grads, clip_norm: float) -> None:
    """Scale `grads` in place by ``min(1, clip_norm / (global norm + 1e-6))``."""
    squares = [mx.nd.sum(mx.nd.square(g.astype(np.float64))) for g in grads]
    norm = float(mx.nd.sqrt(mx.nd.add_n(*squares)).asscalar()) if squares else 0.0
    scale = flux.Optimiser.norm_scale(norm, clip_norm)
    if scale < 1:
        for g in grads:
            g *= scale


def _multi(op, weights, grads, moms, lr, **hyper) -> None:
    """One of MXNet's multi-tensor updates over every float32 weight (one operator call for
    all of them), the per-weight operator for others. The arguments go in as weight, grad[,
    mom] per weight."""
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
        op(*args, lrs=(lr,) * n, wds=(0.0,) * n, num_weights=n, out=[w for w, _, _ in batch],
           **hyper)
