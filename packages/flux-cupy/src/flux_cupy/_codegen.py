"""Generated code for fused elementwise kernels: one CUDA C++ kernel per `Group` (compiled
with NVRTC by CuPy's `RawKernel`), and the same expressions as NumPy code for the stand-in.

Each primitive has two templates side by side (`EXPRESSIONS`): the CUDA expression and the
NumPy expression of the same formula, so the stand-in runs on the CPU exactly what the GPU
kernel computes (NaN propagation of max/min/relu included) and the conformance kit checks
the fusion's numbers without a GPU. A kernel reads each input at the offset its shape gives
(inputs are C-contiguous; a broadcast axis has stride 0) and writes each output at the flat
index of the group's iteration shape.
"""
from __future__ import annotations

import numpy as np

from flux.ir import Literal
from flux.ir import primitives as P

__all__ = ["EXPRESSIONS", "C_TYPES", "cuda_source", "numpy_source", "multi_tensor_source",
           "fusable"]

C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double",
           np.dtype(np.int32): "int", np.dtype(np.int64): "long long",
           np.dtype(np.bool_): "bool"}
"""The dtypes fused kernels handle, and their C type (others run as CuPy calls)."""

_MAX = ("(({0}) != ({0}) || ({0}) > ({1}) ? ({0}) : ({1}))",
        "np.where(np.isnan({0}) | ({0} > {1}), {0}, {1})")
_MIN = ("(({0}) != ({0}) || ({0}) < ({1}) ? ({0}) : ({1}))",
        "np.where(np.isnan({0}) | ({0} < {1}), {0}, {1})")

EXPRESSIONS = {
    # unary
    P.neg_p: ("(-({0}))", "(-{0})"),
    P.exp_p: ("exp({0})", "np.exp({0})"),
    P.log_p: ("log({0})", "np.log({0})"),
    P.tanh_p: ("tanh({0})", "np.tanh({0})"),
    P.sqrt_p: ("sqrt({0})", "np.sqrt({0})"),
    P.sin_p: ("sin({0})", "np.sin({0})"),
    P.cos_p: ("cos({0})", "np.cos({0})"),
    P.abs_p: ("(({0}) < 0 ? -({0}) : ({0}))", "np.where({0} < 0, -{0}, {0})"),
    P.sign_p: ("({T})((({0}) > 0) - (({0}) < 0))",
               "np.sign({0})"),
    P.relu_p: ("(({0}) > 0 || ({0}) != ({0}) ? ({0}) : ({T})0)",
               "np.where(({0} > 0) | np.isnan({0}), {0}, {z})"),
    P.logistic_p: ("(tanh(({0}) * ({T})0.5) * ({T})0.5 + ({T})0.5)",
                   "(np.tanh({0} * {h}) * {h} + {h})"),
    # binary
    P.add_p: ("(({0}) + ({1}))", "({0} + {1})"),
    P.sub_p: ("(({0}) - ({1}))", "({0} - {1})"),
    P.mul_p: ("(({0}) * ({1}))", "({0} * {1})"),
    P.div_p: ("(({0}) / ({1}))", "({0} / {1})"),
    P.pow_p: ("pow({0}, {1})", "np.power({0}, {1})"),
    P.max_p: _MAX,
    P.min_p: _MIN,
    P.logaddexp_p: ("(({0}) == ({1}) ? ({0}) + ({T})0.69314718055994530942 : "
                    + _MAX[0] + " + log1p(exp(-fabs(({0}) - ({1})))))",
                    "np.where({0} == {1}, {0} + np.log({t}(2)), "
                    + _MAX[1] + " + np.log1p(np.exp(-np.abs({0} - {1}))))"),
    P.gt_p: ("(({0}) > ({1}))", "({0} > {1})"),
    P.ge_p: ("(({0}) >= ({1}))", "({0} >= {1})"),
    P.lt_p: ("(({0}) < ({1}))", "({0} < {1})"),
    P.le_p: ("(({0}) <= ({1}))", "({0} <= {1})"),
    P.eq_p: ("(({0}) == ({1}))", "({0} == {1})"),
    P.ne_p: ("(({0}) != ({1}))", "({0} != {1})"),
    P.and_p: ("(({0}) && ({1}))", "np.logical_and({0}, {1})"),
    P.or_p: ("(({0}) || ({1}))", "np.logical_or({0}, {1})"),
    # select, convert, identity
    P.where_p: ("(({0}) ? ({1}) : ({2}))", "np.where({0}, {1}, {2})"),
    P.convert_p: ("(({T})({0}))", "{0}.astype({t})"),
    P.stop_gradient_p: ("({0})", "{0}"),
    P.broadcast_to_p: ("({0})", "np.broadcast_to({0}, {shape})"),
}
"""Primitive -> (CUDA expression, NumPy expression) of its inputs ``{0}, {1}, {2}``;
``{T}``/``{t}`` are the result's C type / NumPy type, ``{z}``/``{h}`` its 0 and 0.5."""


