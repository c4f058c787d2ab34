"""Building ONNX graphs from flux graphs: value names, nodes named after their equations and
source lines, constants, shape vectors with a symbolic batch, and loop bodies as subgraphs.

One `Export` per call of `flux.onnx.export` holds what every graph of the model shares: the
names in use (ONNX names are unique across a model, subgraphs included), the top-level
Constant nodes (constants, literals, shape vectors: written once, read by name from loop
bodies too), and the batch size computed at run time where a shape needs it. A `GraphWriter`
writes the nodes of one flux graph (the model's, or a loop body's), one equation at a time,
through its primitive's lowering rule (`flux.onnx.lowering.LOWERINGS`); the rule gets an
`Emit`, which knows the equation and makes its nodes.

Node names read ``e12/MatMul in Affine (layers.0) at affine.py:41`` (equation 12 of the
graph, the ONNX operator, the innermost model and the file and line the equation was traced
at; ``e3/e5/...`` inside the body of equation 3), and each node's doc_string is the
equation's full source, the line and every enclosing model frame, which Netron shows.
"""
from __future__ import annotations

import os

import numpy as np

from flux.errors import FluxTypeError, FluxValueError
from flux.ir.graph import Graph, Literal
from flux.onnx.export_batch import BatchDim, BatchShapes, describe
from flux.onnx.lowering import LOWERINGS

__all__ = ["Export", "GraphWriter", "Emit", "tensor_type", "contiguous"]


class Export:
    """What all graphs of one exported model share (see the module docstring)."""

    def __init__(self, onnx, opset: int, batch: BatchShapes | None, what: str):
        self.onnx = onnx
        self.opset = opset
        self.batch = batch
        self.what = what
        self.used: set[str] = set()
        self.prelude: list = []          # top-level Constant nodes and the batch-size nodes
        self._constants: dict = {}       # (dtype, shape, bytes, name) -> name
        self._batch_size = None
        self.batch_source = None         # the name of a graph input whose axis 0 is the batch

    def fresh(self, base: str) -> str:
        """`base`, or `base` with a suffix, unused so far in the model; now in use."""
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}.{k}"
        self.used.add(name)
        return name

    def dims(self, atom) -> tuple:
        """`atom`'s shape with `BatchDim`s at its batch positions (plain sizes without a
        dynamic batch)."""
        if self.batch is None:
            return () if isinstance(atom, Literal) else atom.aval.shape
        return self.batch.dims(atom)

    def constant(self, array, name: str | None = None) -> str:
        """The name of a top-level Constant node holding `array` (one node per distinct
        array; `name` for a named one, such as a Buffer's path)."""
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes(), name)
        found = self._constants.get(key)
        if found is None:
            found = self._constants[key] = self.fresh(name or _constant_name(array))
            tensor = self.onnx.numpy_helper.from_array(contiguous(array), found)
            self.prelude.append(self.onnx.helper.make_node(
                "Constant", [], [found], name=f"{found}/Constant", value=tensor))
        return found

    def batch_size(self) -> str:
        """A 1-D int64 value holding the batch size, read from a graph input's shape at run
        time (made once, at the top of the graph)."""
        if self._batch_size is None:
            helper = self.onnx.helper
            if self.opset >= 15:
                self._batch_size = self.fresh("batch")
                self.prelude.append(helper.make_node("Shape", [self.batch_source],
                                                     [self._batch_size], start=0, end=1,
                                                     name="batch/Shape"))
            else:
                start, end = self.constant(np.array([0])), self.constant(np.array([1]))
                whole, self._batch_size = self.fresh("batch_shape"), self.fresh("batch")
                self.prelude.append(helper.make_node("Shape", [self.batch_source], [whole],
                                                     name="batch/Shape"))
                self.prelude.append(helper.make_node("Slice", [whole, start, end],
                                                     [self._batch_size], name="batch/Slice"))
        return self._batch_size

    def shape(self, dims, node) -> str:
        """A 1-D int64 value holding `dims`: a constant when all are sizes, else built at run
        time from the batch size, with ``node(op, *inputs, **attributes) -> name``."""
        if not any(isinstance(d, BatchDim) for d in dims):
            return self.constant(np.asarray([int(d) for d in dims], np.int64).reshape(-1))
        pieces, run = [], []
        for d in list(dims) + [None]:
            if (d is None or isinstance(d, BatchDim)) and run:
                pieces.append(self.constant(np.asarray(run, np.int64)))
                run = []
            if isinstance(d, BatchDim):
                size = self.batch_size()
                pieces.append(size if d.k == 1 else
                              node("Mul", size, self.constant(np.asarray([d.k], np.int64))))
            elif d is not None:
                run.append(int(d))
        return pieces[0] if len(pieces) == 1 else node("Concat", *pieces, axis=0)

    def value_info(self, name: str, aval, dims):
        """A typed ValueInfo: `aval`'s dtype, `dims` with ``batch`` for the batch size (and an
        unnamed size for a multiple of it, or for None)."""
        helper = self.onnx.helper
        shape = [("batch" if d.k == 1 else None) if isinstance(d, BatchDim)
                 else None if d is None else int(d) for d in dims]
        return helper.make_tensor_value_info(name, tensor_type(self.onnx, aval.dtype), shape)


