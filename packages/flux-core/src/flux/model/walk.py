"""Walking a model: its fields, sub-models and Params, by attribute path (`walk`, `params`).

A model is an object whose type was decorated with `@net` (or an unrolled/flipped wrapper, or
a `net`-wrapped function). `walk` is the one traversal every other question is answered with:
which Params a model has (`params`), the attribute path of each model and Param
(`model_paths`), its recurrent variables and its stateful unrolled models (in
`flux.transforms`).
"""
from __future__ import annotations

import numpy as np

from flux.model.param import Buffer, Param

__all__ = ["is_model", "field_names", "children", "walk", "params", "model_paths", "cast",
           "input_shape", "buffers", "stored"]


def is_model(obj) -> bool:
    """True for instances of `@net` classes and for `net`-wrapped functions."""
    return getattr(type(obj), "__flux_model__", False)


def input_shape(model):
    """The shape of one input point `model` takes (no batch axis) where the model determines
    it: its ``input_shape`` attribute (Affine and the recurrent layers by their weights, a Chain
    by its first link, unrolled models by theirs; any @net class may define one), else None.
    A compiled model answers for its model."""
    if getattr(model, "__flux_compiled__", False):
        model = model.model
    shape = getattr(model, "input_shape", None)
    return tuple(int(d) for d in shape) if isinstance(shape, tuple) else None


def field_names(obj) -> list[str]:
    """The fields of a model in declaration order, then any other public attributes it set."""
    names = list(getattr(type(obj), "__flux_fields__", ()))
    for name in vars(obj):
        if not name.startswith("_") and name not in names:
            names.append(name)
    return names


def children(obj):
    """(key, value) pairs under `obj` that may hold Params or models."""
    if is_model(obj):
        return [(name, getattr(obj, name, None)) for name in field_names(obj)]
    if isinstance(obj, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return [(str(k), v) for k, v in obj.items()]
    return []


def walk(model, stop=None):
    """``(path, obj)`` for every model, Param, Buffer and container under `model` (itself
    first, with path ``""``), depth-first in field order, each object once, at its first path.
    The walk does not go inside objects for which ``stop(obj)`` is true (they are still
    listed).

    >>> from flux import Affine, Chain
    >>> [path for path, obj in walk(Chain(Affine(2, 3)))]
    ['', 'layers', 'layers.0', 'layers.0.W', 'layers.0.b']
    """
    seen: set[int] = set()

    def visit(obj, path):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        yield path, obj
        if stop is not None and stop(obj):
            return
        for key, value in children(obj):
            if isinstance(value, (Param, Buffer, list, tuple, dict)) or is_model(value):
                yield from visit(value, f"{path}.{key}" if path else key)

    yield from visit(model, "")


def params(model) -> dict[str, Param]:
    """Every Param in `model`, keyed by attribute path (``"layers.0.W"``); a Param shared by
    several layers appears once, under its first path.

    >>> from flux import Affine, Chain
    >>> list(params(Chain(Affine(2, 3), Affine(3, 1))))
    ['layers.0.W', 'layers.0.b', 'layers.1.W', 'layers.1.b']
    """
    return {path: obj for path, obj in walk(model) if isinstance(obj, Param)}


def buffers(model) -> dict[str, Buffer]:
    """Every `Buffer` in `model` (non-trainable state: BatchNorm's running statistics), keyed
    by attribute path, as `params` lists Params."""
    return {path: obj for path, obj in walk(model) if isinstance(obj, Buffer)}


def stored(model) -> dict:
    """What a saved file holds for `model`: its Params and its Buffers, by attribute path."""
    return {**params(model), **buffers(model)}


def model_paths(model) -> dict[int, str]:
    """``id(obj) -> attribute path`` for every model and Param reachable from `model` (first
    occurrence wins; the outermost model's path is ``""``)."""
    return {id(obj): path for path, obj in walk(model) if isinstance(obj, Param) or is_model(obj)}


def cast(model, dtype):
    """Give every floating Param and Buffer of `model`, and the floating initial values of its
    State fields, the floating `dtype` (``flux.cast(model, np.float64)``); returns `model`.

    >>> import numpy as np, flux
    >>> m = cast(flux.Affine(2, 3), np.float64)
    >>> m.W.dtype, m(np.ones(2)).dtype
    (dtype('float64'), dtype('float64'))
    """
    dtype = np.dtype(dtype)
    for _, obj in walk(model):
        if isinstance(obj, Param) and obj.dtype.kind == "f":
            obj.cast(dtype)
        elif isinstance(obj, Buffer) and obj.dtype.kind == "f":
            obj.value = obj.value.astype(dtype)
        elif is_model(obj):
            for name in getattr(type(obj), "__flux_states__", ()):
                value = obj.__dict__.get(name)
                if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    setattr(obj, name, value.astype(dtype))
    return model
