"""The MXNet backend's tests: skipped as a whole, with the reason, where MXNet or flux-mxnet is
not installed (every test environment but the mxnet one)."""
import importlib.util

import pytest

MISSING = [name for name in ("mxnet", "flux_mxnet") if importlib.util.find_spec(name) is None]


def pytest_collection_modifyitems(config, items):
    if MISSING:
        skip = pytest.mark.skip(reason=f"{' and '.join(MISSING)} not installed "
                                       f"(tools/dev.py test mxnet builds that environment)")
        for item in items:
            if "tests/mxnet/" in str(item.path).replace("\\", "/"):
                item.add_marker(skip)
