"""`flux.onnx.load`: an ONNX file as a flux model (`OnnxModel`) whose initializers are Params.

The file is read and checked by `flux.onnx.files` (nothing in it is used before every check
has passed), every node's import function is found in the operator table (an operator flux
cannot import is an error here, at load, naming it, the node and its inputs' shapes), and the
initializers become the model's Params (floating ones) or constants (integer and bool ones,
known when the model is traced). Calling the model interprets the graph
(`flux.onnx.interpret`), so it is traced into flux's primitives like any model and runs on
every backend, trains, prints with `flux.shapes`/`flux.summary` and exports again.
"""
from __future__ import annotations

import numpy as np

from flux.errors import FluxTypeError, FluxValueError, ShapeError
from flux.ir.source import user_errors
from flux.model.net import net
from flux.ir.trace import current_trace
from flux.model.param import Buffer, Param
from flux.onnx.files import read, subgraphs, tensor_dtype
from flux.onnx.interpret import Program
from flux.onnx.proto import require_onnx
from flux.transforms.carry import carried_state

__all__ = ["load", "OnnxModel"]


@user_errors
def load(source, *, constants=None) -> "OnnxModel":
    """The ONNX model at `source` (a path; also an ``onnx.ModelProto`` or its bytes) as a
    flux model whose floating initializers are Params named by their ONNX names.

    `constants` maps graph-input names to arrays that fix those inputs when the model is
    loaded (they are no longer inputs): flux's shapes are static, so an input an operator
    needs to know while tracing (the shape of a ``Reshape``, the axes of a reduction) is given
    here. Any problem with the file is a `FluxValueError` naming it, raised before anything
    in it runs; see `OnnxModel` for what the model is.
    """
    return OnnxModel(read(source), constants)


STATISTICS = {"BatchNormalization": (3, 4)}
"""Inputs that are running statistics (not trained): the initializers feeding them, and
nothing else, become `Buffer`s."""


def running_statistics(graph) -> set:
    """The names of `graph`'s initializers used only as running statistics (`STATISTICS`)."""
    statistics, other = set(), set()
    for node in graph.node:
        positions = STATISTICS.get(node.op_type, ())
        for i, name in enumerate(node.input):
            (statistics if i in positions else other).add(name)
    return statistics - other - {o.name for o in graph.output}


