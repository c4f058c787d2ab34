"""Plugin isolation, for real: third-party backends built from their own ``pyproject.toml`` and
installed with pip into a fresh virtual environment, not faked on sys.path (test_plugins.py).

The plugins are the modules in ``plugin_fixtures/``: a working backend (``thirdparty``), one
that cannot be imported, one whose ``flux_backends`` hook raises, and two that both provide a
backend named ``dupe``. Each becomes a setuptools project, built into a wheel once per module
(offline, without build isolation) and installed with this environment's pip
(``pip --python``) into a virtual environment made with ``python -m venv --without-pip``. That
environment sees this one's site-packages through a ``.pth`` file (``site.addsitedir``, so
editable installs such as flux-core's work there too): numpy, pluggy and flux import with no
network access, while the plugins exist only in the new environment. Every check runs in a
subprocess with the new environment's Python.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import flux
from helpers import version_of

FIXTURES = Path(__file__).parent / "plugin_fixtures"
TIMEOUT = 120
"""Seconds any one subprocess (venv, pip, a probe) may take before the test fails."""


@dataclasses.dataclass(frozen=True)
class Plugin:
    """A plugin distribution: its name, its entry point in the ``flux`` group, its module."""

    distribution: str
    entry: str
    module: str


THIRDPARTY = Plugin("flux-thirdparty", "thirdparty", "fluxtest_thirdparty")
BROKEN_IMPORT = Plugin("flux-broken-import", "broken_import", "fluxtest_broken_import")
BROKEN_HOOK = Plugin("flux-broken-hook", "broken_hook", "fluxtest_broken_hook")
DUPE_A = Plugin("flux-dupe-a", "dupe_a", "fluxtest_dupe_a")
DUPE_B = Plugin("flux-dupe-b", "dupe_b", "fluxtest_dupe_b")
PLUGINS = (THIRDPARTY, BROKEN_IMPORT, BROKEN_HOOK, DUPE_A, DUPE_B)

PROBE = """
import importlib.metadata, json, sys, warnings
report = {"prefix": sys.prefix}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import flux
    report["flux"] = flux.__file__
    try:
        report["backends"] = flux.backends()
    except flux.PluginError as error:
        report["error"] = str(error)
report["plugin_warnings"] = [str(w.message) for w in caught
                             if issubclass(w.category, flux.PluginWarning)]
report["other_warnings"] = [str(w.message) for w in caught
                            if not issubclass(w.category, flux.PluginWarning)]
if "backends" in report:
    import numpy as np
    flux.seed(0)
    model = flux.Chain(flux.Affine(3, 4), flux.sigmoid, flux.Affine(4, 2))
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    report["model"] = np.asarray(model(x)).tolist()
    report["compiled"] = {name: np.asarray(flux.compile(model, backend=name)(x)).tolist()
                          for name in report["backends"]}
    if "thirdparty" in report["backends"]:
        report["shorthand"] = np.asarray(flux.thirdparty(model)(x)).tolist()
    report["lowered"] = {name: len(module.LOWERED) for name, module in list(sys.modules.items())
                         if name.startswith("fluxtest_") and hasattr(module, "LOWERED")}
report["installed"] = {d.metadata["Name"]: str(d.locate_file(""))
                       for d in importlib.metadata.distributions()
                       if d.metadata["Name"].startswith("flux-")}
print(json.dumps(report))
"""
"""Run by the environment's Python: imports flux, lists and compiles the backends, and prints a
JSON report (warnings, outputs, which plugin modules lowered graphs, where flux-* live)."""


# -- helpers ------------------------------------------------------------------------------------


def environ(**extra: str) -> dict:
    """This process's environment without what would leak into a child: Python's path and
    warning settings, FLUX_STRICT_PLUGINS, and pip's configuration (no config file is read)."""
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONWARNINGS", "PYTHONSTARTUP", "VIRTUAL_ENV",
               "FLUX_STRICT_PLUGINS")
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env.update(extra)
    return env


