"""One of two plugins that both provide a backend named `dupe` (this is plugin b)."""
import flux.hookspecs as hs
from flux.backends import NUMPY

LOWERED = []


class Dupe(hs.Backend):
    name = "dupe"
    package = "flux-dupe-b"

    def lower(self, graph, options):
        LOWERED.append(graph)
        return NUMPY.lower(graph, options)


@hs.hookimpl
def flux_backends():
    return [Dupe()]
