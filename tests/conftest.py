"""Shared test setup: the IR checker runs on every graph flux builds; flux's warnings are errors."""
import os

os.environ["FLUX_CHECK_GRAPHS"] = "1"   # read when flux.ir.passes is first imported
# flux-cupy, where installed, runs on its NumPy stand-in and compiles every CUDA kernel it
# generates with NVRTC, unless told otherwise (tools/gpu_check.sh sets FLUX_CUPY_STANDIN=none)
os.environ.setdefault("FLUX_CUPY_STANDIN", "numpy")
os.environ.setdefault("FLUX_CUPY_NVRTC", "1")

import flux.ir.passes  # noqa: E402  (flux may already be imported by its pytest plugin: set it too)

flux.ir.passes.CHECK_GRAPHS = True


def pytest_configure(config):
    # Any warning issued from flux's own modules fails the test that caused it (pyproject.toml
    # already does this for PluginWarning and deprecations); `pytest.warns` still sees them.
    config.addinivalue_line("filterwarnings", "error:::flux")
