"""The backend registry: pluggy, the ``flux`` entry-point group, and `compile`/`backends`."""
from __future__ import annotations

import os
import warnings
from importlib.metadata import entry_points

import numpy as np
import pluggy

from flux.backends import contract
from flux.backends import numpy as numpy_backend
from flux.backends.eager import compiled_of
from flux.errors import BackendNotInstalled, FluxError
from flux.ir.source import user_errors
from flux.model.walk import is_model

__all__ = ["backends", "compile", "PluginError", "PluginWarning", "KNOWN_BACKENDS"]

KNOWN_BACKENDS = {"numpy": "flux-core", "mxnet": "flux-mxnet", "tf": "flux-tf", "cupy": "flux-cupy"}
"""Backends this project ships, and the distribution to install for each."""

SAFE_INSTALL = (
    "pip install {package} from this repository's wheels, never by bare name from a package "
    "index (PyPI's flux-core is an unrelated project): pip wheel --no-deps -w WHEELS "
    "packages/flux-core packages/{package}, then pip install --no-index --find-links WHEELS "
    "{package}==0.1.0 (or pip install -e packages/{package} in a checkout)")
"""How to install one of this project's backends safely (the README says the same)."""


class PluginError(FluxError):
    """A backend plugin failed to load (raised only with FLUX_STRICT_PLUGINS=1)."""


class PluginWarning(UserWarning):
    """A backend plugin failed to load and was skipped."""


def _strict() -> bool:
    return os.environ.get("FLUX_STRICT_PLUGINS", "").strip() not in ("", "0")


def _failed(plugin: str, what: str, error: Exception) -> None:
    message = f"flux backend plugin {plugin!r} {what}: {type(error).__name__}: {error}"
    if _strict():
        raise PluginError(message + " (FLUX_STRICT_PLUGINS is set)") from error
    warnings.warn(message + "; it is skipped (set FLUX_STRICT_PLUGINS=1 to make this an error)",
                  PluginWarning, stacklevel=4)


class Registry:
    """Loads plugins once, on first use, and maps backend names to Backend objects."""

    def __init__(self):
        self._backends: dict | None = None
        self.manager: pluggy.PluginManager | None = None

    def load(self) -> dict:
        if self._backends is not None:
            return self._backends
        manager = pluggy.PluginManager("flux")
        manager.add_hookspecs(contract)
        manager.register(numpy_backend, name="numpy")   # flux-core's own, always first
        for ep in entry_points(group="flux"):
            if ep.value == numpy_backend.__name__:
                continue   # flux-core's entry point for the module registered above
            if manager.has_plugin(ep.name):
                _failed(ep.name, f"({ep.value}) is registered twice", ValueError("duplicate name"))
                continue
            try:
                plugin = ep.load()
                manager.register(plugin, name=ep.name)
            except (Exception, SystemExit) as error:  # a broken plugin must not break flux
                _failed(ep.name, f"({ep.value}) failed to load", error)
        found: dict = {}
        for impl in manager.hook.flux_backends.get_hookimpls():
            try:
                provided = impl.function()
            except (Exception, SystemExit) as error:
                _failed(impl.plugin_name, "raised in flux_backends()", error)
                continue
            if not isinstance(provided, (list, tuple)):
                _failed(impl.plugin_name, "returned something other than a list of backends "
                        "from flux_backends()", TypeError(f"{provided!r:.60}"))
                continue
            for backend in provided:
                name = getattr(backend, "name", None)
                if not isinstance(name, str) or not name:
                    _failed(impl.plugin_name, "provided a backend whose name is not a "
                            "non-empty string", TypeError(f"{backend!r:.60}: name {name!r:.40}"))
                elif backend.name in found:
                    _failed(impl.plugin_name, f"provides backend {backend.name!r}, which "
                            f"{found[backend.name].package or 'another plugin'} provides already",
                            ValueError("duplicate backend name"))
                else:
                    found[backend.name] = backend
        self.manager = manager
        self._backends = dict(sorted(found.items(), key=lambda kv: (kv[0] != "numpy", kv[0])))
        return self._backends

    def reload(self) -> None:
        """Forget what was loaded (for tests and after installing a plugin at run time)."""
        self._backends = None
        self.manager = None

    def get(self, name: str):
        found = self.load()
        backend = found.get(name)
        if backend is None:
            installed = ", ".join(found) or "none"
            package = KNOWN_BACKENDS.get(name)
            hint = (SAFE_INSTALL.format(package=package) if package
                    else f"install the plugin that provides it (a package with an entry point "
                         f"named {name!r} in the 'flux' group)")
            raise BackendNotInstalled(f"the backend {name!r} is not installed: {hint}. "
                                      f"Installed backends: {installed}")
        return backend


REGISTRY = Registry()


def backends() -> list[str]:
    """The names of the installed backends, ``'numpy'`` first (e.g. ``['numpy', 'tf']``)."""
    return list(REGISTRY.load())


@user_errors
def compile(model, backend: str = "numpy", *shapes, **options):
    """Compile `model` for `backend`; the result is called and trained like the model.

    `options` pass through to the backend (e.g. ``device=``). Example input shapes, if given,
    are traced at once, so shape errors surface here rather than at the first call.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a backend's name (a str), found {type(backend).__name__}")
    target = REGISTRY.get(backend)
    if not is_model(model):
        compiled_of(model)   # raises the error for a non-model
    compiled = target.compile(model, options)
    for shape in shapes:
        compiled.graph(np.zeros(shape, compiled.dtype or np.float32))
    return compiled


def shorthand(name: str):
    """``flux.<name>(model, *shapes, **options)`` = ``flux.compile(model, name, ...)``."""
    def compile_for(model, *shapes, **options):
        return compile(model, name, *shapes, **options)
    compile_for.__name__ = compile_for.__qualname__ = name
    compile_for.__doc__ = (f"Compile a model for the {name!r} backend "
                           f"(``flux.compile(model, backend={name!r})``).")
    return compile_for
