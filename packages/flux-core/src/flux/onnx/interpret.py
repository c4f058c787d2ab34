"""Running an ONNX graph node by node on flux values: how an imported model's forward works.

`Program` is made once, at load: the import function of every node (subgraphs included) from
the operator table, so that an operator flux cannot import is an error before anything runs
(`unknown_operator`, naming it, the node and its inputs' shapes). An operator that is not in
the table but that ONNX defines as a function of other operators (``Attention``,
``RMSNormalization``, ``RotaryEmbedding`` ...: its schema has a function body, or one made
for the node's input types) is expanded into that body when it runs, and the body's nodes
are run like any others. `Program.run(graph, env)` then runs one graph on an environment
of values by name (`env` maps ONNX value names to NumPy arrays, flux values or None), node
after node, in the file's (topological) order:

- a node whose inputs are all known (NumPy arrays: initializers that are not Params,
  ``Constant``s, ``Shape``s, and whatever is computed from them alone) is computed at once
  in NumPy, outside the trace (constant folding: ``Shape → Gather → Concat → Reshape``
  chains become a static shape); its results are known too;
- any other node is traced: its import function records flux primitives. A known input that
  is a broadcast (an array with stride-0 axes, as ``Expand`` and ``ConstantOfShape`` make
  them) enters such a node as a broadcast equation of its compact form, not as a constant
  of the full size, so graphs keep no batch-sized constants;
- while a node is traced, its equations take the node as their source (the ONNX file, with
  the node's position in the main graph as the line; the nodes of a subgraph or of an
  expanded function keep the line of the node that holds them), so flux's own errors and
  printouts, and a re-export's node names, point at the ONNX node.

An exception raised by an import function is re-raised as a `FluxError` (the same class
when it is one) naming the file, the node (op type, name) and its inputs, with the original
message.
"""
from __future__ import annotations

import contextlib
from collections import ChainMap

import numpy as np

from flux.errors import FluxError, FluxValueError, Frame, tracing
from flux.ir.body import NeedsUnrolling
from flux.ir.graph import Literal
from flux.ir.source import Source
from flux.ir.trace import Tracer, current_trace
from flux.ops.elementwise import lift
from flux.ops.numpy_api import broadcast_to
from flux.onnx.files import subgraphs
from flux.onnx.functions import (defaults, expandable, function_body, renamed,
                                 schema_of, static_body)
from flux.onnx.operators import Node, known, lookup
from flux.onnx.operators.layout import ELEMENTWISE, remembering, through_view
from flux.onnx.proto import GRAPH, GRAPHS, require_onnx

__all__ = ["Program", "describe", "settle"]

UNKNOWN = (
    "{file}: flux cannot import {where}: ONNX operator {op} (opset {opset}) is not in flux's "
    "table{why}. Its inputs: {inputs}.{others} docs/onnx-coverage.md lists the operators "
    "flux imports")


