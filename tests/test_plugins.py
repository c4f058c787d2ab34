"""The plugin manager: `backends`, `compile`, the shorthands, and third-party plugins found
through the ``flux`` entry-point group (fake installed distributions built in a tmp dir from
the modules in ``plugin_fixtures/``).

The same plugins built with setuptools and installed by pip into a real, separate virtual
environment are tested in test_plugin_isolation.py."""
import importlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

import flux
import flux.backends
import flux.hookspecs
from flux import Affine, Chain

FIXTURES = Path(__file__).parent / "plugin_fixtures"
FIXTURE_MODULES = [path.stem for path in FIXTURES.glob("fluxtest_*.py")]

THIRDPARTY = ("flux-thirdparty", {"thirdparty": "fluxtest_thirdparty"})
BROKEN_IMPORT = ("flux-broken-import", {"broken_import": "fluxtest_broken_import"})
BROKEN_HOOK = ("flux-broken-hook", {"broken_hook": "fluxtest_broken_hook"})


def make_distribution(site: Path, name: str, eps: dict) -> Path:
    """A fake installed distribution `name` in the directory `site`: a ``*.dist-info`` folder
    whose entry_points.txt declares `eps` (entry name -> module) in the ``flux`` group, and the
    plugin modules next to it."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[flux]\n" + "".join(f"{entry} = {module}\n" for entry, module in eps.items()))
    for module in eps.values():
        shutil.copy(FIXTURES / f"{module}.py", site / f"{module}.py")
    return site


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(name, eps, site="site")``: a fake distribution on sys.path (after the real
    site-packages, as a pip-installed plugin would be), with the registry reloaded. Undone
    after the test: sys.path, the plugin modules and the registry."""
    monkeypatch.delenv("FLUX_STRICT_PLUGINS", raising=False)

    def install(name, eps, site="site"):
        root = make_distribution(tmp_path / site, name, eps)
        if str(root) not in sys.path:
            monkeypatch.setattr(sys, "path", [*sys.path, str(root)])
        importlib.invalidate_caches()
        flux.backends.REGISTRY.reload()
        return root

    yield install
    for module in FIXTURE_MODULES:
        sys.modules.pop(module, None)
    flux.backends.REGISTRY.reload()


def mlp():
    flux.seed(0)
    return Chain(Affine(3, 4), flux.σ, Affine(4, 2))


X = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)


def plugin_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, flux.PluginWarning)]


# -- the built-in backend and the known shorthands ---------------------------------------------


def test_backends_lists_numpy_first():
    names = flux.backends()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert names[0] == "numpy"


def test_compile_for_numpy_gives_a_compiled_model():
    m = mlp()
    for c in (flux.compile(m, backend="numpy"), flux.compile(m, "numpy"), flux.compile(m)):
        assert isinstance(c, flux.Compiled)
        np.testing.assert_allclose(c(X), m(X), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c(X[0]), m(X[0]), rtol=1e-6, atol=1e-7)


def test_compile_for_an_unknown_backend_lists_the_installed_ones():
    with pytest.raises(flux.BackendNotInstalled) as info:
        flux.compile(mlp(), backend="unknown")
    assert isinstance(info.value, ImportError) and isinstance(info.value, flux.FluxError)
    message = str(info.value)
    assert "'unknown'" in message
    for name in flux.backends():
        assert name in message


@pytest.mark.parametrize("name, package", [("mxnet", "flux-mxnet"), ("tf", "flux-tf"),
                                           ("cupy", "flux-cupy")])
def test_known_shorthands_exist_and_say_what_to_install(name, package):
    shorthand = getattr(flux, name)
    assert callable(shorthand)
    if name in flux.backends():
        pytest.skip(f"{package} is installed here, so flux.{name} does not raise")
    with pytest.raises(flux.BackendNotInstalled) as info:
        shorthand(mlp())
    assert isinstance(info.value, ImportError)
    assert f"pip install {package}" in str(info.value)
    with pytest.raises(flux.BackendNotInstalled):
        flux.compile(mlp(), backend=name)


