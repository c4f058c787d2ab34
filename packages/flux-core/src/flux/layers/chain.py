"""Chain: models called in sequence, the output of each the input of the next."""
from __future__ import annotations

from flux.errors import FluxTypeError
from flux.model.net import net, _short_repr
from flux.model.walk import input_shape


@net
class Chain:
    """``Chain(f, g, h)(x) == h(g(f(x)))``; any callable (layer or plain function) is a link.

    A Chain is indexable (``m[0]``), sliceable (a slice is a Chain), iterable and has a length.

    >>> import numpy as np
    >>> foo = Chain(np.exp, np.sum, np.log)
    >>> round(float(foo(np.array([1.0, 2.0, 3.0]))), 3)
    3.408
    """

    layers: tuple

    def __init__(self, *layers):
        for i, layer in enumerate(layers):
            if not callable(layer):
                hint = (f"; pass the layers themselves, Chain(*{type(layer).__name__}) or "
                        f"Chain(a, b, ...)" if isinstance(layer, (list, tuple)) else "")
                raise FluxTypeError(f"Chain: link {i} is a {type(layer).__name__}, not a model "
                                    f"or function{hint}")
        self.layers = tuple(layers)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    @property
    def input_shape(self):
        """The input shape of the first link, where it determines one (else None)."""
        return input_shape(self.layers[0]) if self.layers else None

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Chain(*self.layers[index])
        return self.layers[index]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        return f"Chain({', '.join(_short_repr(layer) for layer in self.layers)})"
