"""The closed primitive set: every backend implements exactly `PRIMITIVES`.

Each primitive is declared once, with its NumPy implementation, shape rule and gradient rule
side by side (`elementwise`, `structural`, `windows`); what it is (`elementwise`,
`reduction`, `view`,
`result_dtype`) is part of the declaration, so passes and backends never guess. The groups
below are what a backend's lowering table usually handles alike.

Adding a primitive: declare it in one of the two modules (and add it to the list of names
here), give it a lowering in each backend's table, and add one case to the conformance kit's
`flux.testing` primitive cases (docs/architecture.md, "Adding a primitive").
"""
from __future__ import annotations

from flux.ir.trace import Primitive
from flux.ir.primitives.elementwise import (
    abs_p, add_p, and_p, broadcast_shapes, convert_p, cos_p, div_p, eq_p, exp_p, ge_p, gt_p,
    le_p, log_p, logaddexp_p, logistic_p, lt_p, max_p, min_p, mul_p, ne_p, neg_p, or_p, pow_p,
    relu_p, sign_p, sin_p, sqrt_p, sub_p, tanh_p, where_p)
from flux.ir.primitives.structural import (
    broadcast_to_p, concatenate_p, getitem_p, index_add_p, index_text, is_basic_index,
    matmul_p, reduce_max_p, reduce_sum_p, reshape_p, stop_gradient_p, transpose_p)
from flux.ir.primitives.loop import evaluate, scan_p, step_index
from flux.ir.primitives.windows import (
    conv_filter_grad_p, conv_input_grad_p, conv_p, take_grad_p, take_p, window_max_grad_p,
    window_max_p, window_sum_grad_p, window_sum_p)

PRIMITIVES: list[Primitive] = [
    neg_p, exp_p, log_p, tanh_p, sqrt_p, sin_p, cos_p, abs_p, sign_p, relu_p, logistic_p,
    add_p, sub_p, mul_p, div_p, pow_p, max_p, min_p, logaddexp_p,
    gt_p, ge_p, lt_p, le_p, eq_p, ne_p, and_p, or_p,
    where_p, convert_p, stop_gradient_p, matmul_p, reduce_sum_p, reduce_max_p,
    broadcast_to_p, reshape_p, transpose_p, concatenate_p, getitem_p, index_add_p,
    conv_p, conv_input_grad_p, conv_filter_grad_p, window_max_p, window_max_grad_p,
    window_sum_p, window_sum_grad_p, take_p, take_grad_p,
]
"""Every primitive: the list a backend must implement."""

LOOPS = [scan_p]
"""Structured primitives, outside `PRIMITIVES`: a backend that declares ``loops = True``
lowers them; the others are given graphs with every loop unrolled."""

ELEMENTWISE = [p for p in PRIMITIVES if p.elementwise]
"""Elementwise primitives (NumPy broadcasting, one result of the broadcast shape)."""

REDUCTIONS = [p for p in PRIMITIVES if p.reduction]
"""Reductions over ``attrs["axes"]`` (with ``keepdims``)."""

VIEWS = [p for p in PRIMITIVES if p.view]
"""Primitives whose result may alias their first input."""

COMPARISONS = [p for p in ELEMENTWISE if p.result_dtype is not None]
"""Elementwise primitives with a bool result."""

__all__ = ["Primitive", "PRIMITIVES", "LOOPS", "scan_p", "evaluate", "step_index",
           "ELEMENTWISE", "REDUCTIONS", "VIEWS", "COMPARISONS", "broadcast_shapes",
           "index_text", "is_basic_index"] + [p.name + "_p" for p in PRIMITIVES]
