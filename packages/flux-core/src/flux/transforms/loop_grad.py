"""The gradient of `scan`: backpropagation through time as a scan running the other way.

For a loop whose body is ``(h′, y) = f(c, h, x)`` (consts c, carried h, step input x), the
gradient graph's forward pass runs a scan of the body that also stacks, step by step, the
intermediate values the body's backward pass reads (its *residuals*). The backward pass is a
scan in the opposite direction whose body is the body's own backward pass (autodiff of the
body graph): it carries the cotangent of h and the running sum of the consts' cotangents (a
Param's gradient is the sum over steps), and takes each step's cotangent of y and residuals::

    (h̄_t, Σc̄ + c̄_t), x̄_t = f_backward(c, h̄_{t+1}, Σc̄, ȳ_t, r_t)

Residuals are the forward body's values computed from the step's carried values or inputs
that the backward body uses; values computed from the consts only (a transposed weight) are
recomputed by the backward body rather than stored ``length`` times, and the step inputs are
read from the loop's own input sequences rather than copied.
"""
from __future__ import annotations

from flux.ir import primitives as P
from flux.ir.graph import Aval, Eqn, Graph, Literal, Var
from flux.ir.passes import dce, maybe_check
from flux.ir.primitives.loop import scan_p, scan_parts

__all__ = ["scan_split"]


def _float(var) -> bool:
    return var.aval.dtype.kind in "fc"


def _inputs_reaching(body: Graph) -> list[set]:
    """For each output of `body`, the positions of the body inputs it depends on."""
    deps = {id(v): {i} for i, v in enumerate(body.inputs)}
    for eqn in body.eqns:
        reach = set().union(*(deps.get(id(a), set()) for a in eqn.inputs))
        for out in eqn.outputs:
            deps[id(out)] = reach
    return [deps.get(id(a), set()) if isinstance(a, Var) else set() for a in body.outputs]


def _active_inputs(body: Graph, active: list, n_consts: int, n_carry: int) -> list[bool]:
    """Which body inputs need a gradient: the loop's active operands, and every float carried
    value that an active value reaches at some step (a fixed point over the carries)."""
    flags = [a and _float(v) for a, v in zip(active, body.inputs)]
    reaching = _inputs_reaching(body)
    changed = True
    while changed:
        changed = False
        live = {i for i, f in enumerate(flags) if f}
        for j in range(n_carry):
            i = n_consts + j
            if not flags[i] and _float(body.inputs[i]) and reaching[j] & live:
                flags[i] = changed = True
    return flags


def _zeros(aval: Aval):
    return P.broadcast_to_p(Literal(0, aval.dtype), shape=aval.shape)