def tensor_type(onnx, dtype) -> int:
    """The ONNX element type of a NumPy dtype; a FluxTypeError for one ONNX does not have."""
    try:
        return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    except (KeyError, TypeError, ValueError):
        raise FluxTypeError(f"flux.onnx.export: ONNX has no tensors of dtype "
                            f"{np.dtype(dtype)}") from None


def contiguous(array) -> np.ndarray:
    """`array` in C order (a copy only if it is not), 0-d arrays staying 0-d (unlike
    np.ascontiguousarray); on NumPy 1.23 too, whose np.array has no ``copy=None``."""
    return np.require(array, requirements="C")


def _constant_name(array: np.ndarray) -> str:
    """A readable name: the values of a small array (``c0.5``, ``c[0,2]``), else its dtype and
    shape (``cfloat32[3,4]``)."""
    if array.size <= 6 and array.dtype.kind in "biuf":
        values = ",".join(str(v) for v in array.reshape(-1))
        return f"c{values}" if array.ndim == 0 else f"c[{values}]"
    return f"c{array.dtype.name}{list(array.shape)}".replace(" ", "")


class GraphWriter:
    """Writes the nodes of one flux graph (see the module docstring); `prefix` names a loop
    body's nodes after its equation (``e3/``)."""

    def __init__(self, export: Export, prefix: str = ""):
        self.export = export
        self.prefix = prefix
        self.nodes: list = []
        self.env: dict[int, str] = {}

    def name(self, atom) -> str:
        """The ONNX name of a Var or Literal of the graph being written."""
        if isinstance(atom, Literal):
            return self.export.constant(np.asarray(atom.value, atom.dtype))
        return self.env[id(atom)]

    def write(self, graph: Graph) -> None:
        """Write every equation of `graph` (its free variables already have names)."""
        for index, eqn in enumerate(graph.eqns):
            rule = LOWERINGS.get(eqn.prim)
            if rule is None:
                raise FluxValueError(
                    f"{self.export.what}: the primitive {eqn.prim.name} has no ONNX form "
                    f"(the equation {describe(eqn)})", trace=eqn.source.frames)
            outs = []
            for k, var in enumerate(eqn.outputs):
                name = self.env.get(id(var))
                if name is None:
                    base = f"{self.prefix}e{index}" + (f".{k}" if len(eqn.outputs) > 1 else "")
                    name = self.env[id(var)] = self.export.fresh(base)
                outs.append(name)
            rule(Emit(self, eqn, index, outs), *(self.name(a) for a in eqn.inputs))

    def constants(self, graph: Graph, names: dict | None = None) -> None:
        """Names for `graph`'s constants: Constant nodes (named ``names[id(array)]`` where
        given: Buffers by their paths), or, for a constant that repeats one row over the
        batch, the row expanded to the batch."""
        export, names = self.export, names or {}
        for var, value in zip(graph.consts, graph.const_values):
            fill = export.batch.fill(var) if export.batch is not None else None
            if fill is None:
                self.env[id(var)] = export.constant(value, names.get(id(value)))
                continue
            label = f"{self.prefix}fill{len(self.nodes)}"
            shape = export.shape(export.dims(var), self.maker(label))
            self.env[id(var)] = self.node(label, "Expand", export.constant(fill), shape)

    def maker(self, label: str):
        """``node(op, *inputs, **attributes) -> name`` adding nodes labelled `label`."""
        return lambda op, *inputs, **attrs: self.node(label, op, *inputs, **attrs)

    def node(self, label: str, op: str, *inputs: str, **attrs) -> str:
        """Add an `op` node (named ``<label>/<op>``) outside any equation; returns its output."""
        out = self.export.fresh(f"{label}/{op}")
        self.nodes.append(self.export.onnx.helper.make_node(
            op, list(inputs), [out], name=self.export.fresh(f"{label}/{op}"), **attrs))
        return out

    def outputs(self, atoms, names) -> list[str]:
        """Make each of `atoms` a value named by `names` (an Identity where the value is not
        already the output of a node under that name); returns `names`."""
        for atom, name in zip(atoms, names):
            have = self.name(atom)
            if have != name:
                self.nodes.append(self.export.onnx.helper.make_node(
                    "Identity", [have], [name], name=self.export.fresh(f"{name}/Identity")))
        return list(names)

    def subgraph(self, graph: Graph, outer: list[str], prefix: str):
        """Loop body `graph` as an ONNX GraphProto: its first ``len(outer)`` inputs are read
        from the enclosing graphs by the names `outer`; the others are the subgraph's inputs
        (typed, the batch symbolic)."""
        export = self.export
        writer = GraphWriter(export, prefix)
        for var, name in zip(graph.inputs, outer):
            writer.env[id(var)] = name
        writer.constants(graph)
        inputs = []
        for i, var in enumerate(graph.inputs[len(outer):]):
            name = writer.env[id(var)] = export.fresh(f"{prefix}in{i}")
            inputs.append(export.value_info(name, var.aval, export.dims(var)))
        produced = {id(v) for e in graph.eqns for v in e.outputs}
        names, seen = [], set()
        for i, atom in enumerate(graph.outputs):     # a node of the body writes each output
            if not isinstance(atom, Literal) and id(atom) in produced and id(atom) not in seen:
                seen.add(id(atom))
                writer.env[id(atom)] = name = export.fresh(f"{prefix}out{i}")
            else:
                name = export.fresh(f"{prefix}out{i}")
            names.append(name)
        writer.write(graph)
        writer.outputs(graph.outputs, names)
        outputs = [export.value_info(name, atom.aval, export.dims(atom))
                   for name, atom in zip(names, graph.outputs)]
        return export.onnx.helper.make_graph(writer.nodes, f"{prefix}body", inputs, outputs)


