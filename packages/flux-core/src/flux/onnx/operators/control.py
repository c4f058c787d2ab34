"""ONNX's control flow: If, Loop and Scan, their subgraphs run through `Node.run_graph`.

flux's graphs are static, so:

- ``If`` on a known condition runs the chosen branch only; on a traced one it runs both
  and selects, ``where(cond, then, else)`` per output (the branches must give the same
  shapes);
- ``Loop`` is unrolled: its trip count and, when it has one, its condition (after each
  step) must be known while tracing; at most `MAX_STEPS` steps;
- ``Scan`` is flux's loop, `scan`: its body traced once, as the loop's body graph, when the
  trace takes loops and every scan input and output runs one way (all forwards, or all
  backwards: flux's ``reverse``); otherwise (mixed directions, a backend without loops,
  `flux.shapes`, a body that needs unrolling) it is unrolled: step t slices each scan input
  at t (from the end for direction 1), and the steps' scan outputs are stacked along their
  axes (prepended for direction 1). Opset 8's form (a batch axis first, and `directions`)
  runs once per batch entry.
"""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P
from flux.ir.body import BodyTrace, NeedsUnrolling
from flux.ir.graph import Aval
from flux.ir.trace import current_trace
from flux.ops.elementwise import lift
from flux.onnx.operators.arguments import axis_of, traced
from flux.onnx.operators.registry import known, operator, static

__all__ = ["MAX_STEPS"]

MAX_STEPS = 100_000
"""The most steps flux unrolls one Loop into (a larger trip count is refused)."""


@operator("If")
def if_(node, condition):
    """The outputs of then_branch if the condition holds, else those of else_branch."""
    then_branch, else_branch = node.attr("then_branch"), node.attr("else_branch")
    if known(condition):
        chosen = then_branch if bool(np.asarray(condition).reshape(-1)[0]) else else_branch
        return tuple(node.run_graph(chosen, []))
    condition = np.reshape(condition, ())
    outs = []
    for k, (a, b) in enumerate(zip(node.run_graph(then_branch, []),
                                   node.run_graph(else_branch, []))):
        if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
            raise node.error(
                f"its condition is computed from the model's inputs, so flux computes both "
                f"branches and selects; but output {k} is {tuple(a.shape)} {a.dtype} in "
                f"then_branch and {tuple(b.shape)} {b.dtype} in else_branch")
        outs.append(np.where(condition, a, b))
    return tuple(outs)


@operator("Loop")
def loop(node, trip_count=None, condition=None, *carried):
    """``for i in range(M) while cond: (cond, carried…, scans…) = body(i, cond, carried…)``:
    the carried values after the last step, then each scan output stacked over the steps."""
    body = node.attr("body")
    steps = None if trip_count is None else int(static(node, trip_count, "M").reshape(()))
    going = True if condition is None else _known_bool(node, condition)
    n = len(carried)
    carried = list(carried)
    scanned, i = [], 0
    while going and (steps is None or i < steps):
        if i >= MAX_STEPS:
            raise node.error(f"runs more than {MAX_STEPS:,} steps; flux unrolls loops, "
                             f"so their trip counts must be small and known")
        outs = node.run_graph(body, [np.array(i, np.int64), np.array(going), *carried])
        carried = list(outs[1:1 + n])
        scanned.append(outs[1 + n:])
        if condition is not None:
            going = _known_bool(node, outs[0])
        i += 1
    k = len(body.output) - 1 - n
    if k and not scanned:
        raise node.error("runs no step, and flux cannot tell the shapes of its scan outputs")
    return tuple(carried) + tuple(np.stack([s[j] for s in scanned]) for j in range(k))


def _known_bool(node, value) -> bool:
    if traced(value):
        raise node.error("its condition is computed from the model's inputs; flux unrolls "
                         "loops, so the condition must be known while tracing")
    return bool(np.asarray(value).reshape(-1)[0])


