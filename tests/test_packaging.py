"""Packaging: the flux-core in this environment is this repository's, not PyPI's namesake.

PyPI has an unrelated `flux-core` (a workflow engine, 0.87.x); every install must take ours
from `packages/flux-core` by path, and its metadata must resolve to known dependencies only.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

import flux
from helpers import version_of

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "packages" / "flux-core"

DEPENDENCIES = {"numpy", "pluggy", "tqdm"}
"""What flux-core itself needs (tqdm: the progress bar of flux.train); anything else must come
in through an extra."""
EXTRA_DEPENDENCIES = {"pytest", "hypothesis", "flux-tf", "flux-mxnet", "flux-cupy", "onnx"}
"""What flux-core's extras may pull in: test tools, this repository's backend plugins, and
onnx (flux.onnx)."""
EXTRA_MARKER = re.compile(r"\bextra\s*==")


def our_version() -> str:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]["version"]


def path_of(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", f"expected a local file:// URL, found {url}"
    return Path(url2pathname(parsed.path)).resolve()


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def distribution():
    return importlib.metadata.distribution("flux-core")


def test_the_installed_flux_core_has_our_version(distribution):
    assert distribution.version == our_version()
    assert distribution.version.startswith("0.1."), "PyPI's unrelated flux-core is 0.87.x"


def test_the_installed_flux_core_came_from_this_repository(distribution):
    direct_url = distribution.read_text("direct_url.json")
    assert direct_url is not None, "flux-core was not installed from a path or URL"
    assert path_of(json.loads(direct_url)["url"]) == PACKAGE.resolve()


def test_the_imported_flux_is_the_installed_one(distribution):
    module = Path(flux.__file__).resolve()
    editable = json.loads(distribution.read_text("direct_url.json") or "{}") \
        .get("dir_info", {}).get("editable", False)
    if editable:
        assert module == (PACKAGE / "src" / "flux" / "__init__.py").resolve()
    else:
        assert module == Path(distribution.locate_file("flux/__init__.py")).resolve()


def test_the_numpy_backend_is_registered_as_an_entry_point(distribution):
    found = {(ep.group, ep.name): ep.value for ep in distribution.entry_points}
    assert found.get(("flux", "numpy")) == "flux.backends.numpy"


def test_pip_resolves_flux_core_by_path_to_known_dependencies(tmp_path):
    """A dry-run install by path, offline: pip reads our metadata from the source tree."""
    if version_of("pip") < (22, 2):
        pytest.skip("needs pip 22.2 or newer (for --report)")
    if version_of("setuptools") < (70, 1) and version_of("wheel") == (0,):
        pytest.skip("needs setuptools 70.1 or newer (or the wheel package) to build flux-core's "
                    "metadata without network access")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                           "--no-deps", "--no-build-isolation", "--ignore-installed", "--quiet",
                           "--disable-pip-version-check", "--report", str(report), str(PACKAGE)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [install] = json.loads(report.read_text())["install"]
    metadata = install["metadata"]
    assert (metadata["name"], metadata["version"]) == ("flux-core", our_version())
    assert path_of(install["download_info"]["url"]) == PACKAGE.resolve()
    requires = metadata.get("requires_dist", [])
    base = {requirement_name(r) for r in requires if not EXTRA_MARKER.search(r)}
    extras = {requirement_name(r) for r in requires if EXTRA_MARKER.search(r)}
    assert base <= DEPENDENCIES, f"unexpected dependencies: {sorted(base - DEPENDENCIES)}"
    assert extras <= EXTRA_DEPENDENCIES | DEPENDENCIES, \
        f"unexpected extra dependencies: {sorted(extras - EXTRA_DEPENDENCIES - DEPENDENCIES)}"



def test_import_warns_when_the_installed_flux_core_is_pypis_namesake(tmp_path):
    """Metadata of PyPI's flux-core (0.87) ahead on the path: `import flux` says so."""
    info = tmp_path / "flux_core-0.87.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flux-core\nVersion: 0.87.3\n")
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), str(PACKAGE / "src")])}
    run = subprocess.run([sys.executable, "-c", "import flux"],
                         env=environ, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "version 0.87.3, not this project's" in run.stderr
    assert "--no-index" in run.stderr
