"""flux: models as functions with parameters, written in a notation close to the mathematics,
traced into dataflow graphs that the built-in NumPy backend and backend plugins run.

The public names are listed in `__all__`; everything in a module whose name starts with an
underscore is internal.
"""
from . import _numpy_api as _numpy_api  # installs NumPy semantics on traced values
from ._errors import (BackendError, BackendNotInstalled, FluxError, FluxTypeError,
                      FluxValueError, Frame, ShapeError, TraceError)
from ._param import Param, initn, param, seed
from ._model import net, params
from ._functions import (σ, sigmoid, relu, tanh, softmax, logsoftmax, exp, log, flatten, hcat,
                         vcat, sum, mean, reshape, transpose)
from .layers.affine import Affine
from .layers.chain import Chain
from .layers.recurrent import GRU, LSTM, GatedRecurrent, Recurrent
from ._recurrence import State, prev
from ._unroll import flip, reset, seq, unroll, unroll1
from ._compile import Compiled
from ._plugins import PluginError, PluginWarning, backends, compile, shorthand
from ._training import back, train, update
from ._optimisers import ADAM, Momentum, Optimiser, SGD
from ._losses import crossentropy, logitcrossentropy, mse
from ._data import accuracy, onecold, onehot
from ._batching import Batch, Seq, batches, batchone, chunk, rawbatch, rpad, seqs
from ._throttle import throttle
from ._shapes import ShapesReport, infer, shapes
from ._summary import Summary, summary
from ._io import load, save

mxnet = shorthand("mxnet")
tf = shorthand("tf")
cupy = shorthand("cupy")

__all__ = [
    # models
    "net", "Param", "param", "params", "initn", "seed", "Affine", "Chain",
    # recurrence
    "State", "prev", "Recurrent", "GRU", "GatedRecurrent", "LSTM", "unroll", "unroll1", "flip",
    "seq", "reset",
    # batches and sequences
    "Batch", "Seq", "rawbatch", "batchone", "batches", "seqs", "chunk", "rpad",
    # functions
    "σ", "sigmoid", "relu", "tanh", "softmax", "logsoftmax", "exp", "log", "flatten", "hcat",
    "vcat", "sum", "mean", "reshape", "transpose",
    # training
    "back", "update", "train", "SGD", "Momentum", "ADAM", "Optimiser", "mse", "crossentropy",
    "logitcrossentropy", "onehot", "onecold", "accuracy", "throttle", "save", "load",
    # shapes and debugging
    "infer", "shapes", "ShapesReport", "summary", "Summary",
    # backends
    "backends", "compile", "Compiled", "mxnet", "tf", "cupy",
    # errors
    "FluxError", "ShapeError", "TraceError", "FluxValueError", "FluxTypeError", "BackendError",
    "BackendNotInstalled", "Frame",
    "PluginError", "PluginWarning",
]


def __getattr__(name: str):
    """``flux.<backend>`` for installed third-party backends (resolved through the registry)."""
    if not name.startswith("_"):
        from ._plugins import REGISTRY
        if name in REGISTRY.load():
            return shorthand(name)
    raise AttributeError(f"module 'flux' has no attribute {name!r}")
