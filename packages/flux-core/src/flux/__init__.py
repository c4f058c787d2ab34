"""flux: models as functions with parameters, written in a notation close to the mathematics,
traced into dataflow graphs that the built-in NumPy backend and backend plugins run.

The public names are listed in `__all__`. Backend authors also use the public modules
`flux.ir` (the IR and the primitives) and `flux.backends` (the backend contract and the
machinery backends share); the rest of the package is internal and may change. The layers
of the package are described in docs/architecture.md.
"""
from flux.ops import methods as _methods  # noqa: F401  (Tracer operators and NumPy protocol)
from flux.errors import (BackendError, BackendNotInstalled, FluxError, FluxTypeError,
                         FluxValueError, Frame, ShapeError, TraceError)
from flux.model.param import Param, initn, param, seed
from flux.model.net import net, set_eager_runner as _set_eager_runner
from flux.model.walk import cast, params
from flux.ops.functions import (σ, sigmoid, relu, tanh, softmax, logsoftmax, exp, log,
                                flatten, hcat, vcat, sum, mean, reshape, transpose)
from flux.ops.windows import avg_pool, conv, max_pool
from flux.layers.affine import Affine
from flux.layers.chain import Chain
from flux.layers.conv import AvgPool, Conv, Conv2D, MaxPool
from flux.layers.text import Embedding, LayerNorm, Reshape
from flux.layers.regularise import BatchNorm, Dropout
from flux.model.modes import testmode, trainmode
from flux.model.param import Buffer
from flux.layers.recurrent import GRU, LSTM, GatedRecurrent, Recurrent
from flux.model.state import State, prev
from flux.transforms.carry import reset
from flux.transforms.unroll import flip, seq, unroll, unroll1
from flux import backends              # the backend contract; callable: flux.backends()
from flux.backends.compiled import Compiled
from flux.backends.eager import compiled_numpy as _compiled_numpy
from flux.backends.registry import PluginError, PluginWarning, compile, shorthand
from flux.train.loop import back, train, update
from flux.train.optimisers import ADAM, Momentum, Optimiser, SGD
from flux.train.callbacks import (EarlyStopping, TrainingState, cosine_decay, exponential_decay,
                                  lr_schedule, step_decay, warmup)
from flux.ops.losses import crossentropy, logitcrossentropy, mse
from flux.data.labels import accuracy, onecold, onehot
from flux.data.batch import Batch, Seq, rawbatch
from flux.data.batching import batches, batchone, chunk, rpad, seqs
from flux.train.throttle import throttle
from flux.train.shard import shard
from flux.debug.shapes import ShapesReport, infer, shapes
from flux.debug.summary import Summary, summary
from flux.train.io import load, save
from flux import onnx                  # flux.onnx.export / flux.onnx.load (the onnx extra)

_set_eager_runner(_compiled_numpy)   # a model called on arrays runs on its NumPy twin


def _check_distribution() -> None:
    """Warn when the installed `flux-core` distribution is not this project's (PyPI hosts an
    unrelated `flux-core`, whose files would mix with these)."""
    import importlib.metadata
    import warnings
    try:
        version = importlib.metadata.version("flux-core")
    except importlib.metadata.PackageNotFoundError:
        return                       # (running from a source tree)
    if not version.startswith("0.1."):
        warnings.warn(FOREIGN.format(version=version), stacklevel=3)


FOREIGN = (
    "the installed flux-core distribution is version {version}, not this project's (0.1.x): "
    "PyPI's flux-core is an unrelated project that also installs a package named flux. "
    "Uninstall it (pip uninstall flux-core) and install flux-core from this repository's "
    "wheels with pip install --no-index --find-links WHEELS flux-core==0.1.0")

_check_distribution()

mxnet = shorthand("mxnet")
tf = shorthand("tf")
cupy = shorthand("cupy")

__all__ = [
    # models
    "net", "Param", "param", "params", "cast", "initn", "seed", "Affine", "Chain",
    # layers for images and text
    "Conv", "Conv2D", "MaxPool", "AvgPool", "Embedding", "LayerNorm", "Reshape", "Dropout",
    "BatchNorm", "Buffer", "testmode", "trainmode",
    # recurrence
    "State", "prev", "Recurrent", "GRU", "GatedRecurrent", "LSTM", "unroll", "unroll1", "flip",
    "seq", "reset",
    # batches and sequences
    "Batch", "Seq", "rawbatch", "batchone", "batches", "seqs", "chunk", "rpad",
    # functions
    "σ", "sigmoid", "relu", "tanh", "softmax", "logsoftmax", "exp", "log", "flatten", "hcat",
    "vcat", "sum", "mean", "reshape", "transpose", "conv", "max_pool", "avg_pool",
    # training
    "back", "update", "train", "SGD", "Momentum", "ADAM", "Optimiser", "mse", "crossentropy",
    "TrainingState", "EarlyStopping", "lr_schedule", "step_decay", "exponential_decay",
    "cosine_decay", "warmup",
    "logitcrossentropy", "onehot", "onecold", "accuracy", "throttle", "save", "load", "shard",
    # shapes and debugging
    "infer", "shapes", "ShapesReport", "summary", "Summary",
    # ONNX
    "onnx",
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
        if name in backends.REGISTRY.load():
            return shorthand(name)
    raise AttributeError(f"module 'flux' has no attribute {name!r}")
