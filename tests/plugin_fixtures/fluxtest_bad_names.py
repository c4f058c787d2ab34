"""A plugin whose backend's name is not a string."""
import flux.hookspecs as hs
from flux.backends import NUMPY


class ListNamed(type(NUMPY)):
    name = ["not", "a", "string"]


@hs.hookimpl
def flux_backends():
    return [ListNamed()]
