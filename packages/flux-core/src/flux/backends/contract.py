"""The backend contract: the `Backend` base class and the `flux_backends` hook (with its
pluggy markers). Plugin authors read `flux.hookspecs`, which re-exports these."""
from __future__ import annotations

import pluggy

from flux.backends.compiled import Compiled

__all__ = ["hookspec", "hookimpl", "Backend", "flux_backends"]

hookspec = pluggy.HookspecMarker("flux")
hookimpl = pluggy.HookimplMarker("flux")


class Backend:
    """Base class of backends. Subclasses set `name` and `package` and implement `lower`."""

    name: str = ""
    """What users pass as ``backend=`` and the shorthand ``flux.<name>``."""

    package: str = ""
    """The distribution that provides it (``pip install <package>``)."""

    loops: bool = False
    """Whether `lower` takes graphs with loops (`flux.ir.primitives.LOOPS`: `scan`). A
    backend that leaves it False is given every unrolled model fully unrolled (one copy of
    the step per time step), so it needs nothing but `PRIMITIVES`."""

    def lower(self, graph, options: dict):
        """Return a function taking the graph's flat input arrays (NumPy) and returning the list
        of its outputs as NumPy arrays. `options` are the keyword options the user gave
        `flux.compile`; reject the ones you do not know with a TypeError."""
        raise NotImplementedError(f"backend {self.name!r} does not implement lower()")

    def compile(self, model, options: dict):
        """Return the compiled model. The default wraps `model` in `flux.Compiled`, which does
        the tracing, autodiff and parameter bookkeeping and calls `lower` once per signature;
        override to return a subclass when the backend wants more control (e.g. parameters
        kept on its side, training steps that run entirely inside the backend)."""
        return Compiled(model, self, options)

    def __repr__(self) -> str:
        return f"<flux backend {self.name!r} from {self.package}>"


@hookspec
def flux_backends():
    """Return a list of `Backend` instances this plugin provides."""