@net
class OnnxModel:
    """An imported ONNX graph as a flux model; made by `flux.onnx.load`.

    ``m(x, ...)`` takes the graph's inputs, positionally, in the file's order (`input_names`;
    the number and the declared ranks and static sizes are checked; integers given for a
    floating input are converted to its dtype), then, optionally, values for the inputs that
    have an initializer as their default (`default_inputs`, in the file's order; a flux
    export's carried hidden state is one), and returns its output, or a tuple of them
    (`output_names`). Each floating initializer is a `flux.Param`, an attribute of the model
    named as in the file (one attribute even when the name has dots:
    ``getattr(m, "fc1.weight")``; `flux.params` lists them by those names, and
    `flux.onnx.export` writes them under them again), except
    that a name starting with ``_``, or one the class itself uses (``input_names``, ...),
    becomes ``initializer_<name without leading _>`` (with ``_2``, ``_3``... until it is
    unique); `initializer_paths` maps every initializer name to its Param's path. The running
    statistics of ``BatchNormalization`` nodes (their mean and variance inputs) are `Buffer`s
    instead: not trained, saved with the Params. Integer and
    bool initializers are constants, known when the model is traced (shapes, axes, indices).
    Initializers of subgraphs (``If``/``Loop``/``Scan`` bodies) are constants too.
    """

    def __init__(self, source, constants=None):
        graph = source.model.graph
        object.__setattr__(self, "_file", source.name)
        object.__setattr__(self, "_label", source.label)
        object.__setattr__(self, "_graph", graph)
        object.__setattr__(self, "_nodes", sum(len(g.node) for g in subgraphs(graph)))
        initializers = {t.name: t for t in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        declared = [_value_type(i, source.name, "input") for i in inputs]
        defaults = [_value_type(i, source.name, "input") for i in graph.input
                    if i.name in initializers]
        outputs = [_value_type(o, source.name, "output") for o in graph.output]
        fixed = _constants(constants, declared, source.name)
        object.__setattr__(self, "_program", Program(graph, source.opset, source.name,
                                                     source.label, lambda: _shapes(source.model)))
        object.__setattr__(self, "_inputs", [d for d in declared if d[0] not in fixed])
        object.__setattr__(self, "_outputs", outputs)
        object.__setattr__(self, "_defaults", defaults)
        known = dict(fixed)
        paths = {}
        statistics = running_statistics(graph)
        onnx = require_onnx()
        for name, tensor in initializers.items():
            array = onnx.numpy_helper.to_array(tensor)
            if array.dtype.kind == "f":
                path = self._free_name(name, set(paths.values()), set(initializers))
                paths[name] = path
                kind = Buffer if name in statistics else Param
                setattr(self, path, kind(array, dtype=array.dtype))
            else:
                known[name] = np.asarray(array)
        del graph.initializer[:]                 # (their values live in the Params now)
        object.__setattr__(self, "_known", known)
        object.__setattr__(self, "_paths", paths)
        object.__setattr__(self, "_buffers", [n for n in paths if n in statistics])

    def _free_name(self, name: str, used: set, names: set) -> str:
        """The attribute a Param of initializer `name` is kept under (see the class
        docstring); `used` holds the attributes taken, `names` every initializer's name."""
        if name and not name.startswith("_") and not hasattr(type(self), name) \
                and name not in used:
            return name
        base = "initializer_" + name.lstrip("_")
        path, n = base, 1
        while path in used or path in names or hasattr(type(self), path):
            n += 1
            path = f"{base}_{n}"
        return path

    def __call__(self, *inputs):
        """The graph's outputs for `inputs` (one per graph input, in `input_names` order)."""
        if not len(self._inputs) <= len(inputs) <= len(self._inputs) + len(self._defaults):
            expected = ", ".join(_signature(d) for d in self._inputs) or "no inputs"
            more = "" if not self._defaults else (
                f", then optionally {', '.join(_signature(d) for d in self._defaults)}")
            raise FluxTypeError(f"{self._short()} takes {len(self._inputs)} input(s) "
                                f"({expected}{more}), given {len(inputs)}")
        env = dict(self._known)
        env.update((name, getattr(self, path)) for name, path in self._paths.items())
        env.update(self._statistics())
        for value, spec in zip(inputs, self._inputs + self._defaults):
            env[spec[0]] = _checked_input(value, spec, self._short())
        outs = self._program.run(self._graph, env)
        return outs[0] if len(outs) == 1 else tuple(outs)

    # -- the running statistics: Buffers, read at every call (the carry protocol) --------------

    def _statistics(self) -> dict:
        """``name -> value`` of each Buffer: graph inputs while a compiled model is traced
        (so that a new value, from `flux.load` say, is seen without tracing again), else its
        array."""
        if not self._buffers:
            return {}
        trace = current_trace()
        values = carried_state(trace).read(self) if trace is not None else None
        if values is None:
            values = [getattr(self, self._paths[n]).value for n in self._buffers]
        return dict(zip(self._buffers, values))

    def carried(self, compiled) -> list:
        return [getattr(self, self._paths[n]).value for n in self._buffers]

    def carry_signature(self, compiled):
        return tuple(a.shape for a in self.carried(compiled))

    def keep(self, compiled, arrays) -> None:
        """(Never called: an imported graph does not write its statistics.)"""

    # -- what it is -----------------------------------------------------------------------------

    @property
    def input_names(self) -> list:
        """The names of the graph's inputs, in the order the model takes them."""
        return [d[0] for d in self._inputs]

    @property
    def default_inputs(self) -> list:
        """The names of the inputs that default to an initializer, in the order the model
        takes them after `input_names`."""
        return [d[0] for d in self._defaults]

    @property
    def output_names(self) -> list:
        """The names of the graph's outputs, in the order the model returns them."""
        return [d[0] for d in self._outputs]

    @property
    def initializer_paths(self) -> dict:
        """``ONNX initializer name -> attribute path`` of each Param made from one."""
        return dict(self._paths)

    @property
    def file(self) -> str:
        """Where the model was loaded from (the path as given)."""
        return self._file

    @property
    def input_shape(self):
        """The shape of one input point (the declared shape without its first, batch, axis)
        when the model has one input whose other sizes are all declared; else None."""
        if len(self._inputs) != 1:
            return None
        dims = self._inputs[0][1]
        if dims is None or not dims or not all(isinstance(d, int) for d in dims[1:]):
            return None
        return tuple(dims[1:])

    def _short(self) -> str:
        return f"OnnxModel({self._label})"

    def __repr__(self) -> str:
        ins = ", ".join(_signature(d) for d in self._inputs)
        outs = ", ".join(_signature(d) for d in self._outputs)
        return (f"OnnxModel({self._label}: {self._nodes} nodes, "
                f"{len(self._paths)} Params; ({ins}) -> ({outs}))")


# -- inputs and outputs --------------------------------------------------------------------------


def _value_type(info, file: str, what: str) -> tuple:
    """``(name, dims or None, dtype)`` of a graph input or output; a clear error for types
    flux does not compute with (sequences, maps, strings, bfloat16 ...)."""
    kind = info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise FluxValueError(f"{file}: graph {what} {info.name!r} is a {kind or 'value'} of "
                             f"no declared tensor type; flux imports tensor inputs and outputs")
    tensor = info.type.tensor_type
    dtype = tensor_dtype(tensor.elem_type) if tensor.elem_type else None
    if dtype is None:
        onnx = require_onnx()
        try:
            type_name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        except ValueError:
            type_name = f"type {tensor.elem_type}"
        raise FluxValueError(f"{file}: graph {what} {info.name!r} is a {type_name} tensor; flux "
                             f"computes with bool, integer and float16/32/64 tensors")
    dims = None
    if tensor.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in tensor.shape.dim)
    return info.name, dims, dtype


