"""Shape inference and the seed's ``@shapes`` printout: `infer` and `shapes`.

Both trace the model on abstract inputs (shapes and dtypes, no data), so no array work is
done. `shapes` also records the model calls and named functions (`CallEvent`s) and keeps
tracing after a shape error with guessed shapes, so it can show the whole model: one line per
value, in the outermost model's terms, with sub-models shown as calls and the sub-model that
fails inlined, so that its failing line is visible.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flux.backends.tracing import abstract_inputs
from flux.errors import FluxError, ShapeError
from flux.ir.graph import Literal, Var
from flux.ir.primitives import index_text
from flux.ir.pytree import flatten, unflatten
from flux.ir.recording import CallLog
from flux.ir.source import user_errors
from flux.ir.trace import Trace, Tracer
from flux.model.net import FunctionModel
from flux.model.walk import model_paths

__all__ = ["infer", "shapes", "ShapesReport", "Statement"]


def _trace(model, avals, tree, *, tolerant=False):
    trace = Trace(model_paths(model))
    trace.log = CallLog() if tolerant else None
    with trace:
        inputs = [trace.new_input(a) for a in avals]
        error = None
        try:
            out = model(*unflatten(tree, inputs))
        except FluxError as caught:
            if not tolerant:
                raise
            out, error = None, caught
    return trace, inputs, out, error


def live_vars(trace, out) -> set:
    """Ids of the Vars that the model's outputs depend on (all of them when the trace
    stopped before producing outputs)."""
    leaves = [v for v in flatten(out)[0] if isinstance(v, Tracer)] if out is not None else None
    if leaves is None:
        return {id(v) for eqn in trace.eqns for v in eqn.outputs}
    live = {id(v.variable) for v in leaves}
    for eqn in reversed(trace.eqns):
        if any(id(v) in live for v in eqn.outputs):
            live.update(id(a) for a in eqn.inputs if isinstance(a, Var))
    return live


def _shape_of(value):
    if isinstance(value, Tracer):
        return value.shape
    if isinstance(value, Literal):
        return ()
    return tuple(np.shape(value))


@user_errors
def infer(model, *shapes):
    """The output shape of ``model`` for inputs of the given shapes, by abstract evaluation
    (no array is computed): ``infer(m, x.shape) == m(x).shape``.

    Inputs are shapes (tuples) or arrays (their shape and dtype are used); a model with several
    outputs gives a tuple of shapes in the structure of its output. A shape mismatch raises a
    `ShapeError` naming both shapes, with model frames. A stateful unrolled model is inferred
    from its initial state: what `infer` says holds for its calls after `flux.reset`.

    >>> from flux import Affine
    >>> infer(Affine(10, 20), (1, 10))
    (1, 20)
    """
    model, avals, tree = abstract_inputs(model, shapes, "infer")
    _, _, out, _ = _trace(model, avals, tree)
    leaves, out_tree = flatten(out)
    result = [_shape_of(v) for v in leaves]
    return result[0] if out_tree.kind is None else unflatten(out_tree, result)


# -- the printout ---------------------------------------------------------------------------------

ANIMALS = (
    "gull lobster raven opossum wren otter heron lynx marten badger bison crane dingo egret "
    "ferret gecko hare ibis jackal koala lemur magpie newt ocelot panda quail robin stoat tapir "
    "urchin vole walrus yak zebra beaver coyote dormouse eland falcon gopher hyena iguana "
    "jay kestrel llama mole narwhal oriole puffin rook shrew tern viper weasel").split()


@dataclass
class Statement:
    """One line of the report: ``name = expr::shape`` at `file`:`line` (the model's line)."""

    name: str
    expr: str
    shape: tuple | None
    file: str
    line: int
    fails: str | None = None

    def __str__(self) -> str:
        text = f"{self.name} = {self.expr}"
        if self.shape is not None:
            text += f"::{_fmt(self.shape)}"
        return text


@dataclass
class ShapesReport:
    """What `flux.shapes` returns: `statements` (one per value, in order), the `error` found
    (a ShapeError, or None) and its location `failing` (file, line); ``str(report)`` is the
    printout."""

    statements: list = field(default_factory=list)
    error: ShapeError | None = None
    failing: tuple | None = None
    outputs: list = field(default_factory=list)

    def __str__(self) -> str:
        lines, where = [], None
        for st in self.statements:
            if (st.file, st.line) != where:
                where = (st.file, st.line)
                lines.append(f"# {st.file}, line {st.line}:")
            lines.append(str(st))
            if st.fails:
                lines.append(f"# ^ ShapeError: {st.fails}")
        if self.error is not None and not any(st.fails for st in self.statements):
            message = getattr(self.error, "message", str(self.error)).splitlines()
            lines.append(f"# {type(self.error).__name__}: {message[0]}")
            lines.extend(f"# {line.strip()}" for line in message[1:])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


def _fmt(shape) -> str:
    return str(tuple(shape))


@user_errors
def shapes(model, *args_or_shapes) -> ShapesReport:
    """The seed's ``@shapes``: the lowered model, one line per value, each annotated with its
    shape (``::(5, 20)``) under ``# file, line N:`` comments pointing at the model's source.

    Inputs appear as ``Input()[0]``, parameters by their path with their shapes, sub-models and
    functions as calls, except a sub-model whose shapes do not fit, which is inlined so its
    failing line shows. On a model with a shape error it returns the report (it does not
    raise); ``report.error`` is the error and the failing statement is marked. No array work is
    done.
    """
    model, avals, tree = abstract_inputs(model, args_or_shapes, "shapes")
    trace, inputs, out, error = _trace(model, avals, tree, tolerant=True)
    failures = list(trace.log.failures)
    if error is None and failures:
        error = failures[0][0]
    fail_index = failures[0][1] if failures else None
    if error is not None and fail_index is None:
        fail_index = len(trace.eqns)    # the trace stopped here: inline the calls around it
    printer = _Printer(trace, inputs, model, fail_index, live_vars(trace, out))
    report = ShapesReport(error=error)
    outputs = flatten(out)[0] if out is not None else []
    report.statements = printer.render(outputs)
    report.outputs = [printer.name_of(v) for v in outputs if isinstance(v, Tracer)]
    for st in report.statements:
        if st.fails:
            report.failing = (st.file, st.line)
    if error is not None and report.failing is None and error.trace:
        frame = error.trace[0]
        report.failing = (frame.file, frame.line)
    return report


class _Node:
    """A top-level item of the printout: one equation, or one call shown as a call."""

    def __init__(self, inputs, outputs, text, file, line, fails=None, call=False):
        self.inputs = inputs      # Vars and other atoms read
        self.outputs = outputs    # Vars produced
        self.text = text          # function of the input expressions -> expression
        self.file = file
        self.line = line
        self.fails = fails        # the ShapeError message, on the equation that failed
        self.call = call          # a sub-model shown as a call


class _Printer:
    def __init__(self, trace, inputs, model, fail_index, live):
        self.trace = trace
        self.live = live
        self.fail_index = fail_index
        self.names: dict[int, str] = {}
        for i, t in enumerate(inputs):
            self.names[id(t.variable)] = f"Input()[{i}]"
        self.leaf_names = set(self.names)
        paths = trace.paths
        for var, p in zip(trace.param_vars, trace.param_objs):
            self.names[id(var)] = paths.get(id(p)) or "_"
            self.leaf_names.add(id(var))
        for var in trace.consts:
            self.names[id(var)] = "_"
            self.leaf_names.add(id(var))
        self.animals = iter(ANIMALS)
        self.extra = 0

    def name_of(self, tracer) -> str:
        return self.names.get(id(tracer.variable), "?")

    def _fresh(self) -> str:
        try:
            return next(self.animals)
        except StopIteration:
            self.extra += 1
            return f"value{self.extra}"

    # building the nodes of one model level

    def nodes(self, start, end, depth):
        """Nodes for equations [start, end) as seen inside a model at `depth`."""
        events = [e for e in self.trace.log.events
                  if e.depth == depth + 1 and start <= e.start and e.end <= end and
                  e.end > e.start and not e.replayed]
        out, i = [], start
        for event in events:
            while i < event.start:
                out.append(self._eqn_node(i, depth))
                i += 1
            if event.start < i:
                continue      # nested inside an event already shown
            unfinished = event.result is None and event.end == self.fail_index
            if self.fail_index is not None and event.call is not None and (
                    event.start <= self.fail_index < event.end or unfinished):
                out.extend(self.nodes(event.start, event.end, depth + 1))
            else:
                out.append(self._call_node(event, depth))
            i = event.end
        while i < end:
            out.append(self._eqn_node(i, depth))
            i += 1
        return out

    def _where(self, eqn, depth):
        frames = eqn.source.frames
        k = len(frames) - depth
        if 0 <= k < len(frames):
            return frames[k].file, frames[k].line
        return eqn.source.file, eqn.source.line

    def _eqn_node(self, i, depth):
        eqn = self.trace.eqns[i]
        file, line = self._where(eqn, depth)
        fails = None
        if i == self.fail_index:
            fails = self.trace.log.failures[0][0].message.splitlines()[0]
        return _Node(list(eqn.inputs), list(eqn.outputs), _eqn_text(eqn), file, line, fails)

    def _call_node(self, event, depth):
        eqns = self.trace.eqns
        file, line = self._where(eqns[event.start], depth)
        produced = {id(v) for eqn in eqns[event.start:event.end] for v in eqn.outputs}
        args = [a.variable if isinstance(a, Tracer) else a for a in flatten(event.args)[0]]
        results = [r.variable for r in flatten(event.result)[0] if isinstance(r, Tracer)]
        results = [r for r in results if id(r) in produced] or [eqns[event.end - 1].outputs[0]]
        label = _call_label(event)
        return _Node(args, results, lambda ins: f"{label}({', '.join(ins)})", file, line,
                     call=event.call is not None)

    # rendering

    def render(self, outputs):
        depth = 1
        top = [e for e in self.trace.log.events if e.depth == 1]
        start, end = (top[0].start, top[0].end) if top else (0, len(self.trace.eqns))
        nodes = [node for node in self.nodes(start, end, depth)
                 if node.fails or any(id(v) in self.live for v in node.outputs)]
        final = {id(v.variable) for v in outputs if isinstance(v, Tracer)}
        uses: dict[int, list] = {}
        for k, node in enumerate(nodes):
            for atom in node.inputs:
                if isinstance(atom, Var):
                    uses.setdefault(id(atom), []).append(k)
        producer = {id(v): k for k, node in enumerate(nodes) for v in node.outputs}
        # A value is written inside its one user's expression when that user is on the same
        # line, except that a sub-model call's argument holding another call gets a name (so
        # a Chain reads one layer per line).
        statements = []
        inline: dict[int, bool] = {}
        has_call: dict[int, bool] = {}
        for node in nodes:
            inner = node.call or any(inline.get(id(a)) and has_call.get(id(a))
                                     for a in node.inputs if isinstance(a, Var))
            for v in node.outputs:
                users = uses.get(id(v), [])
                same_line = all(nodes[u].line == node.line and nodes[u].file == node.file
                                for u in users)
                inline[id(v)] = (len(users) == 1 and same_line and id(v) not in final
                                 and not (inner and nodes[users[0]].call))
                has_call[id(v)] = inner
        exprs: dict[int, str] = {}
        fails: dict[int, str] = {}
        for node in nodes:
            ins = [self._expr(a, exprs, inline, producer) for a in node.inputs]
            text = node.text(ins)
            failing = node.fails or next((fails[id(a)] for a in node.inputs
                                          if isinstance(a, Var) and id(a) in fails), None)
            shown = node.outputs[0] if node.outputs else None
            if shown is None:
                continue
            if inline.get(id(shown)):
                tainted = id(shown) in self.trace.log.tainted
                exprs[id(shown)] = text if tainted or _is_infix(node) else \
                    f"{text}::{_fmt(shown.aval.shape)}"
                if failing:
                    fails[id(shown)] = failing
                continue
            name = self._fresh()
            self.names[id(shown)] = name
            shape = None if id(shown) in self.trace.log.tainted else shown.aval.shape
            statements.append(Statement(name, text, shape, node.file, node.line, failing))
        return statements

    def _expr(self, atom, exprs, inline, producer):
        if isinstance(atom, Literal):
            return repr(atom.value.item())
        if not isinstance(atom, Var):
            return "_"
        if id(atom) in exprs:
            return exprs[id(atom)]
        name = self.names.get(id(atom), "_")
        if id(atom) in self.leaf_names:
            return f"{name}::{_fmt(atom.aval.shape)}"
        return name


def _call_label(event) -> str:
    target = event.target
    if event.call is None:
        return getattr(target, "__name__", "f")
    if isinstance(target, FunctionModel):
        return target._name
    return repr(target)


INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "matmul": "@", "pow": "**",
         "gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}
NAMES = {"logistic": "σ", "neg": "-", "reduce_sum": "sum", "reduce_max": "max"}


def _is_infix(node) -> bool:
    return getattr(node.text, "infix", False)


def _eqn_text(eqn):
    name = eqn.prim.name
    params = eqn.attrs
    if name in INFIX:
        op = INFIX[name]

        def text(ins):
            return f"{ins[0]} {op} {ins[1]}"
        text.infix = True
        return text
    if name == "stop_gradient":
        return lambda ins: ins[0]
    if name == "getitem":
        return lambda ins: f"{ins[0]}{index_text(params['index'])}"
    if name == "convert":
        return lambda ins: f"{ins[0]}.astype({np.dtype(params['dtype']).name})"
    label = NAMES.get(name, name)
    extra = ", ".join(f"{k}={_param(v)}" for k, v in params.items())

    def call(ins):
        return f"{label}({', '.join(ins + ([extra] if extra else []))})"
    return call


def _param(value) -> str:
    if isinstance(value, tuple) and len(value) == 1:
        return str(value[0])
    return str(value)
