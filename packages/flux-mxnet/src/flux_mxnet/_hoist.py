"""Work lifted out of a loop before MXNet runs it: core's `flux.backends.lift_loop` (the
invariants and the per-step work that reads no carried value, such as an LSTM's ``x_t @ Wx*``,
computed over the whole sequence at once) with one MXNet-specific regrouping of what stays in
the body (`_regroup`: the step's ``h W + b`` as one FullyConnected).

`hoist(eqn)`: one scan as a graph over the scan's inputs (the lifted equations, then a scan
of the rest), or None when nothing moves.
"""
from __future__ import annotations

from collections import Counter

from flux.backends import lift_loop
from flux.ir import Eqn, Graph, Var, dce
from flux.ir import primitives as P

__all__ = ["hoist"]


def _regroup(kept, varying, consts, outputs) -> list:
    """`kept` with each ``(p + q) + b`` as ``p + (q + b)``, where p varies only with the step
    (a lifted ``x_t W``), q is a matrix product in the loop (``h W′``) and b a const vector (a
    gate's bias): then ``q + b`` is one FullyConnected in training executors, whose bias
    gradient is MKL-DNN's, not a broadcast's reduction at every step. (Rounding may differ in
    the last bit, as with any other order of the sums.)"""
    uses = Counter(id(x) for e in kept for x in e.inputs) + Counter(id(x) for x in outputs)
    made = {id(e.outputs[0]): e for e in kept}
    swap = {}                               # id(eqn) -> the eqn that replaces it
    for u in kept:
        if u.prim is not P.add_p:
            continue
        for t, b in (u.inputs, u.inputs[::-1]):
            first = made.get(id(t))
            if (first is None or first.prim is not P.add_p or uses[id(t)] != 1
                    or not isinstance(b, Var) or id(b) not in consts or b.aval.ndim != 1):
                continue
            for p, q in (first.inputs, first.inputs[::-1]):
                product = made.get(id(q))
                if (id(p) in varying and product is not None and product.prim is P.matmul_p
                        and p.aval == q.aval == t.aval == u.outputs[0].aval):
                    inner = Var(q.aval)
                    swap[id(first)] = Eqn(P.add_p, [q, b], [inner], {}, first.source)
                    swap[id(u)] = Eqn(P.add_p, [p, inner], u.outputs, {}, u.source)
                    break
            if id(u) in swap:
                break
    return [swap.get(id(e), e) for e in kept]


def hoist(eqn) -> Graph | None:
    """`eqn` (a scan) with its invariants and per-step work before the loop (core's
    `flux.backends.lift_loop`, with the bias adds regrouped for FullyConnected): a graph over
    the scan's inputs and outputs; None if nothing can move."""
    outer_in = [Var(atom.aval) for atom in eqn.inputs]
    outs = [Var(o.aval) for o in eqn.outputs]
    lifted = lift_loop(Eqn(P.scan_p, outer_in, outs, eqn.attrs, eqn.source), _regroup)
    if lifted is None:
        return None
    eqns, consts = lifted
    return dce(Graph(outer_in, [], [], [v for v, _ in consts], [c for _, c in consts], eqns,
                     outs))
