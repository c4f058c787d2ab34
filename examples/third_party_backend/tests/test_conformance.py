"""The example third-party backend passes flux's conformance kit, and flux finds it."""
import numpy as np

import flux
from flux.testing import BackendConformance


class TestInterpConformance(BackendConformance):
    backend = "interp"
    skip_if_missing = False     # installed in this environment: missing is a failure


def test_flux_finds_the_plugin_through_its_entry_point():
    assert "interp" in flux.backends()
    model = flux.Chain(flux.Affine(3, 2), flux.softmax)
    x = np.ones((4, 3), np.float32)
    np.testing.assert_allclose(flux.interp(model)(x), model(x), rtol=1e-6)