class Emit:
    """What a lowering rule gets for one equation: the equation (`eqn`, `attrs`), the names
    its results must have (`outs`, `out`), and the means to make nodes and constants."""

    def __init__(self, writer: GraphWriter, eqn, index: int, outs: list[str]):
        self.writer = writer
        self.export = writer.export
        self.eqn = eqn
        self.attrs = eqn.attrs
        self.outs = outs
        self.opset = writer.export.opset
        self.site = f"{writer.prefix}e{index}"
        self._counts: dict[str, int] = {}
        source = eqn.source
        self._where = f"at {os.path.basename(source.file)}:{source.line}"
        if source.frames:
            frame = source.frames[0]
            inside = f"{frame.model} ({frame.path})" if frame.path else frame.model
            self._where = f"in {inside} {self._where}"
        self._doc = "\n".join([f"{eqn.prim.name} at {source.file}:{source.line}"]
                              + [f"  {frame}" for frame in source.frames])

    out = property(lambda self: self.outs[0])

    def node(self, op: str, *inputs: str, out: str | None = None, outputs=None, **attrs):
        """Add an `op` node reading `inputs` ("" for a left-out optional input); it writes
        `out` (default: a new name) or the list `outputs`; returns what it writes."""
        count = self._counts[op] = self._counts.get(op, 0) + 1
        label = f"{self.site}/{op}" + (f".{count}" if count > 1 else "")
        if outputs is None:
            outputs = [out if out is not None else self.export.fresh(label)]
        self.writer.nodes.append(self.export.onnx.helper.make_node(
            op, list(inputs), list(outputs), name=self.export.fresh(f"{label} {self._where}"),
            doc_string=self._doc, **attrs))
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def const(self, array) -> str:
        return self.export.constant(array)

    def ints(self, values) -> str:
        """A 1-D int64 constant (axes, starts, a static shape...)."""
        return self.export.constant(np.asarray(list(values), np.int64).reshape(-1))

    def dims(self, atom) -> tuple:
        """`atom`'s shape with `BatchDim`s at its batch positions."""
        return self.export.dims(atom)

    def attr_dims(self, name: str) -> tuple:
        """Shape attribute `name` with `BatchDim`s where it scales with the batch."""
        batch = self.export.batch
        return tuple(self.attrs[name]) if batch is None else batch.attr_dims(self.eqn, name)

    def shape(self, dims) -> str:
        """A 1-D int64 value holding `dims` (sizes and `BatchDim`s; see `Export.shape`)."""
        return self.export.shape(dims, self.node)

    def subgraph(self, graph: Graph, outer: list[str]):
        """A loop body of this equation as an ONNX GraphProto (see `GraphWriter.subgraph`)."""
        return self.writer.subgraph(graph, outer, f"{self.site}/")

    def tensor_type(self, dtype) -> int:
        return tensor_type(self.export.onnx, dtype)

    def error(self, why: str) -> FluxValueError:
        """A FluxValueError about this equation (to raise), naming it and the user's line."""
        return FluxValueError(f"{self.export.what}: {why} (the equation {describe(self.eqn)})",
                              trace=self.eqn.source.frames)

    def needs_opset(self, opset: int, what: str) -> None:
        """Refuse the equation when the export's opset is below `opset`."""
        if self.opset < opset:
            raise self.error(f"{what} needs ONNX opset {opset} or later; the export is for "
                             f"opset {self.opset} (pass opset={opset} or later)")

    def static(self, atom, what: str) -> tuple:
        """`atom`'s shape, refusing the equation when it has a batch position."""
        dims = self.dims(atom)
        if any(isinstance(d, BatchDim) for d in dims):
            raise self.error(f"{what} has no ONNX form for every batch size; pass "
                             f"dynamic_batch=False to export it for the example's batch size")
        return tuple(int(d) for d in dims)
