"""flux-tf installed the way users install it: ``pip install "flux-core[tf]"`` from the wheels
built from this repository (`tools/dev.py` builds the tf environment so, and says so by setting
FLUX_INSTALLED_FROM_WHEELS=1 for its suites)."""
import importlib.metadata
import os
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import flux
import flux_tf

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    os.environ.get("FLUX_INSTALLED_FROM_WHEELS") != "1",
    reason="only where flux-core[tf] was installed from built wheels (tools/dev.py test tf)")


def version_in(package: str) -> str:
    text = (REPO / "packages" / package / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


@pytest.mark.parametrize("distribution, module, package",
                         [("flux-core", flux, "flux-core"), ("flux-tf", flux_tf, "flux-tf")])
def test_installed_from_wheels_not_from_the_source_tree(distribution, module, package):
    dist = importlib.metadata.distribution(distribution)
    assert dist.version == version_in(package)        # ours, not PyPI's namesake
    assert dist.read_text("direct_url.json") is None  # by name from the wheels, not a path
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    assert site in Path(module.__file__).resolve().parents


def test_the_tf_extra_pins_this_repositorys_plugin_and_the_plugin_pins_core():
    core = importlib.metadata.distribution("flux-core")
    assert f'flux-tf=={version_in("flux-tf")}; extra == "tf"' in core.requires
    plugin = importlib.metadata.distribution("flux-tf")
    assert f'flux-core=={version_in("flux-core")}' in plugin.requires
    assert [ep.value for ep in plugin.entry_points if ep.group == "flux"] == ["flux_tf"]


def test_flux_tf_works_from_the_installed_wheels():
    model = flux.Chain(flux.Affine(3, 4), flux.relu, flux.Affine(4, 2))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert "tf" in flux.backends()
    np.testing.assert_allclose(flux.tf(model)(x), model(x), rtol=1e-5, atol=1e-6)
