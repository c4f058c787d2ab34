"""Recurrent layers written like their equations: Recurrent, GRU (GatedRecurrent), LSTM.

`prev(self.y)` is the seed's ``y{-1}``: the value of ``y`` at the previous time step. These
layers run inside `flux.unroll` (a sequence at once) or `flux.unroll1` (a step at a time).
"""
from __future__ import annotations

import numpy as np

from flux.ops.elementwise import weights_dtype
from flux.ops.functions import tanh, σ
from flux.model.net import net
from flux.model.param import Param, initn, param
from flux.model.state import State, prev


@net
class Recurrent:
    """The simplest recurrent layer: y = tanh(x Wxy + y₋₁ Wyy + by).

    ``Recurrent(in, out)``; State ``y`` starts at zeros ``(out,)``.
    """

    Wxy: Param
    Wyy: Param
    by: Param
    y: State

    def __init__(self, n_in: int, n_out: int, *, init=initn, dtype=None):
        self.Wxy = param(init(n_in, n_out), dtype)
        self.Wyy = param(init(n_out, n_out), dtype)
        self.by = param(init(n_out), dtype)
        self.y = np.zeros(n_out, dtype or np.float32)

    def __call__(self, x):
        x = weights_dtype(x, self.Wxy)
        self.y = tanh(x @ self.Wxy + prev(self.y) @ self.Wyy + self.by)   # (N, out)
        return self.y

    input_shape = property(lambda self: tuple(self.Wxy.shape[:1]),
                           doc="``(in,)``: the shape of one input point.")

    def __repr__(self) -> str:
        return f"Recurrent({self.Wxy.shape[0]}, {self.Wxy.shape[1]})"


@net
class GRU:
    """A gated recurrent unit (Cho et al. 2014), as the seed's GatedRecurrent:

        r  = σ(x Wxr + y₋₁ Wyr + br)              reset gate
        u  = σ(x Wxu + y₋₁ Wyu + bu)              update gate
        y′ = tanh(x Wxh + (r ⊙ y₋₁) Wyh + bh)     candidate
        y  = (1 − u) ⊙ y′ + u ⊙ y₋₁

    ``GRU(in, out)``; State ``y`` starts at zeros ``(out,)``.
    """

    Wxr: Param
    Wyr: Param
    br: Param
    Wxu: Param
    Wyu: Param
    bu: Param
    Wxh: Param
    Wyh: Param
    bh: Param
    y: State

    def __init__(self, n_in: int, n_out: int, *, init=initn, dtype=None):
        for gate in "ruh":
            setattr(self, f"Wx{gate}", param(init(n_in, n_out), dtype))
            setattr(self, f"Wy{gate}", param(init(n_out, n_out), dtype))
            setattr(self, f"b{gate}", param(init(n_out), dtype))
        self.y = np.zeros(n_out, dtype or np.float32)

    def __call__(self, x):
        x = weights_dtype(x, self.Wxr)
        y = prev(self.y)
        reset = σ(x @ self.Wxr + y @ self.Wyr + self.br)
        update = σ(x @ self.Wxu + y @ self.Wyu + self.bu)
        candidate = tanh(x @ self.Wxh + (reset * y) @ self.Wyh + self.bh)
        self.y = (1 - update) * candidate + update * y
        return self.y

    input_shape = property(lambda self: tuple(self.Wxr.shape[:1]),
                           doc="``(in,)``: the shape of one input point.")

    def __repr__(self) -> str:
        return f"GRU({self.Wxr.shape[0]}, {self.Wxr.shape[1]})"


GatedRecurrent = GRU


@net
class LSTM:
    """Long short-term memory (Hochreiter & Schmidhuber 1997), as in the seed:

        forget = σ(x Wxf + y₋₁ Wyf + bf)
        input  = σ(x Wxi + y₋₁ Wyi + bi)
        output = σ(x Wxo + y₋₁ Wyo + bo)
        state′ = tanh(x Wxc + y₋₁ Wyc + bc)
        state  = forget ⊙ state₋₁ + input ⊙ state′
        y      = output ⊙ tanh(state)

    ``LSTM(in, out)``; States ``y`` then ``state``, both starting at zeros ``(out,)``.
    """

    Wxf: Param
    Wyf: Param
    bf: Param
    Wxi: Param
    Wyi: Param
    bi: Param
    Wxo: Param
    Wyo: Param
    bo: Param
    Wxc: Param
    Wyc: Param
    bc: Param
    y: State
    state: State

    def __init__(self, n_in: int, n_out: int, *, init=initn, dtype=None):
        for gate in "fioc":
            setattr(self, f"Wx{gate}", param(init(n_in, n_out), dtype))
            setattr(self, f"Wy{gate}", param(init(n_out, n_out), dtype))
            setattr(self, f"b{gate}", param(init(n_out), dtype))
        self.y = np.zeros(n_out, dtype or np.float32)
        self.state = np.zeros(n_out, dtype or np.float32)

    def __call__(self, x):
        x = weights_dtype(x, self.Wxf)
        y = prev(self.y)
        # gates
        forget = σ(x @ self.Wxf + y @ self.Wyf + self.bf)
        input = σ(x @ self.Wxi + y @ self.Wyi + self.bi)
        output = σ(x @ self.Wxo + y @ self.Wyo + self.bo)
        # state update and output
        state_ = tanh(x @ self.Wxc + y @ self.Wyc + self.bc)
        self.state = forget * prev(self.state) + input * state_
        self.y = output * tanh(self.state)
        return self.y

    input_shape = property(lambda self: tuple(self.Wxf.shape[:1]),
                           doc="``(in,)``: the shape of one input point.")

    def __repr__(self) -> str:
        return f"LSTM({self.Wxf.shape[0]}, {self.Wxf.shape[1]})"