class Program:
    """The import functions of a model's nodes, found at load (see the module docstring).

    `file` names the model in errors, `label` in equations' sources; `shapes()` gives
    ``name -> (shape, dtype)`` for the values of the model as far as ONNX's shape inference
    knows them (only asked for when an error needs them)."""

    def __init__(self, graph, opset: int, file: str, label: str, shapes):
        self.opset = opset
        self.file = file
        self.source_file = label
        self.table: dict = {}
        unknown = []
        for g in subgraphs(graph):
            for index, proto in enumerate(g.node):
                if self.function_of(proto.op_type, opset) is None \
                        and not self._expands(proto.op_type, opset):
                    unknown.append((proto, index))
        if unknown:
            raise FluxValueError(unknown_operator(file, opset, unknown, shapes()))

    def _expands(self, op_type: str, opset: int, depth: int = 0) -> bool:
        """Whether `op_type` expands into a function flux can run: one whose body does not
        depend on the node (its operators are checked here, at load), or one made for the
        node's input types (checked when it runs)."""
        if not expandable(op_type, opset) or depth > 8:
            return False
        schema = schema_of(op_type, opset)
        if not schema.has_function:
            return True
        function = static_body(schema, opset)
        versions = {o.domain: o.version for o in function.opset_import}
        inner = versions.get("", versions.get("ai.onnx", opset))
        return all(self.function_of(n.op_type, inner) is not None or
                   self._expands(n.op_type, inner, depth + 1) for n in function.node)

    def function_of(self, op_type: str, opset: int):
        """The import function of `op_type` at `opset` (looked up once), or None."""
        key = (op_type, opset)
        if key not in self.table:
            self.table[key] = lookup(op_type, opset)
        return self.table[key]

    # -- running --------------------------------------------------------------------------------

    def run(self, graph, env) -> list:
        """The values of `graph`'s outputs, computed from `env` (name -> value)."""
        with remembering():       # (channels-first views of channels-last values: layout.py)
            self.run_nodes(graph.node, env, self.opset)
        return [env[o.name] for o in graph.output]

    def run_nodes(self, nodes, env, opset: int, prefix: str = "") -> None:
        """Run `nodes` in order, their outputs written into `env`; `prefix` goes before the
        names of the nodes of an expanded function."""
        for index, proto in enumerate(nodes):
            fn = self.function_of(proto.op_type, opset)
            node = Node(proto, opset, index,
                        run_graph=lambda body, values, scope=env: self.run_body(body, values,
                                                                                scope))
            node.name = prefix + node.name
            args = [settle(env[name]) if name else None for name in proto.input]
            if fn is None and not expandable(proto.op_type, opset):     # (in a function body)
                shapes = {n: (tuple(a.shape), a.dtype) for n, a in zip(proto.input, args)
                          if a is not None}
                raise FluxValueError(unknown_operator(self.file, opset, [(proto, index)],
                                                      shapes))
            if fn is None:
                result = self.expand(node, args, env, index)
            else:
                result = self.apply(node, fn, args, index)
            outs = result if isinstance(result, tuple) else (result,)
            for k, name in enumerate(proto.output):
                if not name:
                    continue
                if k >= len(outs):
                    raise FluxValueError(
                        f"{self.file}: ONNX {node.where()}: flux computes its first "
                        f"{len(outs)} output(s), and the model uses output {k} ({name!r})")
                env[name] = settle(outs[k])

    def run_body(self, body, values: list, scope) -> list:
        """A subgraph (``If`` branch, ``Loop``/``Scan`` body) run on `values` for its inputs,
        seeing the names of the graphs around it (`scope`); its initializers are constants."""
        if len(values) != len(body.input):
            raise FluxValueError(f"{self.file}: the subgraph {body.name!r} takes "
                                 f"{len(body.input)} inputs, given {len(values)}")
        local = {i.name: v for i, v in zip(body.input, values)}
        local.update((t.name, _array(t)) for t in body.initializer)
        return self.run(body, ChainMap(local, scope))

    def expand(self, node: Node, args: list, env, index: int) -> tuple:
        """Run the function ONNX defines `node`'s operator as (its body's values named
        ``<node>/<value>``); the node's outputs."""
        try:
            function = function_body(node, args)
        except Exception as error:
            raise self.node_error(node, args, error) from error
        versions = {o.domain: o.version for o in function.opset_import}
        opset = versions.get("", versions.get("ai.onnx", self.opset))
        prefix = node.name + "/"
        names = {formal: actual for formal, actual in zip(function.input, node.inputs)}
        names.update((formal, "") for formal in function.input[len(node.inputs):])
        names.update((formal, actual) for formal, actual in zip(function.output, node.outputs)
                     if actual)
        attributes = defaults(node)
        scope = set(function.input) | set(function.output) | {
            v for inner in function.node for v in inner.output}
        body = [renamed(inner, names, prefix, attributes, scope) for inner in function.node]
        trace = current_trace()
        with (self._source(trace, node, index) if trace is not None
              else contextlib.nullcontext()):
            self.run_nodes(body, env, opset, prefix)
        return tuple(env.get(names.get(o) or prefix + o) for o in function.output)

    def apply(self, node: Node, fn, args: list, index: int):
        """`fn(node, *args)`: at once in NumPy when every input is known (and the node has no
        subgraph, which may read traced values around it), else traced with the node as the
        equations' source; errors are re-raised naming the node."""
        has_body = any(a.type in (GRAPH, GRAPHS) for a in node.proto.attribute)
        folded = not has_body and all(a is None or known(a) for a in args)
        trace = current_trace()
        try:
            if folded or trace is None:
                with _untraced(), np.errstate(all="ignore"):     # (ONNX: inf and NaN, quietly)
                    return fn(node, *args)
            with self._source(trace, node, index):
                args = [_compact(a) for a in args]
                if node.op_type in ELEMENTWISE and len(args) == 1:
                    return through_view(fn, node, args[0])
                return fn(node, *args)
        except NeedsUnrolling:
            raise
        except Exception as error:
            if getattr(error, "_onnx_node", False):
                raise
            raise self.node_error(node, args, error) from error

    @contextlib.contextmanager
    def _source(self, trace, node: Node, index: int):
        """Equations recorded inside take the node as their source (file: the ONNX file,
        line: the node's position in its graph, counted from 1), unless an outer node's
        source is set already (this node is in its subgraph or its function)."""
        saved = trace.source_override
        if saved is not None:
            yield
            return
        frames = trace.source().frames
        if frames:                     # (innermost first: the imported model's own frame)
            first = frames[0]
            frames = (Frame(first.model, first.path, self.source_file, index + 1),) + frames[1:]
        trace.source_override = Source(self.source_file, index + 1, frames)
        try:
            yield
        finally:
            trace.source_override = saved

    def node_error(self, node: Node, args: list, error: Exception) -> FluxError:
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        if not isinstance(error, FluxError):
            message = f"{type(error).__name__}: {message}"
        prefix = f"ONNX {node.where()}: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        inputs = ", ".join(describe(name, a) for name, a in zip(node.inputs, args) if name)
        text = f"{self.file}: ONNX {node.where()}: {message} (inputs: {inputs or 'none'})"
        kind = type(error) if isinstance(error, FluxError) else FluxValueError
        try:
            wrapped = kind(text, getattr(error, "trace", None))
        except TypeError:
            wrapped = FluxValueError(text, getattr(error, "trace", None))
        wrapped._onnx_node = True
        return wrapped