def fusable(eqn) -> bool:
    """Whether `eqn` can be part of a fused elementwise kernel."""
    return (eqn.prim in EXPRESSIONS
            and all(a.aval.dtype in C_TYPES for a in eqn.inputs + eqn.outputs))


def _c_literal(value, dtype) -> str:
    value = np.asarray(value, dtype).item()
    ctype = C_TYPES[np.dtype(dtype)]
    if np.dtype(dtype).kind == "b":
        return "true" if value else "false"
    if np.dtype(dtype).kind in "iu":
        return f"(({ctype}){int(value)}LL)"
    if np.isnan(value):
        return "__int_as_float(0x7fc00000)" if ctype == "float" else \
            "__longlong_as_double(0x7ff8000000000000LL)"
    if np.isinf(value):
        bits = ("__int_as_float(0x7f800000)" if ctype == "float"
                else "__longlong_as_double(0x7ff0000000000000LL)")
        return bits if value > 0 else f"(-{bits})"
    return f"(({ctype}){float(value)!r})"


def cuda_source(group, name: str) -> str:
    """The CUDA C++ source of `group`'s kernel, `extern "C"` named `name`: arguments are the
    group's inputs (const pointers), then its outputs (buffers of the plan, never inputs)."""
    shape = group.shape
    size = int(np.prod(shape, dtype=np.int64))
    args = [f"const {C_TYPES[v.aval.dtype]}* __restrict__ in{k}"
            for k, v in enumerate(group.inputs)]
    args += [f"{C_TYPES[v.aval.dtype]}* __restrict__ out{k}"
             for k, v in enumerate(group.outputs)]
    body = [f"const long long n = {size}LL;",
            "for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
            "     i += (long long)gridDim.x * blockDim.x) {"]
    names = {}
    if any(v.aval.shape != shape for v in group.inputs):
        body.append("  long long r = i;")
        for axis in reversed(range(len(shape))):
            body.append(f"  const long long c{axis} = r % {shape[axis]}LL; r /= {shape[axis]}LL;")
    for k, v in enumerate(group.inputs):
        names[id(v)] = f"x{k}"
        offset = _offset(v.aval.shape, shape)
        body.append(f"  const {C_TYPES[v.aval.dtype]} x{k} = in{k}[{offset}];")
    body += _expressions(group, names)
    for k, v in enumerate(group.outputs):
        body.append(f"  out{k}[i] = {names[id(v)]};")
    body.append("}")
    return (f'extern "C" __global__ void {name}({", ".join(args)}) {{\n'
            + "\n".join("  " + line for line in body) + "\n}\n")


def _expressions(group, names: dict) -> list[str]:
    """One line per equation of `group` (``const T v<j> = <expression>;``), given the C names
    of its inputs in `names` (to which the equations' results are added)."""
    lines = []
    for j, eqn in enumerate(group.eqns):
        out = eqn.outputs[0]
        dtype = out.aval.dtype
        ins = [_c_literal(a.value, a.dtype) if isinstance(a, Literal) else names[id(a)]
               for a in eqn.inputs]
        expr = EXPRESSIONS[eqn.prim][0].format(*ins, T=C_TYPES[dtype])
        names[id(out)] = f"v{j}"
        lines.append(f"  const {C_TYPES[dtype]} v{j} = {expr};")
    return lines


