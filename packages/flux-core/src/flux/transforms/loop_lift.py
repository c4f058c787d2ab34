"""Work lifted out of loops: what a `scan` body computes without its carried values runs once,
before the loop, instead of once per step.

- *invariants* read only the loop's consts (and the body's constants): a gradient's transposed
  weight, merged weights; computed once and passed to the loop as consts;
- *per-step work* reads the step inputs (and consts, invariants) but no carried value, and is
  elementwise or a matrix product: an LSTM's ``x_t @ Wx*`` and bias adds, a gradient loop's
  ``1 − tanh²`` of stored values. It runs on the whole sequences, time axis first:
  ``[x_0 W, …, x_{L−1} W] = X W`` with ``X: (L, B, F)`` as one ``(L·B, F) @ (F, N)``
  product instead of L small ones, and its result enters the loop as one more sequence.

NumPy broadcasting aligns trailing axes, so a stacked operand lines up with the others only if
each step value has the result's rank: a per-step equation needs that of every operand that
varies with the step (a 0-d step value stays in the loop). Exact: the same operations on the
same numbers, only grouped by time.

`lift_loops(graph)` rewrites every loop of a graph (bodies first); `lift_loop(eqn)` one loop,
as the equations that replace it. A backend may pass `regroup`, a rewrite of the equations that
stay in the body (flux-mxnet regroups bias adds for its FullyConnected).
"""
from __future__ import annotations

from flux.ir import primitives as P
from flux.ir.graph import Aval, Eqn, Graph, Literal, Var
from flux.ir.passes import dce, maybe_check

__all__ = ["lift_loops", "lift_loop", "time_first"]


def lift_loops(graph: Graph, regroup=None) -> Graph:
    """`graph` with the loop-free work of every loop body lifted out (`graph` is unchanged)."""
    eqns = []
    consts, values = list(graph.consts), list(graph.const_values)
    for eqn in graph.eqns:
        if eqn.prim is not P.scan_p:
            eqns.append(eqn)
            continue
        body = lift_loops(eqn.attrs["body"], regroup)
        eqn = Eqn(eqn.prim, eqn.inputs, eqn.outputs, dict(eqn.attrs, body=body), eqn.source)
        lifted = lift_loop(eqn, regroup)
        if lifted is None:
            eqns.append(eqn)
            continue
        eqns.extend(lifted[0])
        for var, value in lifted[1]:   # the body's constants, now read outside it too
            if all(var is not c for c in consts):
                consts.append(var)
                values.append(value)
    out = Graph(graph.inputs, graph.param_vars, graph.param_objs, consts, values, eqns,
                graph.outputs, graph.in_tree, graph.out_tree, graph.param_names,
                graph.carry_in, graph.carry_out)
    return maybe_check(dce(out))


def _per_step(eqn, varying) -> bool:
    """Whether `eqn`, reading some step-varying values, computes the same on them stacked."""
    if not (eqn.prim.elementwise or eqn.prim is P.matmul_p):
        return False
    if eqn.prim is P.matmul_p and (id(eqn.inputs[1]) in varying or eqn.inputs[1].aval.ndim != 2):
        return False               # (only ``x_t @ W``: a stacked left operand, a fixed right)
    rank = eqn.outputs[0].aval.ndim
    return rank > 0 and all(a.aval.ndim == rank for a in eqn.inputs if id(a) in varying)


