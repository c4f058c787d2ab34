"""Lowering the loop primitive `scan` to ONNX's Scan.

``carry_out…, ys… = scan(consts…, carry_in…, xs…; body, length, n_consts, n_carry, x_axes,
y_axes, reverse)`` is one Scan node: the carried values are its state variables, the xs its
scan inputs (``scan_input_axes`` = `x_axes`), the ys its scan outputs (``scan_output_axes`` =
`y_axes`), `reverse` both directions = 1 (the last step first, each step's output at its own
position). The body becomes the Scan's subgraph; ONNX's Scan has no loop-invariant inputs, so
the body reads the consts from the enclosing graph by name (the subgraph's outer scope). A
loop inside the body is a Scan inside the subgraph, and so on.

A scan with no sequence input (``unroll(..., seq=False)`` feeds the same value at every step,
which is a const) gets one: a constant of `length` zeros the body does not read, since ONNX
counts a Scan's steps from its scan inputs.
"""
from __future__ import annotations

import numpy as np

from flux.ir.graph import Aval, Var
from flux.ir.primitives import scan_p
from flux.ir.primitives.loop import scan_parts

__all__ = ["SCAN_RULES"]


def _scan(b, *inputs):
    a = b.attrs
    body = a["body"]
    consts, carry, xs = scan_parts(inputs, a["n_consts"], a["n_carry"])
    axes = [int(axis) for axis in a["x_axes"]]
    if not xs:
        steps = Var(Aval((), np.int8))               # one step of the stand-in sequence
        body = _with_input(body, steps)
        xs, axes = [b.const(np.zeros(a["length"], np.int8))], [0]
    graph = b.subgraph(body, list(consts))
    attrs = dict(body=graph, num_scan_inputs=len(xs), scan_input_axes=axes)
    n_ys = len(a["y_axes"])
    if n_ys:
        attrs["scan_output_axes"] = [int(axis) for axis in a["y_axes"]]
    if a["reverse"]:
        attrs["scan_input_directions"] = [1] * len(xs)
        if n_ys:
            attrs["scan_output_directions"] = [1] * n_ys
    b.node("Scan", *carry, *xs, outputs=b.outs, **attrs)


def _with_input(body, var):
    """`body` with one more (unread) input at the end."""
    return type(body)(list(body.inputs) + [var], body.param_vars, body.param_objs, body.consts,
                      body.const_values, body.eqns, body.outputs, body.in_tree, body.out_tree,
                      body.param_names)


SCAN_RULES = {scan_p: _scan}
