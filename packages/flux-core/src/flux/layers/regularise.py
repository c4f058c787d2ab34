"""Layers that train differently from how they test: `Dropout` and `BatchNorm` (modes in
`flux.model.modes`; their randomness and running statistics cross the graph boundary as
`flux.transforms.carry` describes)."""
from __future__ import annotations

import numbers

import numpy as np

from flux.errors import FluxValueError
from flux.ir.trace import current_trace
from flux.model.modes import training
from flux.model.net import net
from flux.model.param import Buffer, Param, param
from flux.ops import numpy_api as api
from flux.transforms.carry import carried_state, fresh_uniform

__all__ = ["Dropout", "BatchNorm"]


@net
class Dropout:
    """While training, each element is zeroed with probability `p` and the rest scaled by
    1 / (1 − p), so the expected output is the input; in test mode the identity:

        y = x · (u ≥ p) / (1 − p),   u ~ Uniform[0, 1) afresh at every call

    The numbers are drawn from flux's generator (reproducible after `flux.seed`, restored
    with a checkpoint), the same on every backend.

    >>> d = Dropout(0.5)
    >>> d(np.ones(4))                                     # an ordinary call: test mode
    array([1., 1., 1., 1.])
    """

    __flux_modal__ = True

    def __init__(self, p: float):
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p < 1:
            raise FluxValueError(f"Dropout: p is a probability in [0, 1), found {p!r}")
        self.p = float(p)
        self.active = None

    def __call__(self, x):
        if not training(self) or self.p == 0:
            return x
        x = api._as_tracer_or_array(x)
        dtype = x.dtype if np.dtype(x.dtype).kind == "f" else np.float32
        u = fresh_uniform(tuple(x.shape), dtype)
        return np.where(u >= self.p, x * (1 / (1 - self.p)), 0).astype(dtype)

    def __repr__(self) -> str:
        return f"Dropout({self.p})"


@net
class BatchNorm:
    """Batch normalisation over every axis but the last (the channels), then a learned scale
    and shift:

        y = (x − μ) / sqrt(σ² + ε) · γ + β

    While training, μ and σ² are the batch's mean and (biased) variance per channel, and the
    running statistics move towards them: ``mean ← (1 − m) mean + m μ``,
    ``var ← (1 − m) var + m σ²·n/(n − 1)`` (the unbiased variance, as PyTorch); in test mode
    the running statistics are μ and σ². ``BatchNorm(n, momentum=0.1, eps=1e-5)``: ``γ`` starts
    at ones, ``β`` at zeros, ``mean`` at zeros and ``var`` at ones. ``mean`` and ``var`` are
    `Buffer`s: not trained, saved by `flux.save` and checkpoints, shared by compiled copies.

    >>> bn = BatchNorm(2)
    >>> np.round(bn(np.array([[1.0, 2.0], [3.0, 4.0]])), 3)   # test mode: running statistics
    array([[1., 2.],
           [3., 4.]], dtype=float32)
    """

    __flux_modal__ = True
    γ: Param
    β: Param

    def __init__(self, n: int, *, momentum: float = 0.1, eps: float = 1e-5, dtype=None):
        if not isinstance(n, numbers.Integral) or n < 1:
            raise FluxValueError(f"BatchNorm: n must be an int ≥ 1, found {n!r}")
        if not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
            raise FluxValueError(f"BatchNorm: momentum is in [0, 1], found {momentum!r}")
        if not isinstance(eps, numbers.Real) or not eps > 0:
            raise FluxValueError(f"BatchNorm: eps must be a number > 0, found {eps!r}")
        self.momentum, self.eps, self.active = float(momentum), float(eps), None
        self.γ = param(np.ones(n, np.float32), dtype)
        self.β = param(np.zeros(n, np.float32), dtype)
        self.mean = Buffer(np.zeros(n, self.γ.dtype))
        self.var = Buffer(np.ones(n, self.γ.dtype))

    def __call__(self, x):
        x = api._as_tracer_or_array(x)
        if x.ndim < 1 or x.shape[-1] != self.mean.shape[0]:
            raise FluxValueError(f"BatchNorm({self.mean.shape[0]}) normalises "
                                 f"{self.mean.shape[0]} channels (the last axis), found an "
                                 f"input of shape {tuple(x.shape)}")
        axes = tuple(range(x.ndim - 1))
        trace = current_trace()
        state = carried_state(trace).read(self) if trace is not None else None
        mean, var = state if state else (self.mean.value, self.var.value)
        if training(self):
            n = int(np.prod(x.shape[:-1], dtype=np.int64))
            if n < 2:
                raise FluxValueError(f"BatchNorm in training mode needs more than one value "
                                     f"per channel to take a variance; the input has shape "
                                     f"{tuple(x.shape)} (use a larger batch, or test mode)")
            mu = np.mean(x, axis=axes)
            centred = x - mu
            sigma2 = np.mean(centred * centred, axis=axes)
            m = self.momentum
            if trace is not None:
                carried_state(trace).write(self, [mean * (1 - m) + mu * m,
                                                  var * (1 - m) + sigma2 * (m * n / (n - 1))])
            return centred / np.sqrt(sigma2 + self.eps) * self.γ + self.β
        return (x - mean) / np.sqrt(var + self.eps) * self.γ + self.β

    # the carry protocol (flux.transforms.carry): the running statistics in and out of graphs

    def carried(self, compiled) -> list:
        return [self.mean.value, self.var.value]

    def carry_signature(self, compiled):
        return (self.mean.shape, self.var.shape)

    def keep(self, compiled, arrays) -> None:
        self.mean.value = np.array(arrays[0], self.mean.dtype).reshape(self.mean.shape)
        self.var.value = np.array(arrays[1], self.var.dtype).reshape(self.var.shape)

    def __repr__(self) -> str:
        return f"BatchNorm({self.mean.shape[0]})"
