"""The models and NumPy references of the kit's loop cases (``unrolled_nested``: a loop in
each step of a loop; ``unrolled_same_input``: ``seq=False``, one input fed at every step)."""
from __future__ import annotations

import numpy as np

import flux
from flux import Chain, net

from ._references import init

__all__ = ["nested", "nested_reference", "same_input", "same_input_reference"]


@net
class SumOfSteps:
    """The inner recurrence over the step's own sequence, summed over its steps."""

    inner: object

    def __call__(self, x):
        return flux.sum(self.inner(x), axis=-2)


def nested():
    inner = flux.unroll(flux.Recurrent(2, 3, init=init), 4, stateful=False)
    return flux.unroll(Chain(SumOfSteps(inner), flux.Recurrent(3, 2, init=init)), 3,
                       stateful=False)


def _recurrence(p, prefix, steps):
    """y_t = tanh(x_t Wxy + y_{t-1} Wyy + by) for the given step inputs."""
    y, out = 0 * (steps[0] @ p[prefix + "Wxy"]), []
    for x in steps:
        y = np.tanh(x @ p[prefix + "Wxy"] + y @ p[prefix + "Wyy"] + p[prefix + "by"])
        out.append(y)
    return out


def nested_reference(p, xs):
    inner = "model.layers.0.inner.model."
    summed = [np.stack(_recurrence(p, inner, [xs[:, t, s] for s in range(xs.shape[2])]),
                       axis=1).sum(axis=1) for t in range(xs.shape[1])]
    return np.stack(_recurrence(p, "model.layers.1.", summed), axis=1)


def same_input():
    return flux.unroll(flux.Recurrent(3, 4, init=init), 3, stateful=False, seq=False)


def same_input_reference(p, x):
    return np.stack(_recurrence(p, "model.", [x] * 3), axis=1)