def test_the_numpy_backend_registers_through_the_flux_backends_hook():
    flux.backends()
    manager = flux.backends.REGISTRY.manager
    numpy_plugin = importlib.import_module("flux.backends.numpy")
    assert manager.is_registered(numpy_plugin)
    impls = manager.hook.flux_backends.get_hookimpls()
    assert any(impl.plugin is numpy_plugin for impl in impls)
    provided = [b for backends in manager.hook.flux_backends() for b in backends]
    assert [b.name for b in provided].count("numpy") == 1
    assert all(isinstance(b, flux.hookspecs.Backend) for b in provided)


def test_the_numpy_backend_is_declared_in_the_flux_entry_point_group():
    assert "numpy" in {ep.name for ep in entry_points(group="flux")}


def test_unknown_attributes_of_flux_are_attribute_errors():
    with pytest.raises(AttributeError):
        flux.thirdparty                          # noqa: B018  (not installed outside `install`)
    assert not hasattr(flux, "not_a_backend")


# -- a working third-party backend ----------------------------------------------------------


def test_a_third_party_backend_is_listed_and_compiles(install):
    install(*THIRDPARTY)
    names = flux.backends()
    assert names[0] == "numpy" and "thirdparty" in names
    plugin = importlib.import_module("fluxtest_thirdparty")
    m = mlp()
    for c in (flux.compile(m, backend="thirdparty"), flux.thirdparty(m)):
        assert isinstance(c, flux.Compiled)
        lowered = len(plugin.LOWERED)
        np.testing.assert_allclose(c(X), m(X), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c(X[0]), m(X[0]), rtol=1e-6, atol=1e-7)
        assert len(plugin.LOWERED) > lowered   # it really ran through the plugin


def test_a_third_party_backend_trains_the_original_model(install):
    install(*THIRDPARTY)
    r = np.random.default_rng(1)
    data = [(r.standard_normal((4, 3)).astype(np.float32),
             r.standard_normal((4, 2)).astype(np.float32)) for _ in range(3)]
    m, twin = mlp(), mlp()
    history = flux.train(flux.thirdparty(m), data)
    assert history == pytest.approx(flux.train(twin, data), rel=1e-5)
    for (key, p), q in zip(flux.params(m).items(), flux.params(twin).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_an_unknown_backend_error_lists_third_party_backends(install):
    install(*THIRDPARTY)
    with pytest.raises(flux.BackendNotInstalled) as info:
        flux.compile(mlp(), backend="unknown")
    assert "numpy" in str(info.value) and "thirdparty" in str(info.value)


# -- broken plugins -------------------------------------------------------------------------------


@pytest.mark.parametrize("dist, entry, error", [
    (BROKEN_IMPORT, "broken_import", "libmissing-42"),
    (BROKEN_HOOK, "broken_hook", "no device found"),
], ids=["import-fails", "hook-raises"])
def test_a_broken_plugin_is_skipped_with_a_warning(install, dist, entry, error):
    install(*dist)
    install(*THIRDPARTY)
    with pytest.warns(flux.PluginWarning) as record:
        names = flux.backends()
    messages = plugin_warnings(record)
    assert len(messages) == 1
    assert entry in messages[0] and error in messages[0]
    assert names[0] == "numpy" and "thirdparty" in names   # the others still load
    m = mlp()
    np.testing.assert_allclose(flux.compile(m, backend="numpy")(X), m(X), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(flux.thirdparty(m)(X), m(X), rtol=1e-6, atol=1e-7)


def test_two_plugins_with_the_same_backend_name_keep_the_first(install):
    install("flux-dupe-a", {"dupe_a": "fluxtest_dupe_a"}, site="site1")
    install("flux-dupe-b", {"dupe_b": "fluxtest_dupe_b"}, site="site2")   # later on sys.path
    with pytest.warns(flux.PluginWarning) as record:
        names = flux.backends()
    messages = plugin_warnings(record)
    assert len(messages) == 1
    assert "'dupe'" in messages[0] and "dupe_b" in messages[0]
    assert names.count("dupe") == 1
    m = mlp()
    np.testing.assert_allclose(flux.compile(m, backend="dupe")(X), m(X), rtol=1e-6, atol=1e-7)
    assert importlib.import_module("fluxtest_dupe_a").LOWERED
    assert not importlib.import_module("fluxtest_dupe_b").LOWERED


@pytest.mark.parametrize("dists, entry", [
    ([BROKEN_IMPORT], "broken_import"),
    ([BROKEN_HOOK], "broken_hook"),
    ([("flux-dupe-a", {"dupe_a": "fluxtest_dupe_a"}),
      ("flux-dupe-b", {"dupe_b": "fluxtest_dupe_b"})], "dupe_b"),
], ids=["import-fails", "hook-raises", "duplicate-name"])
def test_strict_plugins_make_each_failure_an_error(install, monkeypatch, dists, entry):
    for i, dist in enumerate(dists):
        install(*dist, site=f"site{i}")
    monkeypatch.setenv("FLUX_STRICT_PLUGINS", "1")
    with pytest.raises(flux.PluginError) as info:
        flux.backends()
    assert isinstance(info.value, flux.FluxError)
    assert entry in str(info.value)
    with pytest.raises(flux.PluginError):
        flux.compile(mlp(), backend="numpy")   # every use of the registry, not just the first


def test_strict_plugins_accept_working_plugins(install, monkeypatch):
    install(*THIRDPARTY)
    monkeypatch.setenv("FLUX_STRICT_PLUGINS", "1")
    assert flux.backends()[0] == "numpy" and "thirdparty" in flux.backends()


def run_python(code, site, **env):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("FLUX_STRICT_PLUGINS", "PYTHONWARNINGS")}
    environ.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True,
                          text=True, timeout=60)


