"""Sums over a loop's steps taken after the loop: a carried accumulator that only adds up one
linear term per step becomes one reduction over the whole sequence.

Backpropagation through time sums a weight's gradient over the steps, ``dW ← dW + h_tᵀ dz_t``,
and a bias's, ``db ← db + Σ_batch dz_t``. In the loop that is one small product and one add of
a whole weight-sized array per step; after the loop it is one long product,

    Σ_t p_t q_t = [p_0 | … | p_{L−1}] @ [q_0 ; … ; q_{L−1}]      ((F, L·K) @ (L·K, N))

and one reduction ``Σ_t Σ_batch dz_t`` over the stacked terms: the loop stacks ``p_t`` and
``q_t`` as two more ys (or the rewrite reads them from the loop's own sequences, when they are
step inputs). Recognised, in any `scan` body (not an LSTM special case):

- a carried value ``acc`` read only by ``acc_new = acc + d`` (either order), ``acc_new``
  being only its next value, ``d`` of ``acc``'s shape and read by nothing else;
- ``d = p @ q`` of two 2-D values that vary with the step (``p`` may be ``aᵀ``: then ``a`` is
  stacked), or ``d = Σ_axes b``, or a basic index of either (``M[:, 0:256]``, the gates of
  `merge_matmuls`' one product) as long as every use of ``M`` is such an accumulated index.

The final value is ``acc_0 + Σ_t d_t``: the same terms, added in another order (exact up to
float rounding). A term that is not step-varying, or a product also used in the step, stays
in the loop.
"""
from __future__ import annotations

from collections import Counter

from flux.ir import primitives as P
from flux.ir.graph import Aval, Eqn, Graph, Var
from flux.ir.passes import dce, maybe_check
from flux.transforms.loop_lift import time_first

__all__ = ["sum_after_loops", "sum_after_loop"]


def sum_after_loops(graph: Graph) -> Graph:
    """`graph` with every loop's step sums taken after it (bodies first; `graph` is
    unchanged)."""
    eqns = []
    for eqn in graph.eqns:
        if eqn.prim is not P.scan_p:
            eqns.append(eqn)
            continue
        attrs = dict(eqn.attrs, body=sum_after_loops(eqn.attrs["body"]))
        eqn = Eqn(eqn.prim, eqn.inputs, eqn.outputs, attrs, eqn.source)
        eqns.extend(sum_after_loop(eqn) or [eqn])
    out = Graph(graph.inputs, graph.param_vars, graph.param_objs, graph.consts,
                graph.const_values, eqns, graph.outputs, graph.in_tree, graph.out_tree,
                graph.param_names, graph.carry_in, graph.carry_out)
    return maybe_check(dce(out))


class _Body:
    """What the rewrite needs to know of a loop body: producers, use counts, what varies."""

    def __init__(self, body: Graph, k: int):
        self.made = {id(o): e for e in body.eqns for o in e.outputs}
        self.uses = Counter(id(x) for e in body.eqns for x in e.inputs if isinstance(x, Var))
        self.uses.update(id(x) for x in body.outputs if isinstance(x, Var))
        fixed = {id(v) for v in body.inputs[:k]} | {id(v) for v in body.consts}
        for e in body.eqns:
            if e.prim is not P.scan_p and all(id(x) in fixed for x in e.inputs
                                              if isinstance(x, Var)):
                fixed.update(id(o) for o in e.outputs)
        self.fixed = fixed
        self.part_of = {}              # value -> (a concatenation of it, axis, offset there)
        for e in body.eqns:
            if e.prim is P.concatenate_p:
                start = 0
                for x in e.inputs:
                    if isinstance(x, Var):
                        self.part_of.setdefault(id(x), (e.outputs[0], e.attrs["axis"], start))
                    start += x.aval.shape[e.attrs["axis"]]

    def varies(self, atom) -> bool:
        return isinstance(atom, Var) and id(atom) not in self.fixed

    def term(self, d: Var):
        """``(base, index)``: `d` is ``base`` (a product or a sum of step values) or
        ``base[index]``; None when it is neither."""
        e, index = self.made.get(id(d)), None
        if e is not None and e.prim is P.getitem_p and P.is_basic_index(e.attrs["index"]):
            e, index = self.made.get(id(e.inputs[0])), e.attrs["index"]
        if e is None:
            return None
        if e.prim is P.matmul_p and all(self.varies(x) and x.aval.ndim == 2 for x in e.inputs):
            return e, index
        if e.prim is P.reduce_sum_p and self.varies(e.inputs[0]):
            return e, index
        return None


def _accumulators(body: Graph, k: int, m: int, info: _Body) -> dict:
    """carry position -> ``(term equation, index)`` for each accumulator that can move."""
    found, per_base = {}, Counter()
    for j in range(m):
        acc, new = body.inputs[k + j], body.outputs[j]
        e = info.made.get(id(new))
        if e is None or e.prim is not P.add_p or info.uses[id(acc)] != 1 \
                or info.uses[id(new)] != 1:
            continue
        others = [x for x in e.inputs if x is not acc]
        if len(others) != 1 or not isinstance(others[0], Var) or others[0].aval != acc.aval \
                or info.uses[id(others[0])] != 1:
            continue
        term = info.term(others[0])
        if term is not None:
            found[j] = term
            per_base[id(term[0])] += 1
    # a product or sum also used in the step itself stays there (else it would run twice)
    return {j: t for j, t in found.items()
            if info.uses[id(t[0].outputs[0])] == per_base[id(t[0])]}