def run(*args, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a command, capturing its text output, with `environ(**extra_env)`."""
    return subprocess.run([str(a) for a in args], env=environ(**extra_env), capture_output=True,
                          text=True, timeout=TIMEOUT)


def checked(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """`done`, or the test fails with the command's output."""
    if done.returncode != 0:
        pytest.fail(f"{' '.join(done.args)} exited with {done.returncode}:\n"
                    f"{done.stdout}\n{done.stderr}")
    return done


def pip(*args) -> subprocess.CompletedProcess:
    """This environment's pip, offline and quiet."""
    return checked(run(sys.executable, "-m", "pip", "--disable-pip-version-check",
                       "--no-input", "--quiet", *args))


def require_tools() -> None:
    """Skip unless venv, a pip with ``--python`` (22.3+) and setuptools are available."""
    if importlib.util.find_spec("venv") is None:
        pytest.skip("the venv module is not available")
    if version_of("pip") < (22, 3):
        pytest.skip("needs pip >= 22.3 (pip --python) in this environment")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("needs setuptools in this environment to build the plugins offline")


def write_project(root: Path, plugin: Plugin) -> Path:
    """A setuptools project for `plugin` in ``root/<distribution>``: its fixture module as a
    py-module and its entry point in the ``flux`` group."""
    project = root / plugin.distribution
    project.mkdir(parents=True)
    shutil.copy(FIXTURES / f"{plugin.module}.py", project)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\n'
        'build-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{plugin.distribution}"\nversion = "0.1"\n'
        'dependencies = ["flux-core"]\n\n'
        f'[project.entry-points.flux]\n{plugin.entry} = "{plugin.module}"\n\n'
        f'[tool.setuptools]\npy-modules = ["{plugin.module}"]\n')
    return project


