"""Models called on arrays: each model's NumPy-compiled twin, made on first use."""
from __future__ import annotations

from flux.backends.compiled import Compiled
from flux.backends.numpy import NUMPY
from flux.errors import FluxTypeError
from flux.model.net import FunctionModel
from flux.model.walk import is_model

__all__ = ["compiled_numpy", "compiled_of"]

_TWIN = "_flux_compiled"


def compiled_numpy(model) -> Compiled:
    """The model's own NumPy-compiled twin, made on first use and kept on the model: what
    calling the model on arrays runs (so a direct call and every backend run the same graph)."""
    compiled = model.__dict__.get(_TWIN)
    if compiled is None:
        compiled = Compiled(model, NUMPY)
        object.__setattr__(model, _TWIN, compiled)
    return compiled


_FUNCTIONS: dict = {}     # id(function) -> (function, its model): plain functions as models


def compiled_of(model) -> Compiled:
    """The Compiled a model runs through: itself if compiled, else its NumPy twin. A plain
    function (``flux.mse``, ``np.tanh``) is a model with no parameters, as in the seed."""
    if isinstance(model, Compiled):
        return model
    if is_model(model):
        return compiled_numpy(model)
    if callable(model) and not isinstance(model, type):
        found = _FUNCTIONS.get(id(model))
        if found is None or found[0] is not model:
            if len(_FUNCTIONS) >= 256:          # (a bound, for programs making many lambdas)
                _FUNCTIONS.clear()
            found = _FUNCTIONS[id(model)] = (model, FunctionModel(model))
        return compiled_numpy(found[1])
    raise FluxTypeError(f"expected a flux model (an @net class instance, a Chain, a layer or a "
                        f"compiled model), found {type(model).__name__}")
