"""`MirroredCompiled`: a compiled model whose backend keeps the Params, and the state of the
optimisers it trains with, on its own side (in TF variables, MXNet arrays, GPU memory).

It does the bookkeeping every such backend needs, once: the Params' backend arrays are its
`mirror` (a `ParamMirror`); each optimiser gets one `OptimiserMirror` per compiled model
(`optimiser_mirror`); a training step with an optimiser the backend runs itself
(`trains(opt)`) is one call of the backend's trainer for that step (`build_trainer`, cached),
between syncing the Params in and handing the new values back; `flux.update` is the backend's
`update` between the same two. A backend implements those three hooks and `lower`.
"""
from __future__ import annotations

import math
import weakref

from flux.backends.compiled import Compiled, NonFiniteGradient
from flux.backends.mirror import OptimiserMirror, ParamMirror

__all__ = ["MirroredCompiled"]


class MirroredCompiled(Compiled):
    """A model compiled for a backend that holds its Params in `mirror` (see the module)."""

    def __init__(self, model, backend, options, mirror: ParamMirror):
        super().__init__(model, backend, options)
        self.mirror = mirror
        self._optimisers = weakref.WeakKeyDictionary()     # optimiser -> its OptimiserMirror

    # -- what a backend implements ----------------------------------------------------------------

    def trains(self, opt) -> bool:
        """Whether the backend applies `opt`'s updates itself (else core's step runs, with
        gradients from the backend and the update in NumPy)."""
        return False

    def new_optimiser_mirror(self, opt) -> OptimiserMirror:
        """The backend's `OptimiserMirror` for `opt` (called once per optimiser)."""
        raise NotImplementedError(f"{type(self).__name__} trains natively but defines no "
                                  f"new_optimiser_mirror(opt)")

    def build_trainer(self, step, opt_mirror: OptimiserMirror):
        """A function running the `TrainingStep` `step` with the optimiser of `opt_mirror` on
        the backend, or None if this step cannot run there (core's step runs it then). It
        takes the objective's flat inputs (data, then carried state) and returns ``(loss,
        carried, grads_finite)``: the loss as a float, the carried state's new arrays, and
        whether every gradient was finite; it applies the update only when the loss and the
        gradients are all finite."""
        return None

    def update(self, opt_mirror: OptimiserMirror, records, grads) -> None:
        """Apply one update of `opt_mirror`'s optimiser to the Params of `records` (their
        arrays are current) with the NumPy gradients `grads`, on the backend."""
        raise NotImplementedError(f"{type(self).__name__} trains natively but defines no "
                                  f"update(opt_mirror, records, grads)")

    # -- the bookkeeping --------------------------------------------------------------------------

    def optimiser_mirror(self, opt) -> OptimiserMirror:
        found = self._optimisers.get(opt)
        if found is None:
            found = self._optimisers[opt] = self.new_optimiser_mirror(opt)
        return found

    def train_step(self, loss, opt, x, y) -> float:
        """One training step, on the backend when it `trains(opt)` (see the module)."""
        if not self.trains(opt):
            return super().train_step(loss, opt, x, y)
        step, leaves = self.training_step(loss, x, y)
        opt_mirror = self.optimiser_mirror(opt)
        trainers = opt_mirror.trainers
        found = trainers.get(step)
        if found is None:
            trainer = self.build_trainer(step, opt_mirror)
            found = trainers[step] = (trainer, self.mirror.records(step.param_objs))
        trainer, records = found
        if trainer is None:
            return super().train_step(loss, opt, x, y)
        graph = step.objective
        self.mirror.sync(records)
        opt_mirror.refresh()
        value, carried, grads_finite = trainer([*leaves, *self.carry.inputs(graph)])
        if graph.carry_out:
            self.carry.keep(graph, [value, *carried], 1)
        if math.isfinite(value):
            if not grads_finite:                        # nothing was applied
                raise NonFiniteGradient(f"a gradient is not finite (the loss is {value})")
            self.mirror.hold(records)                   # the update was applied
            opt_mirror.stepped()
        return value

    def apply_update(self, opt, ps, grads) -> None:
        """`flux.update` on the backend when it `trains(opt)`: the gradients go in, the
        update runs on the backend's arrays, and the Params fetch their values when next read."""
        if not self.trains(opt):
            return super().apply_update(opt, ps, grads)
        opt_mirror = self.optimiser_mirror(opt)
        records = self.mirror.records(ps)
        self.mirror.sync(records)
        opt_mirror.refresh()
        self.update(opt_mirror, records, grads)
        self.mirror.hold(records)
        opt_mirror.stepped()
