"""Affine: the seed's first template, y = x W + b."""
from __future__ import annotations

import numbers


from flux.errors import FluxTypeError
from flux.model.net import net
from flux.model.param import Param, initn, param
from flux.ops.elementwise import weights_dtype


@net
class Affine:
    """An affine map, y = x W + b, for row-vector inputs.

    ``Affine(in, out, init=initn, dtype=None)`` draws ``W: (in, out)`` and ``b: (out,)`` from
    `init` (in `dtype`: float32 unless given); ``Affine(W, b)`` uses the given arrays. A batch
    ``x: (N, in)`` gives ``(N, out)``; a single point ``x: (in,)`` gives ``(out,)``.

    >>> import numpy as np
    >>> a = Affine(np.ones((2, 3)), np.zeros(3))
    >>> a(np.array([1.0, 2.0]))
    array([3., 3., 3.], dtype=float32)
    """

    W: Param
    b: Param

    def __init__(self, W, b=None, *, init=initn, dtype=None):
        if isinstance(W, numbers.Integral) and isinstance(b, numbers.Integral):
            n_in, n_out = int(W), int(b)
            W, b = init(n_in, n_out), init(n_out)
        elif b is None:
            raise FluxTypeError("Affine takes (in, out) sizes or (W, b) arrays; given one argument")
        self.W = param(W, dtype)
        self.b = param(b, dtype)

    def __call__(self, x):
        x = weights_dtype(x, self.W)       # integer inputs as the weights' floats
        return x @ self.W + self.b         # (N, in) @ (in, out) + (out,) -> (N, out)

    @property
    def input_shape(self) -> tuple:
        """``(in,)``: the shape of one input point (see `flux.model.walk.input_shape`)."""
        return tuple(self.W.shape[:1])

    def __repr__(self) -> str:
        n_in, n_out = self.W.shape
        return f"Affine({n_in}, {n_out})"
