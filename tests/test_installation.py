"""A backend plugin installed the way users install it: ``pip install "flux-core[tf]"`` (or
``[mxnet]``, ``[cupy]``) from the wheels built from this repository. `tools/dev.py` builds the
tf, mxnet and cupy environments so, and names what it installed in FLUX_INSTALLED_FROM_WHEELS
(for example ``flux-core[tf],flux-tf``); elsewhere these tests are skipped."""
import importlib
import importlib.metadata
import os
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import flux

REPO = Path(__file__).resolve().parents[1]
INSTALLED = [d for d in os.environ.get("FLUX_INSTALLED_FROM_WHEELS", "").split(",") if d]

pytestmark = pytest.mark.skipif(
    not INSTALLED, reason="only where flux was installed from built wheels (tools/dev.py)")


def field(package: str, name: str) -> str:
    text = (REPO / "packages" / package / "pyproject.toml").read_text()
    return re.search(rf'^{name}\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


def requested():
    """(core extra, plugin distribution) from FLUX_INSTALLED_FROM_WHEELS."""
    core = next(d for d in INSTALLED if d.startswith("flux-core"))
    extra = core[core.index("[") + 1:core.index("]")]
    return extra, next(d for d in INSTALLED if not d.startswith("flux-core"))


def test_installed_from_wheels_not_from_the_source_tree():
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    for distribution in ("flux-core", requested()[1]):
        dist = importlib.metadata.distribution(distribution)
        assert dist.version == field(distribution, "version")  # ours, not PyPI's namesake
        assert dist.read_text("direct_url.json") is None         # by name, from the wheels
        module = importlib.import_module(dist.read_text("top_level.txt").split()[0])
        assert site in Path(module.__file__).resolve().parents


def test_the_extra_pins_this_repositorys_plugin_and_the_plugin_pins_core():
    extra, plugin = requested()
    core = importlib.metadata.distribution("flux-core")
    pinned = re.compile(rf'{plugin}(\[[a-z0-9,-]+\])?=={re.escape(field(plugin, "version"))}; '
                        rf'extra == "{extra}"')
    assert any(pinned.fullmatch(r) for r in core.requires), core.requires
    dist = importlib.metadata.distribution(plugin)
    assert f'flux-core=={field("flux-core", "version")}' in dist.requires
    assert [ep.name for ep in dist.entry_points if ep.group == "flux"] == [extra]


def test_the_backend_works_from_the_installed_wheels():
    extra, _ = requested()
    model = flux.Chain(flux.Affine(3, 4), flux.relu, flux.Affine(4, 2))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert extra in flux.backends()
    np.testing.assert_allclose(flux.compile(model, extra)(x), model(x), rtol=1e-5, atol=1e-6)
