"""The top level of an exported model: its graph inputs, initializers, constants and outputs
around the nodes of the model's flux graph, and the `ModelProto`.

- Params are initializers named by their attribute paths (`Graph.param_names`, used as they
  are: a model loaded from ONNX keeps its initializer names as its Param paths).
- The model's inputs are graph inputs (names chosen by the caller), the batch axis ``batch``
  where the batch is dynamic; its outputs are ``output``, ``output1``, ...
- Constants (arrays met while tracing, BatchNorm's running statistics named by their paths,
  literals) are Constant nodes, so that the file's initializers are exactly the model's
  Params. A constant of batch shape that repeats one row is the row expanded to the batch.
- What the carry boundary brings in and out (`flux.onnx.export_state`): carried hidden state
  as inputs with defaults and ``.final`` outputs, Buffers as constants, fresh random numbers
  drawn by the runtime; other carried outputs (new running statistics) are dropped.
"""
from __future__ import annotations

import importlib.metadata

import numpy as np

from flux.ir.passes import dce
from flux.model.walk import buffers, walk
from flux.onnx.export_batch import BatchDim
from flux.onnx.export_graph import Export, GraphWriter, contiguous, tensor_type
from flux.onnx.export_state import FINAL, is_state_owner
from flux.onnx.proto import PRODUCER
from flux.transforms.carry import Draw

__all__ = ["model_proto", "output_names"]


def output_names(n: int) -> list[str]:
    """``output``, ``output1``, ...: the names of a model's `n` outputs."""
    return ["output" if k == 0 else f"output{k}" for k in range(n)]


def model_proto(onnx, model, graph, *, n_inputs: int, input_names: list, batch, opset: int,
                carry, what: str):
    """The ModelProto of `model`'s `graph` (traced at the export's shapes; `batch` its
    `BatchShapes` for a dynamic batch, or None), whose first `n_inputs` inputs are the
    model's, named `input_names`; `carry` is the export's `CarrySource`."""
    export = Export(onnx, opset, batch, what)
    writer = GraphWriter(export)
    initializers = []
    for var, p, name in zip(graph.param_vars, graph.param_objs, graph.param_names):
        writer.env[id(var)] = name = export.fresh(name)
        initializers.append(onnx.numpy_helper.from_array(contiguous(p.peek()), name))
    inputs = []
    for var, name in zip(graph.inputs[:n_inputs], input_names):
        writer.env[id(var)] = name = export.fresh(name)
        dims = export.dims(var)
        inputs.append(export.value_info(name, var.aval, dims))
        if export.batch_source is None and dims and dims[0] == BatchDim(1):
            export.batch_source = name
    state_inputs = _carried_inputs(export, writer, model, graph, n_inputs, carry, initializers)
    outputs, names = _outputs(export, writer, graph, state_inputs)
    writer.constants(graph, {id(b.value): path for path, b in buffers(model).items()})
    writer.write(graph)
    writer.outputs(outputs, names)
    infos = [export.value_info(name, atom.aval, export.dims(atom))
             for name, atom in zip(names, outputs)]
    helper = onnx.helper
    onnx_graph = helper.make_graph(
        export.prelude + writer.nodes, _name(model), inputs + [i for i, _ in state_inputs],
        infos, initializer=initializers, doc_string=f"{model!r:.2000}")
    ir = max(7, helper.find_min_ir_version_for([helper.make_opsetid("", opset)]))
    return helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", opset)],
                             producer_name=PRODUCER, producer_version=_version(),
                             ir_version=ir, doc_string=f"{_name(model)}, exported by flux")


def _version() -> str:
    """flux-core's version (the producer version written into files)."""
    try:
        return importlib.metadata.version("flux-core")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _name(model) -> str:
    return getattr(model, "_name", None) or type(model).__name__


def _carried_inputs(export, writer, model, graph, n_inputs, carry, initializers) -> list:
    """Names for the graph inputs after the model's own (the carry boundary); returns
    ``[(ValueInfo, owner's input name)]`` for the carried hidden state, which stays input."""
    state, counts = [], {}
    for var, owner in zip(graph.inputs[n_inputs:], graph.carry_in):
        k = counts[id(owner)] = counts.get(id(owner), -1) + 1
        dims = export.dims(var)
        if is_state_owner(owner):
            name = export.fresh(carry.names(owner)[k])
            dynamic = bool(dims) and isinstance(dims[0], BatchDim)
            shape = (1,) + var.aval.shape[1:] if dynamic else var.aval.shape
            initializers.append(export.onnx.numpy_helper.from_array(
                carry.default(owner, k, shape, var.aval.dtype), name))
            info = export.value_info(name, var.aval, (None,) + tuple(dims[1:]) if dynamic
                                     else dims)
            state.append((info, name))
            writer.env[id(var)] = (writer.node(name, "Expand", name,
                                               export.shape(dims, writer.maker(name)))
                                   if dynamic else name)
        elif isinstance(owner, Draw):        # fresh uniform [0, 1) numbers at every run
            label = export.fresh("random")
            shape = export.shape(dims, writer.maker(label))
            zero = export.onnx.numpy_helper.from_array(np.zeros(1, var.aval.dtype))
            like = writer.node(label, "ConstantOfShape", shape, value=zero)
            writer.env[id(var)] = writer.node(label, "RandomUniformLike", like, low=0.0,
                                              high=1.0, dtype=tensor_type(export.onnx,
                                                                          var.aval.dtype))
        else:                                # a layer's Buffers: their values now
            value = np.asarray(owner.carried(carry)[k])
            names = {id(b.value): path for path, b in buffers(owner).items()}
            base = _path(model, owner)
            name = names.get(id(owner.carried(carry)[k]), f"carried{k}")
            writer.env[id(var)] = export.constant(value, f"{base}.{name}" if base else name)
    return state


def _path(model, obj) -> str:
    return next((path for path, o in walk(model) if o is obj), "")


def _outputs(export, writer, graph, state_inputs) -> tuple[list, list]:
    """The model's outputs and the carried states' final values, and their names (given in
    advance to the equations that compute them); other carried outputs are dropped and the
    equations only they needed removed."""
    n_own = len(graph.outputs) - len(graph.carry_out)
    atoms, names = list(graph.outputs[:n_own]), output_names(n_own)
    state_names = [name for _, name in state_inputs]     # (the same owners, in order)
    kept_owners = []
    for owner, atom in zip(graph.carry_out, graph.outputs[n_own:]):
        if is_state_owner(owner):
            j = len(kept_owners)
            names.append((state_names[j] if j < len(state_names) else f"state{j}") + FINAL)
            atoms.append(atom)
            kept_owners.append(owner)
    graph.outputs, graph.carry_out = atoms, kept_owners
    dce(graph)
    produced = {id(v) for e in graph.eqns for v in e.outputs}
    final, seen = [], set()
    for atom, name in zip(atoms, names):
        name = export.fresh(name)
        if id(atom) in produced and id(atom) not in seen:
            seen.add(id(atom))
            writer.env[id(atom)] = name
        final.append(name)
    return atoms, final
