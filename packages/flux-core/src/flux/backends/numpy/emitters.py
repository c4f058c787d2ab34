"""How each primitive is written in the NumPy backend's planned source (`EMITTERS`), which
primitives write into ``out=`` buffers or may alias their input, and which equations NumPy
does for free inside the ufuncs that use them (`elided`)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from flux.ir import primitives as P
from flux.ir.graph import Graph, Var

__all__ = ["UFUNCS", "OPERATORS", "EMITTERS", "WRITES_INTO", "ALIASING", "aliases", "elided",
           "logistic_into"]


# -- how each primitive is written in NumPy -------------------------------------------------------
# An emitter takes the input expressions, the equation's attrs and the `out=` target (or None)
# and returns an expression, or None to decline. Primitives missing here, and those declined,
# fall back to calling their `impl`.

UFUNCS = {p for p in P.ELEMENTWISE if isinstance(p.impl, np.ufunc)}
"""Elementwise primitives implemented by a NumPy ufunc: written as a call of it, with out=."""


def _ufunc_emitter(name: str):
    def emit(ins, params, out):
        args = ", ".join(ins) + (f", out={out}" if out else "")
        return f"np.{name}({args})"
    return emit


def _logistic(ins, params, out):
    # (tanh(x/2) + 1) / 2, all but the first step in place
    target = out or "None"
    return f"_logistic({ins[0]}, {target})"


def logistic_into(x, out):
    if np.ndim(x) == 0:
        return P.logistic_p.impl(x)
    out = np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    np.multiply(out, 0.5, out=out)
    np.add(out, 0.5, out=out)
    return out


OPERATORS = {P.add_p: "+", P.sub_p: "-", P.mul_p: "*", P.div_p: "/", P.matmul_p: "@"}
"""Primitives written as Python's operator on arrays when they make a fresh result: ``a + b``
is ``np.add(a, b)`` for arrays and NumPy scalars, reached through the array's C slot instead
of a lookup of ``np.add`` and a call parsing its arguments: less work per call on the hot
path of small models (bench/overhead.py). With ``out=`` they stay ufunc calls. (`power` is
left out: its operator special-cases exponents 0.5 and −1 as sqrt and reciprocal, which may
round differently.)"""


def _binary(name: str, symbol: str):
    def emit(ins, params, out):
        if out:
            return f"np.{name}({ins[0]}, {ins[1]}, out={out})"
        return f"({ins[0]} {symbol} {ins[1]})"
    return emit


def _index_text(i) -> str | None:
    if isinstance(i, slice):
        parts = ["" if v is None else repr(int(v)) for v in (i.start, i.stop, i.step)]
        return ":".join(parts[:2] if i.step is None else parts)
    if i is None or i is Ellipsis:
        return repr(i)
    if isinstance(i, (int, np.integer)) and not isinstance(i, bool):
        return repr(int(i))
    return None


def _getitem(ins, params, out):
    """``x[0:256, :]``: a basic index written as Python's own (a view, no call); others
    decline (None: the primitive's impl runs)."""
    parts = [_index_text(i) for i in params["index"]]
    if not parts or any(p is None for p in parts):
        return None
    return f"{ins[0]}[{', '.join(parts)}{',' if len(parts) == 1 else ''}]"


EMITTERS = {
    P.getitem_p: _getitem,
    P.logistic_p: _logistic,
    P.relu_p: lambda ins, p, out: f"np.maximum({ins[0]}, 0" + (f", out={out})" if out else ")"),
    P.where_p: lambda ins, p, out: f"np.where({ins[0]}, {ins[1]}, {ins[2]})",
    P.convert_p: lambda ins, p, out: f"{ins[0]}.astype(np.{np.dtype(p['dtype']).name})",
    P.stop_gradient_p: lambda ins, p, out: ins[0],
    P.reduce_sum_p: lambda ins, p, out: (
        f"np.add.reduce({ins[0]}, axis={p['axes']!r}, keepdims={p['keepdims']})"
        if p["axes"] else ins[0]),
    P.reduce_max_p: lambda ins, p, out: (
        f"np.maximum.reduce({ins[0]}, axis={p['axes']!r}, keepdims={p['keepdims']})"
        if p["axes"] else ins[0]),
    P.broadcast_to_p: lambda ins, p, out: f"np.broadcast_to({ins[0]}, {p['shape']!r})",
    P.reshape_p: lambda ins, p, out: f"{ins[0]}.reshape({p['shape']!r})",
    P.transpose_p: lambda ins, p, out: (
        f"{ins[0]}.T" if len(p["perm"]) == 2 else f"{ins[0]}.transpose({p['perm']!r})"),
    P.concatenate_p: lambda ins, p, out: f"np.concatenate(({', '.join(ins)},), axis={p['axis']})",
}
for _prim, _symbol in OPERATORS.items():
    EMITTERS[_prim] = _binary(_prim.impl.__name__, _symbol)
for _prim in UFUNCS:
    EMITTERS.setdefault(_prim, _ufunc_emitter(_prim.impl.__name__))

WRITES_INTO = {P.matmul_p, P.logistic_p, P.relu_p} | UFUNCS
"""Primitives whose NumPy form takes an ``out=`` buffer."""


ALIASING = set(P.VIEWS) | {P.getitem_p}
"""Primitives whose NumPy result may share memory with their first input."""


def aliases(eqn, elided=frozenset()) -> bool:
    if eqn.prim in ALIASING or id(eqn) in elided:
        return True
    return eqn.prim.reduction and not eqn.attrs["axes"]


def elided(graph: Graph) -> set[int]:
    """Equations NumPy does for free inside the ufuncs that use their results, so they are
    skipped (their result is their input):

    - bool-to-float converts used only by multiplications (``g * mask`` converts in the loop);
    - broadcasts used only by elementwise ufuncs whose result has the same shape without them
      (NumPy broadcasts implicitly).
    """
    users: dict[int, list] = defaultdict(list)
    for eqn in graph.eqns:
        for atom in eqn.inputs:
            if isinstance(atom, Var):
                users[id(atom)].append(eqn)
    outputs = {id(a) for a in graph.outputs}
    elided = set()
    for eqn in graph.eqns:
        out = eqn.outputs[0]
        uses = users[id(out)]
        if id(out) in outputs or not uses:
            continue
        if (eqn.prim is P.convert_p and eqn.inputs[0].aval.dtype == np.bool_
                and out.aval.dtype.kind == "f" and all(u.prim is P.mul_p for u in uses)):
            elided.add(id(eqn))
        elif eqn.prim is P.broadcast_to_p and all(
                u.prim in UFUNCS and _shape_without(u, out, eqn.inputs[0])
                for u in uses):
            elided.add(id(eqn))
    return elided


def _shape_without(user, var, replacement) -> bool:
    """Whether `user` still has its output shape when `var` is replaced by `replacement`."""
    shapes = [replacement.aval.shape if a is var else a.aval.shape for a in user.inputs]
    return tuple(np.broadcast_shapes(*shapes)) == user.outputs[0].aval.shape
