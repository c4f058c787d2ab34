"""The NumPy functions of tests/test_numpy_functions.py (einsum, tensordot, cumsum, split, tile,
flip, pad, linalg.norm, take_along_axis, argmax ...) compiled for TensorFlow: the values, dtypes
and `flux.back`'s input gradients of the NumPy backend (they are compositions of primitives, so
TensorFlow needs no rule of its own for them)."""
import pytest

import flux
from test_numpy_functions import CASES, check_on_backend


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_function_on_tf_matches_the_numpy_backend(name):
    check_on_backend(name, flux.tf)