def sum_after_loop(eqn: Eqn) -> list | None:
    """The equations replacing the scan `eqn`, its step sums taken after it (see the module
    docstring); None if it has none."""
    a = eqn.attrs
    body, k, m, length = a["body"], a["n_consts"], a["n_carry"], a["length"]
    info = _Body(body, k)
    moved = _accumulators(body, k, m, info)
    if not moved:
        return None
    steps = {id(v): (x, axis) for v, x, axis in
             zip(body.inputs[k + m:], eqn.inputs[k + m:], a["x_axes"])}
    new_ys: list[Var] = []               # step values the loop now stacks
    stacked: dict[int, Var] = {}         # step value -> its sequence outside, time first
    before: list = []                    # (the sequences made time-first, before the loop)

    def sequence(v: Var) -> Var:
        if id(v) not in stacked:
            whole, axis, start = info.part_of.get(id(v), (None, 0, 0))
            if id(v) in steps:
                stacked[id(v)] = time_first(*steps[id(v)], before, eqn.source)
            elif whole is not None and id(whole) in stacked:      # a slice of one stacked
                index = (slice(None),) * (axis + 1) + (slice(start, start + v.aval.shape[axis]),)
                stacked[id(v)] = emit(P.getitem_p, [stacked[id(whole)]], index=index)
            else:
                new_ys.append(v)
                stacked[id(v)] = Var(Aval((length,) + v.aval.shape, v.aval.dtype))
        return stacked[id(v)]

    after, sums = [], {}

    def emit(prim, ins, **attrs) -> Var:
        out = Var(prim.shape_rule(*[x.aval for x in ins], **attrs))
        after.append(Eqn(prim, ins, [out], attrs, eqn.source))
        return out

    # (products first: their stacked operands, merged gates, may hold the sums' as slices)
    for j, (e, index) in sorted(moved.items(), key=lambda kv: kv[1][0].prim is not P.matmul_p):
        if id(e) not in sums:
            sums[id(e)] = (_long_product(e, info, sequence, emit) if e.prim is P.matmul_p
                           else _long_sum(e, sequence, emit))
        total = sums[id(e)] if index is None else emit(P.getitem_p, [sums[id(e)]], index=index)
        after.append(Eqn(P.add_p, [eqn.inputs[k + j], total], [eqn.outputs[j]], {},
                         eqn.source))

    kept = [j for j in range(m) if j not in moved]
    adds = {id(info.made[id(body.outputs[j])]) for j in moved}
    inner = Graph(body.inputs[:k] + [body.inputs[k + j] for j in kept] + body.inputs[k + m:],
                  [], [], list(body.consts), list(body.const_values),
                  [e for e in body.eqns if id(e) not in adds],
                  [body.outputs[j] for j in kept] + list(body.outputs[m:]) + new_ys)
    attrs = dict(a, body=maybe_check(dce(inner)), n_carry=len(kept),
                 y_axes=tuple(a["y_axes"]) + (0,) * len(new_ys))
    operands = list(eqn.inputs[:k]) + [eqn.inputs[k + j] for j in kept] + list(eqn.inputs[k + m:])
    outputs = ([eqn.outputs[j] for j in kept] + list(eqn.outputs[m:]) +
               [stacked[id(v)] for v in new_ys])
    return before + [Eqn(P.scan_p, operands, outputs, attrs, eqn.source)] + after


def _long_product(e: Eqn, info: _Body, sequence, emit) -> Var:
    """``Σ_t p_t @ q_t`` as one ``(F, L·K) @ (L·K, N)`` product of the stacked steps."""
    p, q = e.inputs
    f, n = p.aval.shape[0], q.aval.shape[1]
    made = info.made.get(id(p))
    if made is not None and made.prim is P.transpose_p:         # p = aᵀ: stack a, (L, K, F)
        seq = sequence(made.inputs[0])
        left = emit(P.transpose_p, [emit(P.reshape_p, [seq], shape=(seq.aval.size // f, f))],
                    perm=(1, 0))
    else:                                                         # stack p, (L, F, K)
        seq = sequence(p)
        left = emit(P.reshape_p, [emit(P.transpose_p, [seq], perm=(1, 0, 2))],
                    shape=(f, seq.aval.size // f))
    right = emit(P.reshape_p, [sequence(q)], shape=(left.aval.shape[1], n))
    return emit(P.matmul_p, [left, right])


def _long_sum(e: Eqn, sequence, emit) -> Var:
    """``Σ_t Σ_axes b_t`` as one sum over the stacked steps' time axis and `axes`."""
    b = e.inputs[0]
    total = emit(P.reduce_sum_p, [sequence(b)],
                 axes=(0,) + tuple(ax + 1 for ax in e.attrs["axes"]),     # (axes ≥ 0 in the IR)
                 keepdims=e.attrs["keepdims"])
    if e.attrs["keepdims"]:
        total = emit(P.reshape_p, [total], shape=e.outputs[0].aval.shape)
    return total
