"""The flux.testing conformance kit, against the MXNet backend (skipped where it is missing)."""
from flux.testing import BackendConformance


class TestMXNetConformance(BackendConformance):
    backend = "mxnet"
