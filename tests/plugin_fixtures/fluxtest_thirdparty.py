"""A working third-party backend plugin, `thirdparty`: it lowers graphs by handing them to the
built-in NumPy backend, and records every graph it lowers so tests can see it was used."""
import flux.hookspecs as hs
from flux.backends import NUMPY

LOWERED = []


class ThirdParty(hs.Backend):
    name = "thirdparty"
    package = "flux-thirdparty"

    def lower(self, graph, options):
        LOWERED.append(graph)
        return NUMPY.lower(graph, options)


@hs.hookimpl
def flux_backends():
    return [ThirdParty()]
