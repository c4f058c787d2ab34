"""flux's optimisers (SGD, Momentum, ADAM) as TF variable updates: the same formulas and
hyper-parameters as `flux._optimisers`, in the parameters' dtype, with the state in TF variables.

The hyper-parameters are read from the optimiser object before every step (into one small
variable, so changing ``opt.lr`` between steps takes effect without retracing). The slots
(velocity; Adam's m, v and step count) are the optimiser's own state: loaded from ``opt.state``
when its `state_version` moved (a NumPy `flux.update`, a checkpoint restored, another compiled
model trained with it), and handed back with `Optimiser.defer_state` after each step, so
checkpoints and NumPy updates continue from the TF-side values."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import flux

__all__ = ["OptimiserState"]


class OptimiserState:
    """The TF-side state of one optimiser object: its hyper-parameters and, per Param, its
    slots (velocity; Adam's m, v and step count), shared by every signature it trains."""

    def __init__(self, opt):
        self.opt = opt
        self.last = self.hyper_values()
        self.hyper = tf.Variable(np.array(self.last, np.float64), trainable=False)
        self._slots: dict[int, tuple] = {}
        self.stateful = not isinstance(opt, flux.SGD)
        self.version = None          # the opt.state_version the slots hold (None: load)

    def hyper_values(self) -> tuple:
        opt = self.opt
        if isinstance(opt, flux.SGD):
            return (opt.lr,)
        if isinstance(opt, flux.Momentum):
            return (opt.lr, opt.rho)
        return (opt.lr, opt.beta1, opt.beta2, opt.eps)

    def refresh(self) -> None:
        """Copy the optimiser's current hyper-parameters in, if they changed, and its state,
        if it changed outside these variables."""
        values = self.hyper_values()
        if values != self.last:
            self.last = values
            self.hyper.assign(np.array(values, np.float64))
        if self.stateful and self.opt._state_version != self.version:
            self.load()

    def load(self) -> None:
        """The slots from ``opt.state`` (zeros for a Param it has none for)."""
        state = self.opt.state
        for p, variable, *slots in self._slots.values():
            entry = state.get(id(p))
            fits = entry is not None and entry[0] is p and all(
                np.shape(a) in ((), tuple(variable.shape)) for a in entry[1:3])
            values = entry[1:] if fits else (0.0,) * len(slots)
            for slot, value in zip(slots, values):
                slot.assign(np.broadcast_to(np.asarray(value, slot.dtype.as_numpy_dtype),
                                            slot.shape))
        self.version = self.opt._state_version

    def stepped(self) -> None:
        """An update was applied: the newest state is in these variables now."""
        if self.stateful:
            self.version = self.opt.defer_state(self)

    def fetch_state(self, opt) -> dict:
        """``opt.state`` with the slots these variables hold (called by `opt` when read)."""
        state = dict(opt._state or {})
        for p, _, *slots in self._slots.values():
            values = [slot.numpy() for slot in slots]
            if isinstance(opt, flux.ADAM):
                values[2] = int(values[2])
            state[id(p)] = (p, *values)
        return state

    def slots(self, p, variable) -> tuple:
        found = self._slots.get(id(p))
        if found is None or found[0] is not p or found[1] is not variable:
            def zeros():
                with tf.device(variable.device):          # beside the parameter
                    return tf.Variable(tf.zeros_like(variable), trainable=False)
            if isinstance(self.opt, flux.Momentum):
                extra = (zeros(),)
            elif isinstance(self.opt, flux.ADAM):
                extra = (zeros(), zeros(), tf.Variable(0, dtype=tf.int64, trainable=False))
            else:
                extra = ()
            found = self._slots[id(p)] = (p, variable, *extra)
            self.version = None
        return found

    def update(self, slots, grads):
        """The assignments of one step (called inside the training `tf.function`)."""
        opt, h = self.opt, self.hyper
        ops = []
        for (_, p, *state), g in zip(slots, grads):
            dt = p.dtype
            if isinstance(opt, flux.SGD):                    # p ← p − η g
                ops.append(p.assign_sub(g * tf.cast(h[0], dt)))
            elif isinstance(opt, flux.Momentum):             # v ← ρ v + η g, p ← p − v
                (v,) = state
                new = tf.cast(h[1], dt) * v + g * tf.cast(h[0], dt)
                ops += [v.assign(new), p.assign_sub(new)]
            else:                                            # Adam, bias-corrected
                m, v, t = state
                lr, b1, b2, eps = h[0], h[1], h[2], h[3]
                step_t = tf.cast(t.assign_add(1), tf.float64)
                m_new = tf.cast(b1, dt) * m + tf.cast(1 - b1, dt) * g
                v_new = tf.cast(b2, dt) * v + tf.cast(1 - b2, dt) * tf.square(g)
                m_hat = m_new / tf.cast(1 - b1 ** step_t, dt)
                v_hat = v_new / tf.cast(1 - b2 ** step_t, dt)
                step = tf.cast(lr, dt) * m_hat / (tf.sqrt(v_hat) + tf.cast(eps, dt))
                ops += [m.assign(m_new), v.assign(v_new), p.assign_sub(step)]
        return tf.group(*ops)
