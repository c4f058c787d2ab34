"""`flux.onnx.export`: any flux model as an ONNX file.

The model is traced in inference mode (Dropout is the identity, BatchNorm uses its running
statistics) on the example inputs, with unrolled models as loops; with a dynamic batch it is
traced again at two batch sizes to find the batch axis in every value
(`flux.onnx.export_batch`). Every primitive is lowered to ONNX operators
(`flux.onnx.lowering`), the graph is assembled (`flux.onnx.export_model`), checked with
``onnx.checker`` (full check) and shape inference, and written atomically.
"""
from __future__ import annotations

import inspect
import numbers
import os
import secrets
import stat

from flux.backends.tracing import abstract_inputs, trace
from flux.errors import FluxError, FluxTypeError, FluxValueError
from flux.ir.pytree import LEAF
from flux.ir.source import user_errors
from flux.model.net import FunctionModel
from flux.model.walk import input_shape
from flux.onnx.export_batch import batch_shapes
from flux.onnx.export_model import model_proto
from flux.onnx.export_state import CarrySource
from flux.onnx.proto import DEFAULT_OPSET, MAX_EXPORT_OPSET, require_onnx

__all__ = ["export", "EXPORT_OPSETS", "EXTERNAL_DATA_BYTES"]

WHAT = "onnx.export"

EXPORT_OPSETS = range(13, MAX_EXPORT_OPSET + 1)
"""The default-domain opsets `export` writes (13: reductions, Squeeze and Unsqueeze take
their axes as inputs, which every later opset keeps)."""

EXTERNAL_DATA_BYTES = 3 << 29
"""Models larger than this (1.5 GiB; protobuf files stop at 2 GiB) keep their weights in a
file beside the model, ``<name>.data``, as ONNX's external data."""


@user_errors
def export(model, path, *examples, dynamic_batch: bool = True, opset: int | None = None):
    """Write `model` as an ONNX file at `path` (a str or os.PathLike) and return its
    `onnx.ModelProto`.

    `examples` are example inputs (arrays, or shapes as tuples, as `flux.infer` takes them;
    none for a model that knows its input shape, such as a Chain starting with Affine).
    With `dynamic_batch` the first axis of every input (but a single point's, for a model
    that knows its point shape) is a symbolic ``batch`` axis, and a model whose graph depends
    on the batch size otherwise is refused with an error naming the line; with
    ``dynamic_batch=False`` the file is for the examples' shapes. `opset` is the ONNX opset
    written (default 18; 13 to 23).

    Params are initializers named by their attribute paths; inputs are named after the
    model's forward arguments (``input``, ``input1``... where it has none to give), outputs
    ``output``, ``output1``...; every node's name and doc_string carry the user's file and
    line. A stateful unrolled model also takes its hidden state as inputs that default to its
    initial state, and returns the final state (``<path>.final``), for the next call.

    >>> import tempfile, flux
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     proto = export(flux.Affine(5, 3), f"{folder}/affine.onnx", (1, 5))
    >>> [i.name for i in proto.graph.initializer], proto.graph.input[0].name
    (['W', 'b'], 'x')
    >>> [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    ['batch', 5]
    """
    onnx = require_onnx()
    opset = _opset(opset)
    target = _target(path)
    if not examples and input_shape(model) is not None:
        examples = ((1,) + input_shape(model),)
    model, avals, tree = abstract_inputs(model, examples, WHAT)
    carry = CarrySource(model)

    def traced(shapes):
        if not carry:
            return trace(model, shapes, tree, training=False, loops=True)
        carry.prime(trace(model, shapes, tree, training=False, loops=True))
        return trace(model, shapes, tree, carry_source=carry, training=False, loops=True)

    graph, batch = traced(avals), None      # (the examples' graph: their errors come first)
    batched = _batched(model, avals) if dynamic_batch else []
    if any(batched):
        batch = batch_shapes(traced, avals, batched, f"flux.{WHAT}", graph)
        graph = batch.graph
    names = _input_names(model, tree, len(avals), set(graph.param_names))
    proto = model_proto(onnx, model, graph, n_inputs=len(avals), input_names=names,
                        batch=batch, opset=opset, carry=carry, what=f"flux.{WHAT}")
    return _write(onnx, proto, target, model)


