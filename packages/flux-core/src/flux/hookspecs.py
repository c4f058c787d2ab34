"""The plugin contract: how a package adds a backend to flux.

A backend plugin is a distribution (named ``flux-<name>`` by convention) with an entry point in
the ``flux`` group pointing at a module (or object) that implements the `flux_backends` hook::

    # pyproject.toml of flux-mybackend
    [project.entry-points.flux]
    mybackend = "flux_mybackend"

    # flux_mybackend/__init__.py
    import flux.backends as fb

    class MyBackend(fb.Backend):
        name = "mybackend"
        package = "flux-mybackend"
        def lower(self, graph, options):
            ...   # return a function: flat input arrays -> list of flat output arrays

    @fb.hookimpl
    def flux_backends():
        return [MyBackend()]

Once installed, ``flux.compile(model, backend="mybackend")`` and ``flux.mybackend(model)`` work.
flux-core's own NumPy backend registers through this same hook. Plugins are loaded on the first
use of the registry (`flux.backends()`, `flux.compile`, a shorthand); one that fails to import
or whose hook raises is skipped with a `PluginWarning` naming it and the error, or, with the
environment variable ``FLUX_STRICT_PLUGINS=1``, raises `PluginError`.

What a backend receives: a `flux.ir.Graph`, fully shaped (every Var has an `Aval`), already
unrolled (and, for `flux.back` and the default training step, differentiated) by core, with
source information on every equation. Its inputs are the flat input arrays;
`graph.param_objs[i]` is the `flux.Param` bound to `graph.param_vars[i]` (read it at each
call, or keep a copy with `flux.backends.ParamMirror`); the primitives to implement are
`flux.ir.PRIMITIVES`. Everything a backend may use is public in `flux.ir` (the IR and the
primitives) and `flux.backends` (this contract, `Compiled`, the mirrors, error mapping,
device strings, index helpers, tracing). The conformance kit
(``pytest --flux-backend=<name>``, see `flux.testing`) checks a backend against NumPy.
"""
from __future__ import annotations

from flux.backends.contract import Backend, flux_backends, hookimpl, hookspec

__all__ = ["hookspec", "hookimpl", "Backend", "flux_backends"]
