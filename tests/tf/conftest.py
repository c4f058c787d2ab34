"""The TensorFlow suites: skipped, with the reason, where TensorFlow or flux-tf is missing."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install flux-tf)")
pytest.importorskip("flux_tf", reason="flux-tf is not installed (pip install flux-tf)")