def lift_loop(eqn: Eqn, regroup=None) -> tuple[list, list] | None:
    """``(equations, constants)``: the equations replacing the scan `eqn` (its invariants and
    per-step work, then a scan of the rest, see the module docstring) and the ``(Var, value)``
    constants of its body they read; None if nothing can move."""
    a = eqn.attrs
    body, k, m, length = a["body"], a["n_consts"], a["n_carry"], a["length"]
    consts = {id(v) for v in body.inputs[:k]} | {id(v) for v in body.consts}
    varying = {id(v) for v in body.inputs[k + m:]}        # values of step inputs only
    lifted, kept = [], []
    for e in body.eqns:
        reads = [x for x in e.inputs if isinstance(x, Var)]
        if e.prim is not P.scan_p and all(id(x) in consts for x in reads):
            lifted.append(e)
            consts.update(id(o) for o in e.outputs)
        elif all(id(x) in consts or id(x) in varying for x in reads) and _per_step(e, varying):
            lifted.append(e)
            varying.update(id(o) for o in e.outputs)
        else:
            kept.append(e)
    if not lifted:
        return None
    if regroup is not None:
        kept = regroup(kept, varying, consts, body.outputs)

    outer = dict(zip(map(id, body.inputs[:k]), eqn.inputs[:k]))    # body value -> outer value
    outer.update((id(var), var) for var in body.consts)
    stacked: dict[int, Var] = {}      # step value -> its sequence, time first
    eqns: list = []
    for var, x, axis in zip(body.inputs[k + m:], eqn.inputs[k + m:], a["x_axes"]):
        if id(var) in {id(i) for e in lifted for i in e.inputs}:
            stacked[id(var)] = time_first(x, axis, eqns, eqn.source)
    for e in lifted:
        ins = [x if isinstance(x, Literal) else stacked[id(x)] if id(x) in stacked
               else outer[id(x)] for x in e.inputs]
        if any(id(x) in stacked for x in e.inputs if isinstance(x, Var)):
            outs = [Var(Aval((length,) + o.aval.shape, o.aval.dtype)) for o in e.outputs]
            stacked.update(zip(map(id, e.outputs), outs))
            if e.prim is P.matmul_p:
                eqns.extend(_long_product(ins, outs[0], e.source))
                continue
        else:
            outs = [Var(o.aval) for o in e.outputs]
            outer.update(zip(map(id, e.outputs), outs))
        eqns.append(Eqn(e.prim, ins, outs, e.attrs, e.source))
    # what the loop still reads of the lifted values: more consts, more sequences
    used = {id(x) for e in kept for x in e.inputs} | {id(x) for x in body.outputs}
    computed = [o for e in lifted for o in e.outputs]
    new_consts = [v for v in computed if id(v) in used and id(v) in outer]
    new_steps = [v for v in computed if id(v) in used and id(v) in stacked]
    inner = Graph(body.inputs[:k] + new_consts + body.inputs[k:] + new_steps, [], [],
                  list(body.consts), list(body.const_values), kept, list(body.outputs))
    attrs = dict(a, body=maybe_check(dce(inner)), n_consts=k + len(new_consts),
                 x_axes=tuple(a["x_axes"]) + (0,) * len(new_steps))
    operands = (list(eqn.inputs[:k]) + [outer[id(v)] for v in new_consts] +
                list(eqn.inputs[k:]) + [stacked[id(v)] for v in new_steps])
    eqns.append(Eqn(P.scan_p, operands, eqn.outputs, attrs, eqn.source))
    read = {id(x) for e in eqns for x in e.inputs}
    return eqns, [(v, c) for v, c in zip(body.consts, body.const_values) if id(v) in read]


def time_first(x, axis: int, eqns: list, source):
    """`x` (a loop's sequence, time along `axis`) with time as its first axis."""
    if not axis:
        return x
    perm = (axis,) + tuple(d for d in range(x.aval.ndim) if d != axis)
    front = Var(P.transpose_p.shape_rule(x.aval, perm=perm))
    eqns.append(Eqn(P.transpose_p, [x], [front], {"perm": perm}, source))
    return front


def _long_product(ins, out: Var, source) -> list:
    """``X @ W`` for a stacked ``X: (L, …, F)`` as one ``(L·…, F) @ (F, N)`` product."""
    x, w = ins
    rows = out.aval.size // out.aval.shape[-1]
    flat = Var(Aval((rows, x.aval.shape[-1]), x.aval.dtype))
    product = Var(Aval((rows, w.aval.shape[-1]), out.aval.dtype))
    return [Eqn(P.reshape_p, [x], [flat], {"shape": flat.aval.shape}, source),
            Eqn(P.matmul_p, [flat, w], [product], {}, source),
            Eqn(P.reshape_p, [product], [out], {"shape": out.aval.shape}, source)]
