"""Static indices (`getitem` / `index_add` attributes) as flat positions, for backends whose
gather and scatter operators take positions in the flattened array."""
from __future__ import annotations

import numpy as np

from flux.ir.primitives import is_basic_index

__all__ = ["flat_positions", "is_basic_index"]


def flat_positions(shape: tuple, index) -> np.ndarray:
    """The flat positions that ``x[index]`` reads from an array of `shape` (NumPy's rules,
    constant index arrays included), in the shape of the result.

    >>> flat_positions((2, 3), (slice(None), np.array([2, 0])))
    array([[2, 0],
           [5, 3]])
    """
    size = int(np.prod(shape, dtype=np.int64))
    return np.arange(size, dtype=np.int64).reshape(shape)[index]