def _opset(opset) -> int:
    if opset is None:
        return DEFAULT_OPSET
    if not isinstance(opset, numbers.Integral) or isinstance(opset, bool):
        raise FluxTypeError(f"flux.{WHAT}: opset is an int, found {type(opset).__name__} "
                            f"{opset!r:.40}")
    if int(opset) not in EXPORT_OPSETS:
        raise FluxValueError(f"flux.{WHAT}: opset {opset} is not one flux writes; pass one of "
                             f"{EXPORT_OPSETS.start} to {EXPORT_OPSETS.stop - 1} (default "
                             f"{DEFAULT_OPSET})")
    return int(opset)


def _target(path) -> str:
    """The absolute path to write, after checking that its folder exists."""
    if not isinstance(path, (str, os.PathLike)):
        raise FluxTypeError(f"flux.{WHAT}: path is a str or os.PathLike (where to write the "
                            f"file), found {type(path).__name__} {path!r:.60}")
    target = os.path.abspath(os.fsdecode(os.fspath(path)))
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise FluxValueError(f"flux.{WHAT}: cannot write {os.fspath(path)!r}: its folder "
                             f"{folder!r} does not exist")
    if os.path.isdir(target):
        raise FluxValueError(f"flux.{WHAT}: cannot write {os.fspath(path)!r}: it is a folder; "
                             f"give the path of the file to write")
    return target


def _batched(model, avals) -> list[bool]:
    """Which inputs have a batch axis (axis 0): every input of rank ≥ 1, except a single
    point of a model that knows its point shape."""
    batched = [a.ndim >= 1 for a in avals]
    point = input_shape(model)
    if point is not None and avals and avals[0].ndim <= len(point):
        batched[0] = False
    return batched


def _input_names(model, tree, n: int, taken: set) -> list[str]:
    """The model's `input_names` (a model loaded from ONNX keeps its file's), else its forward
    function's argument names where each argument is one array, when the names are free;
    else ``input``, ``input1``, ..."""
    default = ["input" if k == 0 else f"input{k}" for k in range(n)]
    given = getattr(model, "input_names", None)
    if isinstance(given, (list, tuple)) and len(given) == n and all(
            isinstance(name, str) and name for name in given) and len(set(given)) == n \
            and not set(given) & taken:
        return list(given)
    forward = model.fn if isinstance(model, FunctionModel) else getattr(
        type(model), "__flux_forward__", None)
    if forward is None or len(tree.children) != n or any(c.kind is not LEAF
                                                         for c in tree.children):
        return default
    try:
        parameters = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return default
    if not isinstance(model, FunctionModel):
        parameters = parameters[1:]
    if len(parameters) < n or any(p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                                  for p in parameters[:n]):
        return default
    names = [p.name for p in parameters[:n]]
    if len(set(names)) != n or set(names) & taken:
        return default
    return names


def _write(onnx, proto, target: str, model):
    """Check `proto` (ONNX's full check and strict shape inference) and write it at `target`
    through a temporary file in the same folder, so that a failed write leaves the old file
    (a new one gets the old one's mode); returns the model written (with the inferred
    shapes)."""
    large = proto.ByteSize() > EXTERNAL_DATA_BYTES
    temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.flux-"
                                                      f"{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        if not large:
            proto = _checked(onnx, proto, model)
            with open(temporary, "wb") as f:
                f.write(proto.SerializeToString())
                f.flush()
                os.fsync(f.fileno())
        else:
            onnx.save_model(proto, temporary, save_as_external_data=True,
                            all_tensors_to_one_file=True,
                            location=os.path.basename(target) + ".data", size_threshold=1024)
            _checked(onnx, temporary, model)
        if os.path.exists(target):                 # the mode of the file it replaces
            os.chmod(temporary, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(temporary, target)
    except OSError as error:
        raise FluxValueError(f"flux.{WHAT}: cannot write {target!r}: "
                             f"{error.strerror or error}") from error
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return proto


def _checked(onnx, proto, model):
    """`proto` (a ModelProto, or the path of a file) after ONNX's full check, with the shapes
    strict shape inference gives every value (for a ModelProto)."""
    try:
        onnx.checker.check_model(proto, full_check=True)
        if isinstance(proto, str):
            return proto
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise FluxError(f"flux.{WHAT}: the ONNX model made for {model!r:.80} does not pass "
                        f"onnx.checker, which is a bug in flux's exporter; please report it "
                        f"with the model. The checker says: {error}") from error
