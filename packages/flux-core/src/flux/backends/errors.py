"""Backend errors mapped to the model: an exception raised while a backend ran (or built) a
graph becomes a `BackendError` at the equation that raised it, with its model frames and the
user's line; the backend's exception is its ``__cause__`` (the caller raises ``from error``).

Backends find the equation either directly (the NumPy backend's line table) or through the
names they gave the ops of equation i, which start with `op_name(i)` (``e12/MatMul`` in
TensorFlow, ``e12_dot`` in MXNet): `equation_named` reads it back from the message.
"""
from __future__ import annotations

import re

from flux.errors import BackendError

__all__ = ["op_name", "equation_named", "equation_error", "backend_error", "first_line"]

_NAMED = re.compile(r"(?<![\w.])e(\d+)[/_]")


def op_name(index: int) -> str:
    """The name prefix of the ops a backend makes for equation `index`."""
    return f"e{index}"


def equation_named(graph, text: str):
    """The index of the first equation of `graph` whose op name (`op_name`) `text` mentions,
    or None."""
    for match in _NAMED.finditer(text):
        index = int(match.group(1))
        if index < len(graph.eqns):
            return index
    return None


def first_line(error: Exception) -> str:
    """The first line of `error`'s message ("" if it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def equation_error(backend: str, error: Exception, eqn, message: str | None = None):
    """`error`, raised by `backend` while running `eqn`, as a BackendError with `eqn`'s model
    frames: ``<backend> backend: <Type> in <prim> (<input avals>): <message>`` and the line.
    `message` defaults to the first line of `error`."""
    source = eqn.source
    shapes = ", ".join(str(a.aval) for a in eqn.inputs)
    text = first_line(error) if message is None else message
    return BackendError(f"{backend} backend: {type(error).__name__} in {eqn.prim.name} "
                        f"({shapes}): {text}\n  at {source.file}:{source.line}",
                        trace=source.frames)


def backend_error(backend: str, error: Exception, graph, index: int | None = None,
                  message: str | None = None) -> BackendError:
    """`error` raised by `backend` while running `graph`: at equation `index` when given, else
    at the equation the error's message names (`equation_named`), else without frames."""
    if index is None:
        index = equation_named(graph, str(error))
    if index is None:
        text = first_line(error) if message is None else message
        return BackendError(f"{backend} backend: {type(error).__name__}: {text}",
                            trace=_outermost(graph))
    return equation_error(backend, error, graph.eqns[index], message)


def _outermost(graph) -> list:
    """The model frame every equation of `graph` shares (the outermost model, at the line of
    its first equation), for an error that names no equation; none for an empty graph."""
    for eqn in getattr(graph, "eqns", ()):
        if eqn.source.frames:
            return [eqn.source.frames[-1]]
    return []