def scan_split(vjp, ins, active, *, body, length, n_consts, n_carry, x_axes, y_axes, reverse):
    """``(outputs, pullback)`` for an active scan: the outputs come from a scan that also
    stacks the residuals; ``pullback(cts)`` (one cotangent or None per output) binds the
    reverse scan and returns one cotangent or None per input. `vjp` is autodiff's."""
    k, m = n_consts, n_carry
    n_in, n_out = len(body.inputs), len(body.outputs)
    flags = _active_inputs(body, active, k, m)
    joint = vjp(body, wrt_inputs=flags, wrt_params=False)
    primal, cts = joint.inputs[:n_in], joint.inputs[n_in:]
    grads = dict(zip([i for i, f in enumerate(flags) if f], joint.outputs[n_out:]))

    # which values change step by step (forward) and which belong to the backward pass
    varying, backward = {id(v) for v in primal[k:]}, {id(v) for v in cts}
    for eqn in joint.eqns:
        used = [id(a) for a in eqn.inputs if isinstance(a, Var)]
        if any(u in backward for u in used):
            backward.update(id(o) for o in eqn.outputs)
        elif any(u in varying for u in used):
            varying.update(id(o) for o in eqn.outputs)
    forward_eqns = [e for e in joint.eqns if id(e.outputs[0]) not in backward]
    # views of the step's values (a transposed h_t) are recomputed, not stored
    views = {id(e) for e in forward_eqns if e.prim.view and id(e.outputs[0]) in varying}
    backward_eqns = [e for e in joint.eqns if id(e.outputs[0]) in backward
                     or id(e.outputs[0]) not in varying or id(e) in views]
    producer = {id(o): e for e in joint.eqns for o in e.outputs}

    residuals: list = []
    chosen: set[int] = set()

    def keep(atom):
        if not isinstance(atom, Var) or id(atom) not in varying or id(atom) in backward \
                or id(atom) in chosen:
            return
        chosen.add(id(atom))
        made = producer.get(id(atom))
        if made is not None and id(made) in views:
            for inner in made.inputs:
                keep(inner)
        else:
            residuals.append(atom)

    for eqn in joint.eqns:
        if id(eqn.outputs[0]) in backward:
            for atom in eqn.inputs:
                keep(atom)
    for atom in grads.values():
        keep(atom)
    step_inputs = {id(v): i for i, v in enumerate(primal[k + m:])}
    stored = [r for r in residuals if id(r) not in step_inputs]

    consts, h0, xs = scan_parts(ins, k, m)
    fwd_body = _closed(primal, forward_eqns, list(joint.outputs[:n_out]) + stored, joint)
    outs = scan_p(*ins, body=fwd_body, length=length, n_consts=k, n_carry=m, x_axes=x_axes,
                  y_axes=tuple(y_axes) + (0,) * len(stored), reverse=reverse)
    results, stacks = outs[:n_out], dict(zip(map(id, stored), outs[n_out:]))

    carries = [j for j in range(m) if flags[k + j]]
    summed = [i for i in range(k) if flags[i]]
    steps = [i for i in range(len(xs)) if flags[k + m + i]]
    acc = [Var(primal[i].aval) for i in summed]
    sums = []
    for var, i in zip(acc, summed):
        total = Var(var.aval)
        backward_eqns.append(Eqn(P.add_p, [var, grads[i]], [total], {}))
        sums.append(total)
    ct_ys = [j for j in range(n_out - m) if _float(body.outputs[m + j])]
    bwd_inputs = (list(primal[:k]) + [cts[j] for j in carries] + acc +
                  [cts[m + j] for j in ct_ys] + residuals)
    bwd_outputs = ([grads[k + j] for j in carries] + sums + [grads[k + m + i] for i in steps])
    bwd_body = _closed(bwd_inputs, backward_eqns, bwd_outputs, joint)
    res_axes = tuple(x_axes[step_inputs[id(r)]] if id(r) in step_inputs else 0
                     for r in residuals)

    def pullback(gs):
        ct_carry = [gs[j] if gs[j] is not None else _zeros(h0[j].aval) for j in carries]
        ct_seq = [gs[m + j] if gs[m + j] is not None else _zeros(results[m + j].aval)
                  for j in ct_ys]
        res = [xs[step_inputs[id(r)]] if id(r) in step_inputs else stacks[id(r)]
               for r in residuals]
        back = scan_p(*consts, *ct_carry, *(_zeros(consts[i].aval) for i in summed), *ct_seq,
                      *res, body=bwd_body, length=length, n_consts=k,
                      n_carry=len(carries) + len(summed),
                      x_axes=tuple(y_axes[j] for j in ct_ys) + res_axes,
                      y_axes=tuple(x_axes[i] for i in steps), reverse=not reverse)
        in_cts = [None] * len(ins)
        for j, ct in zip(carries, back[:len(carries)]):
            in_cts[k + j] = ct
        for i, ct in zip(summed, back[len(carries):len(carries) + len(summed)]):
            in_cts[i] = ct
        for i, ct in zip(steps, back[len(carries) + len(summed):]):
            in_cts[k + m + i] = ct
        return in_cts

    return results, pullback


def _closed(inputs: list, eqns: list, outputs: list, joint: Graph) -> Graph:
    """A body graph over `inputs` with those of `eqns` that `outputs` need (and the joint
    graph's constants they use)."""
    graph = Graph(list(inputs), [], [], list(joint.consts), list(joint.const_values),
                  list(eqns), list(outputs))
    return maybe_check(dce(graph))