def test_import_flux_with_a_broken_plugin_installed(tmp_path):
    site = make_distribution(tmp_path / "site", *BROKEN_IMPORT)
    done = run_python("import flux; print(flux.backends())", site)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("['numpy'")
    assert "PluginWarning" in done.stderr
    assert "broken_import" in done.stderr and "libmissing-42" in done.stderr

    strict = run_python("import flux; print(flux.backends())", site, FLUX_STRICT_PLUGINS="1")
    assert strict.returncode != 0
    assert "PluginError" in strict.stderr and "broken_import" in strict.stderr


EXITS = ("flux-exits", {"exits": "fluxtest_exits"})
BAD_NAMES = ("flux-bad-names", {"bad_names": "fluxtest_bad_names"})
STRING_HOOK = ("flux-string-hook", {"string_hook": "fluxtest_string_hook"})


@pytest.mark.parametrize("plugin, what", [(EXITS, "refuses to load"),
                                          (BAD_NAMES, "name is not a non-empty string"),
                                          (STRING_HOOK, "other than a list")],
                         ids=["sys.exit", "non-string name", "string from the hook"])
def test_a_broken_plugin_costs_one_warning_and_nothing_else(install, plugin, what):
    """Exiting at import, a backend named by a list, a hook returning a string: one
    PluginWarning each, and the NumPy backend (and getattr(flux, ...)) work as ever."""
    install(*plugin)
    with pytest.warns(flux.PluginWarning, match=what) as warned:
        names = flux.backends()
    assert len([w for w in warned if issubclass(w.category, flux.PluginWarning)]) == 1
    assert names[0] == "numpy" and all(isinstance(n, str) for n in names)
    assert getattr(flux, "exits", None) is None
    np.testing.assert_allclose(flux.compile(mlp(), "numpy")(np.ones((2, 3))),
                               mlp()(np.ones((2, 3))), rtol=1e-6)
