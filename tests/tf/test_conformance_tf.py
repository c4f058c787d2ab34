"""flux's backend conformance kit, against the TensorFlow backend (default and XLA options)."""
from flux.testing import BackendConformance


class TestTFConformance(BackendConformance):
    backend = "tf"
    skip_if_missing = False
