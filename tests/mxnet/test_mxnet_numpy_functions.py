"""The NumPy functions of tests/test_numpy_functions.py (einsum, tensordot, cumsum, split, tile,
flip, pad, linalg.norm, take_along_axis, argmax ...) compiled for MXNet: the values, dtypes
and `flux.back`'s input gradients of the NumPy backend (they are compositions of primitives, so
MXNet needs no rule of its own for them)."""
import numpy as np
import pytest

import flux
from test_numpy_functions import CASES, GRAD_CASES, one_output

ZERO_SIZE = {"split_indices_odd", "array_split_many"}
"""Cases with an empty piece: MXNet has no zero-size arrays (a 0 in a shape means unknown)."""


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_function_on_mxnet_matches_the_numpy_backend(name):
    if name in ZERO_SIZE:
        pytest.skip("MXNet has no zero-size arrays (an empty piece of np.split)")
    case = CASES[name]
    model = flux.net(one_output(case))
    compiled = flux.mxnet(model)
    want = model(*case.inputs)
    got = compiled(*case.inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if want.dtype == np.float32 else 1e-10,
                               atol=1e-10)
    if name in GRAD_CASES:
        delta = np.random.default_rng(1).standard_normal(want.shape)
        for g, w in zip(flux.back(compiled, delta, *case.inputs),
                        flux.back(model, delta, *case.inputs)):
            if np.asarray(w).dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)