@operator("Scan", since=9)
def scan(node, *inputs):
    """``(states…, ys…)``: the body run over the scan inputs' steps, carrying the states."""
    body = node.attr("body")
    m = node.attr("num_scan_inputs")
    n = len(inputs) - m
    states, xs = list(inputs[:n]), list(inputs[n:])
    k = len(body.output) - n
    in_axes = node.attr("scan_input_axes", [0] * m)
    in_dirs = node.attr("scan_input_directions", [0] * m)
    out_axes = node.attr("scan_output_axes", [0] * k)
    out_dirs = node.attr("scan_output_directions", [0] * k)
    in_axes = [axis_of(node, a, len(x.shape)) for a, x in zip(in_axes, xs)]
    if len(set(in_dirs) | set(out_dirs)) == 1 and traced(*states, *xs):
        looped = _as_loop(node, body, states, xs, in_axes, out_axes, bool(in_dirs[0]))
        if looped is not None:
            return looped
    states, ys = _steps(node, body, states, xs, in_axes, in_dirs)
    stacked = []
    for j, seq in enumerate(ys):
        seq = seq[::-1] if out_dirs[j] else seq
        axis = axis_of(node, out_axes[j], len(seq[0].shape) + 1)
        stacked.append(np.stack(seq, axis=axis))
    return tuple(states) + tuple(stacked)


def _as_loop(node, body, states, xs, in_axes, out_axes, reverse: bool):
    """The Scan as one `scan` equation whose body is the ONNX body traced once; None where
    it must be unrolled instead (see the module docstring)."""
    trace = current_trace()
    if trace is None or not trace.loops or trace.log is not None:
        return None
    states = [lift(s) for s in states]
    length = xs[0].shape[in_axes[0]]
    if any(x.shape[a] != length for x, a in zip(xs, in_axes)) or length == 0:
        return None                             # (the unrolled form says what is wrong)
    loop = BodyTrace(trace)
    loop.source_override = trace.source_override
    try:
        with loop:
            carried = [loop.new_input(Aval(s.shape, s.dtype)) for s in states]
            steps = [loop.new_input(Aval(tuple(x.shape[:a]) + tuple(x.shape[a + 1:]), x.dtype))
                     for x, a in zip(xs, in_axes)]
            outs = [lift(o) for o in node.run_graph(body, carried + steps)]
            n = len(states)
            new = [o if o.dtype == c.dtype else o.astype(c.dtype)
                   for o, c in zip(outs[:n], carried)]
            graph = loop.body_graph(carried + steps, new + outs[n:])
    except NeedsUnrolling:
        return None
    y_axes = tuple(axis_of(node, a, len(np.shape(y)) + 1) for a, y in zip(out_axes, outs[n:]))
    results = P.scan_p(*loop.captured, *states, *xs, body=graph, length=length,
                       n_consts=len(loop.captured), n_carry=n, x_axes=tuple(in_axes),
                       y_axes=y_axes, reverse=reverse)
    return tuple(results)


def _steps(node, body, states, xs, axes, directions):
    """Run `body` once per step; the final states and the list of each scan output's steps."""
    lengths = {x.shape[a] for x, a in zip(xs, axes)}
    if len(lengths) != 1:
        raise node.error(f"its scan inputs have different lengths {sorted(lengths)}")
    length = lengths.pop()
    if length == 0:
        raise node.error("scans sequences of length 0; flux needs at least one step")
    n = len(states)
    ys = [[] for _ in range(len(body.output) - n)]
    for t in range(length):
        step = [x[(slice(None),) * a + ((length - 1 - t) if d else t,)]
                for x, a, d in zip(xs, axes, directions)]
        outs = node.run_graph(body, list(states) + step)
        states = list(outs[:n])
        for seq, y in zip(ys, outs[n:]):
            seq.append(y)
    return states, ys


@operator("Scan", since=8)
def scan_batched(node, lengths, *inputs):
    """Opset 8: every input has a batch axis first (scan inputs are (batch, time, ...)); the
    body runs over each batch entry's steps (sequence_lens, if given, must all be the full
    length)."""
    body = node.attr("body")
    m = node.attr("num_scan_inputs")
    n = len(inputs) - m
    directions = node.attr("directions", [0] * m)
    batch = inputs[0].shape[0]
    if lengths is not None:
        full = {int(v) for v in np.ravel(static(node, lengths, "sequence_lens"))}
        if full != {inputs[n].shape[1]}:
            raise node.error("sequence_lens of different lengths are not imported")
    finals, outputs = [], []
    for b in range(batch):
        states = [s[b] for s in inputs[:n]]
        xs = [x[b] for x in inputs[n:]]
        states, ys = _steps(node, body, states, xs, [0] * m, directions)
        finals.append(states)
        outputs.append([np.stack(seq) for seq in ys])
    states = [np.stack([f[j] for f in finals]) for j in range(n)]
    ys = [np.stack([o[j] for o in outputs]) for j in range(len(body.output) - n)]
    return tuple(states) + tuple(ys)