def multi_tensor_source(group, graph, n_arrays: int, name: str, n_globals: int = 1) -> str:
    """One kernel updating many arrays of one dtype at once (the optimiser's update of every
    Param): `group` is the per-element update traced on 0-d values, whose first `n_arrays`
    graph inputs are per-element arrays (the Param, its gradient, its slots) and the rest
    per-array scalars (hyper-parameters, one row per array), then `n_globals` 0-d values
    shared by all (the gradients' scale if there is one, then the flag). The outputs are
    written over the first arrays (the Param, then its slots). Arguments: one table of
    device pointers per array input, the arrays' start offsets in one flat index space
    (``n + 1`` of them), the hyper rows, the globals, and the number of arrays."""
    ctype = C_TYPES[graph.inputs[0].aval.dtype]
    n_hyper = len(graph.inputs) - n_arrays - n_globals
    first_global = n_arrays + n_hyper
    args = [f"const unsigned long long* ptr{k}" for k in range(n_arrays)]
    args += ["const long long* offsets", f"const {ctype}* hyper"]
    args += [f"const {C_TYPES[v.aval.dtype]}* global{m}"
             for m, v in enumerate(graph.inputs[first_global:])]
    args += ["const int n_arrays"]
    body = ["const long long n = offsets[n_arrays];",
            "for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
            "     i += (long long)gridDim.x * blockDim.x) {",
            "  int lo = 0, hi = n_arrays - 1;          // the array element i belongs to",
            "  while (lo < hi) { const int mid = (lo + hi + 1) / 2;",
            "                    if (offsets[mid] <= i) lo = mid; else hi = mid - 1; }",
            "  const long long j = i - offsets[lo];"]
    names = {}
    for k, var in enumerate(graph.inputs):
        names[id(var)] = f"x{k}"
        ctype_k = C_TYPES[var.aval.dtype]
        if k < n_arrays:
            source = f"(({ctype_k}*)ptr{k}[lo])[j]"
        elif k < first_global:
            source = f"hyper[lo * {n_hyper} + {k - n_arrays}]"
        else:
            source = f"global{k - first_global}[0]"
        body.append(f"  const {ctype_k} x{k} = {source};")
    body += _expressions(group, names)
    targets = [0] + list(range(2, 2 + len(group.outputs) - 1))   # the Param, then its slots
    for target, v in zip(targets, group.outputs):
        body.append(f"  (({ctype}*)ptr{target}[lo])[j] = {names[id(v)]};")
    body.append("}")
    return (f'extern "C" __global__ void {name}({", ".join(args)}) {{\n'
            + "\n".join("  " + line for line in body) + "\n}\n")


def _offset(of: tuple, shape: tuple) -> str:
    """Where element (c0, c1, ...) of `shape` lives in a C-contiguous array of shape `of`
    broadcast to it (axes aligned from the right; size-1 axes have stride 0)."""
    if of == shape:
        return "i"
    terms, stride = [], 1
    lead = len(shape) - len(of)
    for axis in reversed(range(len(of))):
        if of[axis] != 1:
            terms.append(f"c{axis + lead} * {stride}LL" if stride != 1 else f"c{axis + lead}")
        stride *= of[axis]
    return " + ".join(reversed(terms)) or "0"


def numpy_source(group, name: str, broadcast: bool = True) -> tuple[str, dict]:
    """The NumPy stand-in of `group`'s kernel: ``name(*inputs) -> [outputs]`` computing the
    same expressions, and the globals it needs. Without `broadcast` the outputs keep the
    shapes NumPy gives them (a group traced on 0-d values, run on whole arrays)."""
    env: dict = {"np": np}
    names = {}
    lines = []
    for k, v in enumerate(group.inputs):
        names[id(v)] = f"x{k}"
    for j, eqn in enumerate(group.eqns):
        out = eqn.outputs[0]
        t = f"t{j}"
        env[t] = out.aval.dtype.type
        ins = []
        for i, a in enumerate(eqn.inputs):
            if isinstance(a, Literal):
                env[f"l{j}_{i}"] = a.dtype.type(a.value)
                ins.append(f"l{j}_{i}")
            else:
                ins.append(names[id(a)])
        zero, half = f"t{j}(0)", f"t{j}(0.5)"
        expr = EXPRESSIONS[eqn.prim][1].format(*ins, t=t, z=zero, h=half,
                                                shape=tuple(out.aval.shape))
        names[id(out)] = f"v{j}"
        lines.append(f"v{j} = np.asarray({expr}).astype({t}, copy=False)")
    outs = ", ".join(f"np.broadcast_to({names[id(v)]}, {tuple(group.shape)})" if broadcast
                     else names[id(v)] for v in group.outputs)
    lines.append(f"return [{outs}]")
    args = ", ".join(f"x{k}" for k in range(len(group.inputs)))
    source = f"def {name}({args}):\n" + "\n".join("    " + line for line in lines) + "\n"
    return source, env
