"""flux's optimisers (SGD, Momentum, ADAM) as TF variable updates: the same formulas and
hyper-parameters as `flux._optimisers`, in the parameters' dtype, with the state in TF variables.

The hyper-parameters are read from the optimiser object before every step (into one small
variable, so changing ``opt.lr`` between steps takes effect without retracing)."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

import flux

__all__ = ["OptimiserState"]


class OptimiserState:
    """The TF-side state of one optimiser object for a list of variables, and its update."""

    def __init__(self, opt, variables):
        self.opt = opt
        self.variables = variables
        self.hyper = tf.Variable(self.hyper_values(), trainable=False)
        zeros = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        if isinstance(opt, flux.Momentum):
            self.velocity = zeros
        elif isinstance(opt, flux.ADAM):
            self.m = zeros
            self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
            self.t = tf.Variable(0, dtype=tf.int64, trainable=False)

    def hyper_values(self) -> np.ndarray:
        opt = self.opt
        if isinstance(opt, flux.SGD):
            values = [opt.lr]
        elif isinstance(opt, flux.Momentum):
            values = [opt.lr, opt.rho]
        else:
            values = [opt.lr, opt.beta1, opt.beta2, opt.eps]
        return np.array(values, np.float64)

    def update(self, grads):
        """The assignments of one step (called inside the training `tf.function`)."""
        opt, h = self.opt, self.hyper
        ops = []
        if isinstance(opt, flux.SGD):                        # p ← p − η g
            for p, g in zip(self.variables, grads):
                ops.append(p.assign_sub(g * tf.cast(h[0], p.dtype)))
        elif isinstance(opt, flux.Momentum):                 # v ← ρ v + η g, p ← p − v
            for p, v, g in zip(self.variables, self.velocity, grads):
                new = tf.cast(h[1], p.dtype) * v + g * tf.cast(h[0], p.dtype)
                ops += [v.assign(new), p.assign_sub(new)]
        else:                                                # Adam, bias-corrected
            t = self.t.assign_add(1)
            tf_ = tf.cast(t, tf.float64)
            lr, b1, b2, eps = h[0], h[1], h[2], h[3]
            c1, c2 = 1 - b1 ** tf_, 1 - b2 ** tf_
            for p, m, v, g in zip(self.variables, self.m, self.v, grads):
                dt = p.dtype
                m_new = tf.cast(b1, dt) * m + tf.cast(1 - b1, dt) * g
                v_new = tf.cast(b2, dt) * v + tf.cast(1 - b2, dt) * tf.square(g)
                m_hat = m_new / tf.cast(c1, dt)
                v_hat = v_new / tf.cast(c2, dt)
                step = tf.cast(lr, dt) * m_hat / (tf.sqrt(v_hat) + tf.cast(eps, dt))
                ops += [m.assign(m_new), v.assign(v_new), p.assign_sub(step)]
        return tf.group(*ops)