# -- messages -----------------------------------------------------------------------------------


def unknown_operator(file: str, opset: int, unknown: list, shapes: dict) -> str:
    """The message for nodes whose operators flux does not import (the first named in full)."""
    proto, index = unknown[0]
    node = Node(proto, opset, index)
    why = "" if lookup(proto.op_type, 10 ** 6) is None else (
        f" for opset {opset} (flux imports it from a later opset)")
    inputs = ", ".join(_declared(name, shapes) for name in proto.input if name) or "none"
    others = sorted({p.op_type for p, _ in unknown[1:]} - {proto.op_type})
    more = f" The model also uses {', '.join(others)}, which flux does not import either." \
        if others else ""
    return UNKNOWN.format(file=file, where=node.where(), op=proto.op_type, opset=opset,
                          why=why, inputs=inputs, others=more)


def _declared(name: str, shapes: dict) -> str:
    if name not in shapes:
        return f"{name} (shape unknown)"
    shape, dtype = shapes[name]
    dims = "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
    return f"{name} {dims} {dtype}"


def describe(name: str, value) -> str:
    """``name (2, 3) float32`` (and the values of a small known array)."""
    if value is None:
        return f"{name} (left out)"
    shape, dtype = getattr(value, "shape", ()), getattr(value, "dtype", type(value).__name__)
    text = f"{name} {tuple(shape)} {dtype}"
    if known(value) and np.size(value) <= 8:
        text += f" = {np.asarray(value).tolist()}"
    return text


def settle(value):
    """A value as import functions get it: known values as NumPy arrays (Literals and NumPy
    scalars included), Params as their traced values, flux's traced values as they are."""
    if isinstance(value, np.ndarray) or value is None or isinstance(value, Tracer):
        return value
    if isinstance(value, Literal):
        return np.asarray(value.value, value.dtype)
    if getattr(value, "__flux_param__", False):
        return lift(value)
    if known(value):
        return np.asarray(value)
    return value


def _compact(value):
    """A known broadcast array of rank ≥ 2 (stride-0 axes of size > 1) as a broadcast
    equation of its compact form, for a traced node; anything else unchanged (vectors stay
    known: they may be shapes or axes the node needs)."""
    if not isinstance(value, np.ndarray) or value.ndim < 2 or 0 not in value.strides:
        return value
    index = tuple(slice(0, 1) if s == 0 and d > 1 else slice(None)
                  for s, d in zip(value.strides, value.shape))
    small = np.ascontiguousarray(value[index])
    if small.size == value.size:
        return value
    if small.size == 1:
        small = small.reshape(())
    return broadcast_to(small, value.shape)


@contextlib.contextmanager
def _untraced():
    """Run flux's functions on NumPy arrays directly, even inside a trace (no equations)."""
    saved = tracing.trace
    tracing.trace = None
    try:
        yield
    finally:
        tracing.trace = saved


def _array(tensor) -> np.ndarray:
    return require_onnx().numpy_helper.to_array(tensor)
