"""flux's backend conformance kit, against the CuPy backend (on a GPU, or on its NumPy
stand-in with every kernel compiled by NVRTC)."""
from flux.testing import BackendConformance


class TestCupyConformance(BackendConformance):
    backend = "cupy"
    skip_if_missing = False
