"""Static indices (`getitem` / `index_add` attributes) as flat positions, for backends whose
gather and scatter operators take positions in the flattened array."""
from __future__ import annotations

import numpy as np

from flux.ir.primitives import is_basic_index

__all__ = ["flat_positions", "is_basic_index", "strided"]


def flat_positions(shape: tuple, index) -> np.ndarray:
    """The flat positions that ``x[index]`` reads from an array of `shape` (NumPy's rules,
    constant index arrays included), in the shape of the result.

    >>> flat_positions((2, 3), (slice(None), np.array([2, 0])))
    array([[2, 0],
           [5, 3]])
    """
    size = int(np.prod(shape, dtype=np.int64))
    return np.arange(size, dtype=np.int64).reshape(shape)[index]


def strided(ndim: int, index) -> tuple[list, list, list]:
    """A basic index (`is_basic_index`) of an array of rank `ndim` as strided-slice steps, for
    backends whose slice operators take one slice per axis: ``(slices, dropped, inserted)``:
    a slice per input axis (an int ``i`` becomes ``i:i+1``), the input axes the ints then drop,
    and the axes of the result the Nones insert (ascending).

    >>> strided(3, (0, None, Ellipsis, slice(1, None)))
    ([slice(0, 1, None), slice(None, None, None), slice(1, None, None)], [0], [0])
    """
    index = list(index)
    if Ellipsis in index:
        at = index.index(Ellipsis)
        used = sum(i is not None and i is not Ellipsis for i in index)
        index[at:at + 1] = [slice(None)] * (ndim - used)
    index += [slice(None)] * (ndim - sum(i is not None for i in index))
    slices, dropped, inserted = [], [], []
    for i in index:
        if i is None:
            inserted.append(len(slices) - len(dropped) + len(inserted))
        elif isinstance(i, slice):
            slices.append(i)
        else:
            dropped.append(len(slices))
            slices.append(slice(i, i + 1 if i != -1 else None))
    return slices, dropped, inserted
