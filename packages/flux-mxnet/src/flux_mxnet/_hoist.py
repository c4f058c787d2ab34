"""Work lifted out of a loop: the equations of a `scan` body that read no carried value, run
once before the loop instead of at every step.

- *invariants* read only the consts (and the body's constants): a gradient's transposed
  weight, computed once and passed to the loop as a const;
- *per-step work* reads the step inputs (and consts, invariants) but no carried value and is
  elementwise or a matrix product: the ``x_t W`` of each LSTM gate. It runs on the whole
  sequences, time axis first: ``[x_0 W, …, x_{L−1} W] = X W`` with ``X: (L, B, F)``, one
  ``(L·B, F) @ (F, N)`` product instead of L small ones, and its result is passed to the loop
  as one more sequence (time axis 0).

NumPy broadcasting aligns trailing axes, so a stacked operand lines up with the others only
if each step value has the result's rank: a per-step equation needs that of every operand
that varies with the step (a 0-d step value stays in the loop). MXNet's foreach then runs
only what needs the carried values, and MXNet's backward differentiates the lifted products
as the big products they are.

`hoist(eqn)`: one scan as a graph over the scan's inputs (the lifted equations, then a scan
of the rest), or None when nothing moves.
"""
from __future__ import annotations

from collections import Counter

from flux.ir import Aval, Eqn, Graph, Literal, Var, dce
from flux.ir import primitives as P

__all__ = ["hoist"]


def _per_step(eqn, varying) -> bool:
    """Whether `eqn`, reading some step-varying values, computes the same on them stacked."""
    if not (eqn.prim.elementwise or eqn.prim is P.matmul_p):
        return False
    rank = eqn.outputs[0].aval.ndim
    return rank > 0 and all(a.aval.ndim == rank for a in eqn.inputs if id(a) in varying)


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
    """`eqn` (a scan) with its invariants and per-step work before the loop (see the module
    docstring): a graph with the scan's inputs and outputs; None if nothing can move."""
    a = eqn.attrs
    body, k, m, length = a["body"], a["n_consts"], a["n_carry"], a["length"]
    consts = {id(v) for v in body.inputs[:k]} | {id(v) for v in body.consts}
    varying = {id(v) for v in body.inputs[k + m:]}        # values of step inputs only
    lifted, kept = [], []
    for e in body.eqns:
        reads = [x for x in e.inputs if isinstance(x, Var)]
        if all(id(x) in consts for x in reads):
            lifted.append(e)
            consts.update(id(o) for o in e.outputs)
        elif all(id(x) in consts or id(x) in varying for x in reads) and _per_step(e, varying):
            lifted.append(e)
            varying.update(id(o) for o in e.outputs)
        else:
            kept.append(e)
    if not lifted:
        return None
    kept = _regroup(kept, varying, consts, body.outputs)

    outer_in = [Var(atom.aval) for atom in eqn.inputs]
    outer = dict(zip(map(id, body.inputs[:k]), outer_in[:k]))      # body value -> outer value
    outer.update(zip(map(id, body.consts), body.consts))
    stacked = {}                     # step value -> its sequence, time first (unused ones: dce)
    eqns = []
    step_inputs = body.inputs[k + m:]
    for var, x, axis in zip(step_inputs, outer_in[k + m:], a["x_axes"]):
        if axis:
            perm = (axis,) + tuple(d for d in range(x.aval.ndim) if d != axis)
            front = Var(P.transpose_p.shape_rule(x.aval, perm=perm))
            eqns.append(Eqn(P.transpose_p, [x], [front], {"perm": perm}))
            x = front
        stacked[id(var)] = x
    for e in lifted:
        ins = [x if isinstance(x, Literal) else stacked[id(x)] if id(x) in stacked
               else outer[id(x)] for x in e.inputs]
        if any(id(x) in stacked for x in e.inputs):
            outs = [Var(Aval((length,) + o.aval.shape, o.aval.dtype)) for o in e.outputs]
            stacked.update(zip(map(id, e.outputs), outs))
        else:
            outs = [Var(o.aval) for o in e.outputs]
            outer.update(zip(map(id, e.outputs), outs))
        eqns.append(Eqn(e.prim, ins, outs, e.attrs, e.source))
    # what the loop still reads of the lifted values: more consts, more sequences
    used = {id(x) for e in kept for x in e.inputs} | {id(x) for x in body.outputs}
    computed = [o for e in lifted for o in e.outputs] + list(body.consts)
    new_consts = [v for v in computed if id(v) in used and id(v) in outer]
    new_steps = [v for v in computed if id(v) in used and id(v) in stacked]
    inner = Graph(body.inputs[:k] + new_consts + body.inputs[k:] + new_steps, [], [], [], [],
                  kept, list(body.outputs))
    attrs = dict(a, body=inner, n_consts=k + len(new_consts),
                 x_axes=tuple(a["x_axes"]) + (0,) * len(new_steps))
    outs = [Var(o.aval) for o in eqn.outputs]
    operands = (outer_in[:k] + [outer[id(v)] for v in new_consts] + outer_in[k:] +
                [stacked[id(v)] for v in new_steps])
    eqns.append(Eqn(P.scan_p, operands, outs, attrs, eqn.source))
    return dce(Graph(outer_in, [], [], list(body.consts), list(body.const_values), eqns, outs))

