"""A plugin whose hook returns a string instead of a list of backends."""
import flux.hookspecs as hs


@hs.hookimpl
def flux_backends():
    return "numpy"
