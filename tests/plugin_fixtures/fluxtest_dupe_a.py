"""One of two plugins that both provide a backend named `dupe` (this is plugin a)."""
import flux.hookspecs as hs
from flux.backends import NUMPY

LOWERED = []


class Dupe(hs.Backend):
    name = "dupe"
    package = "flux-dupe-a"

    def lower(self, graph, options):
        LOWERED.append(graph)
        return NUMPY.lower(graph, options)


@hs.hookimpl
def flux_backends():
    return [Dupe()]
