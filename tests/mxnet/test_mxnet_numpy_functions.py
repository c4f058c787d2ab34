"""The NumPy functions of tests/test_numpy_functions.py (einsum, tensordot, cumsum, split, tile,
flip, pad, linalg.norm, take_along_axis, argmax ...) compiled for MXNet: the values, dtypes
and `flux.back`'s input gradients of the NumPy backend (they are compositions of primitives, so
MXNet needs no rule of its own for them)."""
import pytest

import flux
from test_numpy_functions import CASES, check_on_backend

ZERO_SIZE = {"split_indices_odd", "array_split_many"}
"""Cases with an empty piece: MXNet has no zero-size arrays (a 0 in a shape means unknown)."""


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_function_on_mxnet_matches_the_numpy_backend(name):
    if name in ZERO_SIZE:
        pytest.skip("MXNet has no zero-size arrays (an empty piece of np.split)")
    check_on_backend(name, flux.mxnet)
