"""The lowering table: each flux primitive as ONNX operators (`LOWERINGS`).

A rule is ``rule(b, *inputs)``: `b` is the equation's `flux.onnx.export_graph.Emit` (its
attributes, the names its results must have, node and constant makers), `inputs` the ONNX
names of its operands. It adds nodes whose last writes ``b.outs``. This module holds the
elementwise primitives, matmul, reductions and views; indexing, windows and loops have their
own modules, merged in here.

flux's layout and ONNX's agree everywhere except images: flux is channels last, ONNX
channels first, so the window rules transpose around ONNX's operators
(`flux.onnx.lowering_windows`).
"""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P
from flux.onnx.export_batch import BatchDim
from flux.onnx.lowering_index import INDEX_RULES
from flux.onnx.lowering_scan import SCAN_RULES
from flux.onnx.lowering_windows import WINDOW_RULES

__all__ = ["LOWERINGS", "ONE_OPERATOR"]

ONE_OPERATOR = {
    P.neg_p: "Neg", P.exp_p: "Exp", P.log_p: "Log", P.tanh_p: "Tanh", P.sqrt_p: "Sqrt",
    P.sin_p: "Sin", P.cos_p: "Cos", P.abs_p: "Abs", P.sign_p: "Sign", P.relu_p: "Relu",
    P.logistic_p: "Sigmoid",
    P.add_p: "Add", P.sub_p: "Sub", P.mul_p: "Mul", P.div_p: "Div", P.pow_p: "Pow",
    P.max_p: "Max", P.min_p: "Min",
    P.gt_p: "Greater", P.ge_p: "GreaterOrEqual", P.lt_p: "Less", P.le_p: "LessOrEqual",
    P.eq_p: "Equal", P.where_p: "Where", P.matmul_p: "MatMul", P.stop_gradient_p: "Identity",
}
"""Primitives that are one ONNX operator with the same operands (NumPy broadcasting on both
sides)."""


def _one(op: str):
    def rule(b, *inputs):
        b.node(op, *inputs, out=b.out)
    rule.__doc__ = f"One {op} node."
    return rule


def _ne(b, x, y):
    """x ≠ y = Not(Equal(x, y))."""
    b.node("Not", b.node("Equal", x, y), out=b.out)


def _logic(op: str):
    def rule(b, x, y):
        x, y = (b.node("Cast", v, to=b.tensor_type(np.bool_))
                if a.aval.dtype != np.bool_ else v for v, a in zip((x, y), b.eqn.inputs))
        b.node(op, x, y, out=b.out)
    rule.__doc__ = f"{op} of the operands as booleans."
    return rule


def _logaddexp(b, x, y):
    """log(eˣ + eʸ) = max(x, y) + log(1 + e^−|x − y|), which overflows for no x, y; |x − y| is
    taken as 0 where x = y, so that two equal infinities give themselves (not NaN)."""
    dtype = b.eqn.inputs[0].aval.dtype
    zero, one = b.const(np.zeros((), dtype)), b.const(np.ones((), dtype))
    gap = b.node("Where", b.node("Equal", x, y), zero, b.node("Abs", b.node("Sub", x, y)))
    soft = b.node("Log", b.node("Add", one, b.node("Exp", b.node("Neg", gap))))
    b.node("Add", b.node("Max", x, y), soft, out=b.out)


def _convert(b, x):
    """Cast to the target dtype."""
    b.node("Cast", x, out=b.out, to=b.tensor_type(b.attrs["dtype"]))


def _reduce(op: str):
    def rule(b, x):
        axes, keepdims = tuple(b.attrs["axes"]), int(bool(b.attrs["keepdims"]))
        if not axes:
            b.node("Identity", x, out=b.out)
            return
        dtype = b.eqn.inputs[0].aval.dtype
        if dtype == np.bool_:            # (ONNX reduces numbers; a bool max is an integer's)
            x = b.node("Cast", x, to=b.tensor_type(np.int32))
        out = b.export.fresh(f"{b.site}/{op}") if dtype == np.bool_ else b.out
        if op == "ReduceSum" or b.opset >= 18:
            b.node(op, x, b.ints(axes), out=out, keepdims=keepdims)
        else:
            b.node(op, x, out=out, axes=list(axes), keepdims=keepdims)
        if dtype == np.bool_:
            b.node("Cast", out, out=b.out, to=b.tensor_type(np.bool_))
    rule.__doc__ = f"{op} over the axes (keepdims as flux's); no axes is the identity."
    return rule


def _broadcast_to(b, x):
    """Expand to the target shape. A batch position that `x` already has (aligned from the
    right) is written 1, which Expand keeps as x's own size; one that `x` broadcasts into is
    the batch size, read at run time."""
    target = b.attr_dims("shape")
    have = b.dims(b.eqn.inputs[0])
    offset = len(target) - len(have)
    dims = [1 if isinstance(d, BatchDim) and i >= offset and have[i - offset] == d else d
            for i, d in enumerate(target)]
    b.node("Expand", x, b.shape(dims), out=b.out)


def _reshape(b, x):
    """Reshape to the target shape: static sizes as they are; one position that scales with
    the batch as -1 (ONNX infers it); several from the batch size at run time. A size 0 in the
    target needs ``allowzero`` (opset 14) so that it is not read as "copy the input's"."""
    target = b.attr_dims("shape")
    scaled = [i for i, d in enumerate(target) if isinstance(d, BatchDim)]
    attrs = {}
    if any(d == 0 for d in target if not isinstance(d, BatchDim)):
        b.needs_opset(14, "a reshape to a shape with a size 0")
        attrs["allowzero"] = 1
    if len(scaled) == 1 and not attrs:
        shape = b.ints([-1 if i in scaled else d for i, d in enumerate(target)])
    else:
        shape = b.shape(target)
    b.node("Reshape", x, shape, out=b.out, **attrs)


def _transpose(b, x):
    b.node("Transpose", x, out=b.out, perm=[int(p) for p in b.attrs["perm"]])


def _concatenate(b, *xs):
    b.node("Concat", *xs, out=b.out, axis=int(b.attrs["axis"]))


LOWERINGS = {prim: _one(op) for prim, op in ONE_OPERATOR.items()}
"""``primitive -> rule`` for every primitive of `flux.ir.PRIMITIVES` and the loop `scan`."""

LOWERINGS.update({
    P.ne_p: _ne, P.and_p: _logic("And"), P.or_p: _logic("Or"),
    P.logaddexp_p: _logaddexp, P.convert_p: _convert,
    P.reduce_sum_p: _reduce("ReduceSum"), P.reduce_max_p: _reduce("ReduceMax"),
    P.broadcast_to_p: _broadcast_to, P.reshape_p: _reshape, P.transpose_p: _transpose,
    P.concatenate_p: _concatenate,
})
LOWERINGS.update(INDEX_RULES)
LOWERINGS.update(WINDOW_RULES)
LOWERINGS.update(SCAN_RULES)