def parent_site_dirs() -> list[str]:
    """The site-packages directories of the environment running the tests."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dirs if Path(d).is_dir()]


def make_venv(where: Path, wheels: list[Path]) -> Path:
    """A new virtual environment at `where` that sees this environment's packages, with the
    plugin `wheels` installed into it by pip; returns its Python."""
    checked(run(sys.executable, "-m", "venv", "--without-pip", where))
    python = where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = checked(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"))
    lines = [f"import site; site.addsitedir({d!r})" for d in parent_site_dirs()]
    lines.append(str(Path(flux.__file__).parent.parent))   # flux, however it is installed here
    (Path(purelib.stdout.strip()) / "_flux_test_parent_env.pth").write_text("\n".join(lines) + "\n")
    if wheels:
        pip("--python", python, "install", "--no-deps", "--no-index", *wheels)
    return python


def probe(python: Path, **extra_env: str) -> dict:
    """The JSON report of `PROBE` run by `python`."""
    done = checked(run(python, "-c", PROBE, **extra_env))
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict:
    """Plugin -> its wheel, all built in one offline pip command."""
    require_tools()
    root = tmp_path_factory.mktemp("plugin-projects")
    projects = [write_project(root, plugin) for plugin in PLUGINS]
    out = tmp_path_factory.mktemp("plugin-wheels")
    pip("wheel", "--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir", out,
        *projects)
    built = {}
    for plugin in PLUGINS:
        found = list(out.glob(f"{plugin.distribution.replace('-', '_')}-0.1-*.whl"))
        assert len(found) == 1, f"no single wheel for {plugin.distribution}: {found}"
        built[plugin] = found[0]
    return built


@pytest.fixture(scope="module")
def crowded(wheels, tmp_path_factory) -> Path:
    """The Python of a virtual environment with every plugin installed, broken ones included."""
    return make_venv(tmp_path_factory.mktemp("crowded") / "venv", list(wheels.values()))


@pytest.fixture(scope="module")
def parent_backends() -> list:
    """The backends of the environment running the tests (the new one must have them too)."""
    return flux.backends()


def assert_same_outputs(report: dict, names) -> None:
    """Each backend in `names` computed what the uncompiled model does, in `report`."""
    for name in names:
        np.testing.assert_allclose(report["compiled"][name], report["model"], rtol=1e-6,
                                   atol=1e-7, err_msg=name)


# -- tests ----------------------------------------------------------------------------------------


def test_the_plugins_are_really_installed_in_the_new_environment(crowded):
    report = probe(crowded)
    venv = Path(crowded).parent.parent
    assert Path(report["prefix"]).resolve() == venv.resolve()
    assert Path(report["flux"]).resolve() == Path(flux.__file__).resolve()
    for plugin in PLUGINS:
        location = Path(report["installed"][plugin.distribution]).resolve()
        assert venv.resolve() in location.parents, (plugin, location)


def test_broken_plugins_are_skipped_and_the_others_work(crowded, parent_backends):
    report = probe(crowded)
    names = report["backends"]
    assert names[0] == "numpy"
    assert set(names) == {*parent_backends, "thirdparty", "dupe"}
    assert_same_outputs(report, names)   # every backend computes what the model does
    np.testing.assert_allclose(report["shorthand"], report["model"], rtol=1e-6, atol=1e-7)
    assert report["lowered"]["fluxtest_thirdparty"] > 0   # it really ran through the plugin
    assert report["other_warnings"] == []

    messages = report["plugin_warnings"]
    assert len(messages) == 3, messages
    [import_failed] = [m for m in messages if "'broken_import'" in m]
    assert "fluxtest_broken_import" in import_failed and "libmissing-42" in import_failed
    [hook_raised] = [m for m in messages if "'broken_hook'" in m]
    assert "flux_backends" in hook_raised and "no device found" in hook_raised
    # Which of the two `dupe` plugins loads first is up to the file system's order: the one
    # that lost is named in the warning, and only the one that won lowers graphs.
    [dupe] = [m for m in messages if "'dupe'" in m]
    winner, loser = (DUPE_A, DUPE_B) if report["lowered"][DUPE_A.module] else (DUPE_B, DUPE_A)
    assert report["lowered"][winner.module] > 0 and report["lowered"][loser.module] == 0
    assert f"'{loser.entry}'" in dupe and winner.distribution in dupe


def test_a_user_sees_a_warning_naming_each_broken_plugin(crowded):
    done = checked(run(crowded, "-c", "import flux; print(flux.backends())"))
    assert done.stdout.startswith("['numpy'") and "'thirdparty'" in done.stdout
    assert done.stderr.count("PluginWarning") == 3, done.stderr
    for entry in ("'broken_import'", "'broken_hook'", "'dupe'"):
        assert entry in done.stderr


def test_strict_plugins_with_every_broken_plugin_installed(crowded):
    report = probe(crowded, FLUX_STRICT_PLUGINS="1")
    assert "backends" not in report
    assert "FLUX_STRICT_PLUGINS" in report["error"]
    assert any(f"'{p.entry}'" in report["error"] for p in (BROKEN_IMPORT, BROKEN_HOOK, DUPE_A,
                                                            DUPE_B)), report["error"]
    done = run(crowded, "-c", "import flux; flux.backends()", FLUX_STRICT_PLUGINS="1")
    assert done.returncode != 0
    assert "PluginError" in done.stderr.strip().splitlines()[-1], done.stderr


@pytest.mark.parametrize("broken, named, reason", [
    ([BROKEN_IMPORT], ["broken_import"], "libmissing-42"),
    ([BROKEN_HOOK], ["broken_hook"], "no device found"),
    ([DUPE_A, DUPE_B], ["dupe_a", "dupe_b"], "duplicate backend name"),
], ids=["import-fails", "hook-raises", "duplicate-name"])
def test_strict_plugins_make_each_failure_an_error(wheels, tmp_path, broken, named, reason):
    python = make_venv(tmp_path / "venv", [wheels[THIRDPARTY], *(wheels[p] for p in broken)])
    loose = probe(python)
    assert "thirdparty" in loose["backends"] and len(loose["plugin_warnings"]) == 1
    strict = probe(python, FLUX_STRICT_PLUGINS="1")
    assert "backends" not in strict and strict["plugin_warnings"] == []
    assert reason in strict["error"]
    assert any(f"'{entry}'" in strict["error"] for entry in named), strict["error"]


def test_strict_plugins_accept_working_plugins(wheels, tmp_path):
    python = make_venv(tmp_path / "venv", [wheels[THIRDPARTY]])
    report = probe(python, FLUX_STRICT_PLUGINS="1")
    assert "error" not in report and report["plugin_warnings"] == []
    assert report["backends"][0] == "numpy" and "thirdparty" in report["backends"]
    assert_same_outputs(report, ["thirdparty"])


def test_this_environment_is_untouched(crowded, parent_backends):
    importlib.invalidate_caches()
    entries = {ep.name for ep in importlib.metadata.entry_points(group="flux")}
    for plugin in PLUGINS:
        assert plugin.entry not in entries
        with pytest.raises(importlib.metadata.PackageNotFoundError):
            importlib.metadata.distribution(plugin.distribution)
        assert importlib.util.find_spec(plugin.module) is None
    for directory in {*parent_site_dirs(), sysconfig.get_path("purelib")}:
        assert not list(Path(directory).glob("fluxtest_*")), directory
    assert flux.backends() == parent_backends
