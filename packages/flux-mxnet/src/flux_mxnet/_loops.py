"""The loop rule of `RULES`: `scan` as MXNet's ``mx.sym.contrib.foreach`` over its body.

``carry_out…, ys… = scan(c…, h…, xs…; body, …)`` becomes::

    ys′, carry_out = foreach(step, [front(x) for x in xs], [h…])
    step(x_t, h_t) = body(c, h_t, x_t)          # the body graph lowered once, ops e<i>_scan_…

foreach slices its data along axis 0 and stacks each step's outputs along axis 0, forwards
only: `front` moves each x's time axis to axis 0 (a transpose) and, for ``reverse``, reverses
it (``mx.sym.reverse``), so foreach's step s is the scan's step ``length − 1 − s``; the stacked
ys are reversed back and their axis 0 moved to `y_axes`. The consts are symbols the step
captures (foreach makes them inputs of its subgraph, so MXNet's backward reaches the
Params). MXNet's autograd differentiates foreach; flux's own gradient graphs hold a reverse
scan, lowered the same way. Loops nest: a scan in the body is lowered by this rule inside the
step (its operators ``e<i>_scan_e<j>_scan_…``).

Before the loop: what the body computes without the carried values (`flux_mxnet._hoist`: the
invariants, and the per-step products ``x_t W`` as one product over the whole sequence), and,
in training executors, the transposed weights of the step's FullyConnected operators, so no
step re-makes them.

foreach asserts that its step reads every data slice and every state; the rule keeps what
the body reads: a carried value the body never reads becomes a y (its final value the last
step's), a sequence it never reads is left out, and a loop reading none gets a dummy
sequence of zeros. A 0-d step value is MXNet's ``(1,)`` (legacy MXNet has no 0-d arrays): a
sequence of them runs as ``(length, 1)``.
"""
from __future__ import annotations

import dataclasses

import mxnet as mx

from flux.backends import affine_adds
from flux.ir import Eqn, Var, dce
from flux.ir import primitives as P

from ._hoist import hoist

__all__ = ["LOOP_RULES"]

S = mx.sym


def _read(body) -> list[bool]:
    """Which inputs of `body` (without dead equations) it reads."""
    live = {id(a) for a in body.outputs if isinstance(a, Var)}
    for eqn in reversed(body.eqns):
        if any(id(o) in live for o in eqn.outputs):
            live.update(id(a) for a in eqn.inputs if isinstance(a, Var))
    return [id(v) in live for v in body.inputs]


def _front(r, x, aval, axis, reverse, i):
    """Sequence `x` (flux `aval`) with its time axis first (reversed for `reverse`), a 0-d step
    as ``(1,)``: what foreach slices."""
    if axis:
        perm = (axis,) + tuple(a for a in range(aval.ndim) if a != axis)
        x = S.transpose(x, axes=perm, name=r.sub(f"x{i}_front"))
    if aval.ndim == 1:
        x = S.reshape(x, shape=(-1, 1), name=r.sub(f"x{i}_col"))
    if reverse:
        x = S.reverse(x, axis=0, name=r.sub(f"x{i}_rev"))
    return x


def _distinct(r, syms) -> list:
    """`syms` with each repeat (one symbol as two loop inputs) copied under a name of its own:
    foreach names its subgraph's inputs after theirs, and those must differ."""
    seen, out = set(), []
    for i, sym in enumerate(syms):
        key = (sym.name, sym.attr("_value_index"))
        if key in seen:
            sym = S.identity(sym, name=r.sub(f"in{i}_"))
        seen.add(key)
        out.append(sym)
    return out


def _back(r, y, aval, axis, reverse, j):
    """Foreach's stack of the step values of flux `aval` (step s at row s) as the scan's y:
    reversed back for `reverse`, axis 0 moved to `axis`."""
    if reverse:
        y = S.reverse(y, axis=0, name=r.sub(f"y{j}_rev"))
    if not aval.shape:
        y = S.reshape(y, shape=(-1,), name=r.sub(f"y{j}_flat"))
    if axis:
        perm = tuple(range(1, axis + 1)) + (0,) + tuple(range(axis + 1, aval.ndim + 1))
        y = S.transpose(y, axes=perm, name=r.sub(f"y{j}_place"))
    return y


