"""Shared test setup: the IR checker runs on every graph flux builds; flux's warnings are errors."""
import os

os.environ["FLUX_CHECK_GRAPHS"] = "1"   # read when flux.ir.passes is first imported

import flux.ir.passes  # noqa: E402  (flux may already be imported by its pytest plugin: set it too)

flux.ir.passes.CHECK_GRAPHS = True


def pytest_configure(config):
    # Any warning issued from flux's own modules fails the test that caused it (pyproject.toml
    # already does this for PluginWarning and deprecations); `pytest.warns` still sees them.
    config.addinivalue_line("filterwarnings", "error:::flux")