def _signature(spec) -> str:
    name, dims, dtype = spec
    if dims is None:
        return f"{name} {dtype}"
    shown = "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"
    return f"{name} {shown} {dtype}"


def _fits(shape: tuple, dims) -> bool:
    return dims is None or (len(shape) == len(dims) and all(
        not isinstance(d, int) or d == s for d, s in zip(dims, shape)))


def _checked_input(value, spec, model: str):
    """An input in its declared dtype (integers for floats converted; floats for integers
    refused), its rank and static sizes checked."""
    name, dims, dtype = spec
    shape = tuple(getattr(value, "shape", np.shape(value)))
    if not _fits(shape, dims):
        raise ShapeError(f"{model}: input {name!r} is declared as {_signature(spec)}, given a "
                         f"value of shape {shape}")
    given = np.dtype(value.dtype)
    if given == dtype:
        return value
    if given.kind == "f" and dtype.kind != "f":
        raise FluxTypeError(f"{model}: input {name!r} is declared as {dtype} values, given "
                            f"{given} ones")
    return value.astype(dtype)


def _constants(constants, declared: list, file: str) -> dict:
    """The checked arrays of ``load(..., constants=)``, by input name."""
    if constants is None:
        return {}
    if not hasattr(constants, "items"):
        raise FluxTypeError(f"flux.onnx.load: constants= takes a mapping of input names to "
                            f"arrays, found {type(constants).__name__}")
    specs = {d[0]: d for d in declared}
    fixed = {}
    for name, value in constants.items():
        if name not in specs:
            raise FluxValueError(f"flux.onnx.load: constants= names {name!r}, which is not an "
                                 f"input of {file}; its inputs are "
                                 f"{', '.join(specs) or 'none'}")
        array = np.asarray(value)
        spec = specs[name]
        if not _fits(array.shape, spec[1]):
            raise ShapeError(f"flux.onnx.load: constants[{name!r}] has shape {array.shape}; "
                             f"{file} declares {_signature(spec)}")
        if array.dtype.kind not in "biuf":
            raise FluxTypeError(f"flux.onnx.load: constants[{name!r}] is not a numeric array "
                                f"({array.dtype})")
        fixed[name] = array.astype(spec[2], copy=False)
    return fixed


def _shapes(model) -> dict:
    """``name -> (dims, dtype name)`` of the model's values, from ONNX's shape inference
    (for error messages; what it cannot infer is left out)."""
    onnx = require_onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:                      # (inference refuses some models: keep the declared)
        inferred = model
    table = {}
    for graph in subgraphs(inferred.graph):
        for tensor in graph.initializer:
            table[tensor.name] = (tuple(tensor.dims), _dtype_name(tensor.data_type))
        for info in list(graph.input) + list(graph.value_info) + list(graph.output):
            if info.type.HasField("tensor_type"):
                tensor = info.type.tensor_type
                dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in tensor.shape.dim) if tensor.HasField("shape") else ("?",)
                table.setdefault(info.name, (dims, _dtype_name(tensor.elem_type)))
    return table


def _dtype_name(elem_type: int) -> str:
    dtype = tensor_dtype(elem_type)
    if dtype is not None:
        return str(dtype)
    onnx = require_onnx()
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return "?"

