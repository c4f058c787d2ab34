"""A plugin that imports, but whose `flux_backends` hook raises."""
import flux.hookspecs as hs


@hs.hookimpl
def flux_backends():
    raise RuntimeError("no device found by fluxtest_broken_hook")