def _scan(r, *ins, body, length, n_consts, n_carry, x_axes, y_axes, reverse):
    k, m = n_consts, n_carry
    consts, carry, xs = ins[:k], ins[k:k + m], ins[k + m:]
    body = dce(dataclasses.replace(body))      # (a copy: dce sets its equations)
    lifted = hoist(Eqn(P.scan_p, r.eqn.inputs, r.eqn.outputs, dict(r.eqn.attrs, body=body)))
    if lifted is not None:                        # work before the loop, then a smaller loop
        return r.body(lifted, list(ins), [r.const(v) for v in lifted.const_values])
    read = _read(body)
    states = [j for j in range(m) if read[k + j]]       # the carries foreach carries
    data = [i for i in range(len(xs)) if read[k + m + i]]
    x_atoms = r.eqn.inputs[k + m:]
    seqs = [_front(r, xs[i], x_atoms[i].aval, x_axes[i], reverse, i) for i in data]
    if not seqs:                                        # foreach takes its length from data
        seqs = [S.zeros(shape=(length, 1), name=r.sub("steps"))]
    loop_ins = _distinct(r, seqs + [carry[j] for j in states])
    seqs, inits = loop_ins[:len(seqs)], loop_ins[len(seqs):]
    body_consts = [r.const(value) for value in body.const_values]
    if r.fuses_affine():        # the FullyConnected weights of the step, made before the loop
        for product, _ in affine_adds(body).values():
            w = body.eqns[product].inputs[1]
            for i in (i for i in range(k) if body.inputs[i] is w):
                r.transposed(consts[i])
    dropped = [j for j in range(m) if not read[k + j]]   # carries the body only writes

    def step(slices, hs):
        given = dict(zip((k + m + i for i in data), slices))
        given.update(zip((k + j for j in states), hs))
        inputs = [consts[i] if i < k else given.get(i) for i in range(len(body.inputs))]
        with r.step():
            fixed = [r.fixed(c) for c in body_consts]       # (see `Rule.const`)
            outs = r.body(body, inputs, fixed)
        seen = list(slices) + list(hs) + list(consts) + fixed
        for n, out in enumerate(outs):                  # foreach's outputs: fresh symbols
            if any(out is s for s in seen):
                outs[n] = S.identity(out, name=r.sub(f"out{n}_"))
            seen.append(outs[n])
        ys = [outs[j] for j in dropped] + outs[m:]
        if len(data) < len(slices):                     # the dummy sequence, read
            ys.append(S.identity(slices[0], name=r.sub("steps_read")))
        return ys, [outs[j] for j in states]

    stacked, finals = mx.sym.contrib.foreach(step, seqs, inits, name=r.name)
    stacked, finals = list(stacked), list(finals)
    result = [None] * m
    for j, final in zip(states, finals):
        result[j] = final
    for n, j in enumerate(dropped):                     # the last step's value
        last = S.slice_axis(stacked[n], axis=0, begin=length - 1, end=length,
                            name=r.sub(f"h{j}_last"))
        result[j] = S.reshape(last, shape=tuple(body.outputs[j].aval.shape) or (1,),
                              name=r.sub(f"h{j}_final"))
    ys = stacked[len(dropped):len(dropped) + len(y_axes)]
    out_avals = [a.aval for a in body.outputs[m:]]
    return result + [_back(r, y, aval, axis, reverse, j)
                     for j, (y, aval, axis) in enumerate(zip(ys, out_avals, y_axes))]


LOOP_RULES = {P.scan_p: _scan}
"""`scan` -> its foreach rule (a multiple-results rule: one symbol per output)."""
