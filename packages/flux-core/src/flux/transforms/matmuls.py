"""Matmul batching: products that share an operand become one product of concatenations.

A graph pass over any graph (forward, gradient, loop bodies), exact up to float rounding (each
entry of a product is the same sum of the same products), in three rewrites:

- **shared left operand**: ``y_i = a @ B_i`` (k ≥ 2 products, each B_i of rank 2 with the same
  rows) becomes ``Y = a @ [B_1 | … | B_k]`` and ``y_i = Y[..., o_i : o_i + n_i]``: an LSTM's
  ``x @ Wxf, x @ Wxi, x @ Wxo, x @ Wxc`` (and ``prev(y) @ Wy*``) are one product, and so are
  its gradient's ``xᵀ @ dz_i``;
- **sum of products**: ``Σ_i p_i @ q_i`` (an addition tree whose leaves are products used only
  there, q_i of rank 2) becomes ``[p_1 | … | p_k] @ [q_1 ; … ; q_k]``: the gradient of a shared
  operand, ``Σ_i dz_i @ W_iᵀ``;
- **loop invariants out of loops** (`flux.transforms.loop_lift`): in a `scan` body, what
  depends only on the loop's consts (the concatenated weights, their transposes) is computed
  once, before the loop, and passed in as a const; so the merged weights cost one copy per
  call, not one per step.

Repeated views (the same transpose of the same value, which autodiff makes once per use) are
merged first, so that the products above are seen to share their operand, and repeated
computations (the same concatenation made by both rewrites) after. Nothing depends on
what the model is: any graph whose equations have these shapes is rewritten.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from flux.ir import primitives as P
from flux.ir.graph import Aval, Eqn, Graph, Literal, Var
from flux.ir.passes import dce, maybe_check
from flux.transforms.loop_lift import lift_loops

__all__ = ["merge_matmuls"]


def merge_matmuls(graph: Graph) -> Graph:
    """`graph` with its matmuls batched (see the module docstring); `graph` is unchanged."""
    eqns = [_with_bodies(e) for e in graph.eqns]
    eqns = _repeats(eqns, graph.outputs, views_only=True)
    eqns = _sums_of_products(_shared_left(eqns, graph.outputs), graph.outputs)
    eqns = _repeats(eqns, graph.outputs)       # (both rewrites may join the same values)
    out = Graph(graph.inputs, graph.param_vars, graph.param_objs, graph.consts,
                graph.const_values, eqns, graph.outputs, graph.in_tree, graph.out_tree,
                graph.param_names, graph.carry_in, graph.carry_out)
    return lift_loops(maybe_check(dce(out)))


def _with_bodies(eqn: Eqn) -> Eqn:
    if eqn.prim is not P.scan_p:
        return eqn
    attrs = dict(eqn.attrs, body=merge_matmuls(eqn.attrs["body"]))
    return Eqn(eqn.prim, eqn.inputs, eqn.outputs, attrs, eqn.source)


# -- repeated equations ---------------------------------------------------------------------------


def _repeats(eqns: list, outputs: list, views_only: bool = False) -> list:
    """One equation per distinct computation (same primitive, inputs and attributes; loops
    excluded), or per distinct view only."""
    seen: dict = {}
    same: dict[int, Var] = {}
    kept = []
    returned = {id(a) for a in outputs}
    for eqn in eqns:
        eqn = _renamed(eqn, same)
        if eqn.prim is not P.scan_p and (eqn.prim.view or not views_only) \
                and not eqn.prim.multiple_results:
            key = (eqn.prim, tuple(id(a) if isinstance(a, Var) else ("lit", a.value.item())
                                   for a in eqn.inputs), _attrs_key(eqn.attrs))
            first = seen.get(key)
            if first is not None and id(eqn.outputs[0]) not in returned:
                same[id(eqn.outputs[0])] = first
                continue
            seen[key] = eqn.outputs[0]
        kept.append(eqn)
    return kept


def _attrs_key(attrs: dict) -> tuple:
    """Attributes as a key: arrays (in index tuples) by identity, anything else by its repr."""
    def key(v):
        if isinstance(v, np.ndarray):
            return ("array", id(v))
        if isinstance(v, tuple):
            return tuple(key(x) for x in v)
        return repr(v)
    return tuple((k, key(v)) for k, v in sorted(attrs.items()))


def _renamed(eqn: Eqn, same: dict) -> Eqn:
    if not any(isinstance(a, Var) and id(a) in same for a in eqn.inputs):
        return eqn
    inputs = [same.get(id(a), a) if isinstance(a, Var) else a for a in eqn.inputs]
    return Eqn(eqn.prim, inputs, eqn.outputs, eqn.attrs, eqn.source)


# -- shared left operand --------------------------------------------------------------------------


def _uses(eqns: list, outputs: list) -> dict[int, list[int]]:
    """Var id -> positions of the equations using it (graph outputs at len(eqns))."""
    uses: dict[int, list[int]] = defaultdict(list)
    for i, eqn in enumerate(eqns):
        for atom in eqn.inputs:
            if isinstance(atom, Var):
                uses[id(atom)].append(i)
    for atom in outputs:
        if isinstance(atom, Var):
            uses[id(atom)].append(len(eqns))
    return uses


def _shared_left(eqns: list, outputs: list) -> list:
    defined = {id(v): i for i, e in enumerate(eqns) for v in e.outputs}
    uses = _uses(eqns, outputs)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, eqn in enumerate(eqns):
        if eqn.prim is P.matmul_p and isinstance(eqn.inputs[0], Var) and \
                isinstance(eqn.inputs[1], Var) and eqn.inputs[1].aval.ndim == 2:
            b = eqn.inputs[1].aval
            groups[(id(eqn.inputs[0]), b.shape[0], b.dtype)].append(i)
    replaced: dict[int, list] = {}      # position -> the equations placed there
    removed: set[int] = set()
    for members in groups.values():
        chosen, first_use = [], len(eqns) + 1
        for i in members:
            ready = max(defined.get(id(eqns[j].inputs[1]), -1) for j in chosen + [i])
            use = min([first_use] + uses[id(eqns[i].outputs[0])])
            if ready < use:
                chosen, first_use = chosen + [i], use
        if len(chosen) < 2:
            continue
        at = max(defined.get(id(eqns[j].inputs[1]), -1) for j in chosen) + 1
        at = max(at, min(chosen))
        replaced.setdefault(at, []).extend(_one_product([eqns[j] for j in chosen]))
        removed.update(chosen)
    if not removed:
        return eqns
    result = []
    for i, eqn in enumerate(eqns):
        result.extend(replaced.get(i, ()))
        if i not in removed:
            result.append(eqn)
    result.extend(replaced.get(len(eqns), ()))
    return result


def _one_product(products: list) -> list:
    """``a @ B_i`` for each product, as one product and its slices."""
    a, source = products[0].inputs[0], products[0].source
    rights = [e.inputs[1] for e in products]
    rows, dtype = rights[0].aval.shape[0], rights[0].aval.dtype
    width = sum(b.aval.shape[1] for b in rights)
    joined = Var(Aval((rows, width), dtype))
    whole = Var(Aval(products[0].outputs[0].aval.shape[:-1] + (width,), dtype))
    made = [Eqn(P.concatenate_p, rights, [joined], {"axis": 1}, source),
            Eqn(P.matmul_p, [a, joined], [whole], {}, source)]
    start, lead = 0, (slice(None),) * (whole.aval.ndim - 1)
    for eqn, b in zip(products, rights):
        stop = start + b.aval.shape[1]
        made.append(Eqn(P.getitem_p, [whole], eqn.outputs, {"index": lead + (slice(start, stop),)},
                        eqn.source))
        start = stop
    return made


# -- sums of products -----------------------------------------------------------------------------


def _sums_of_products(eqns: list, outputs: list) -> list:
    uses = _uses(eqns, outputs)
    maker = {id(v): e for e in eqns for v in e.outputs}

    def single(var) -> bool:
        return isinstance(var, Var) and len(uses[id(var)]) == 1

    def leaves(eqn, inner: list) -> list:
        found = []
        for atom in eqn.inputs:
            child = maker.get(id(atom)) if single(atom) else None
            if child is not None and child.prim is P.add_p and _same_shape(child):
                inner.append(child)
                found += leaves(child, inner)
            else:
                found.append(atom)
        return found

    replace: dict[int, list] = {}
    removed: set[int] = set()
    for eqn in eqns:
        if eqn.prim is not P.add_p or not _same_shape(eqn) or id(eqn) in removed:
            continue
        if single(eqn.outputs[0]) and maker.get(id(eqn.outputs[0])) is eqn and \
                _feeds_add(eqn, eqns, uses):
            continue                     # (part of a larger tree: its root rewrites it)
        inner: list = []
        terms = leaves(eqn, inner)
        products = [maker[id(t)] for t in terms if single(t) and id(t) in maker
                    and maker[id(t)].prim is P.matmul_p and maker[id(t)].inputs[1].aval.ndim == 2
                    and all(isinstance(a, Var) for a in maker[id(t)].inputs)]
        if len(products) < 2:
            continue
        rest = [t for t in terms if not any(t is p.outputs[0] for p in products)]
        replace[id(eqn)] = _one_sum(products, rest, eqn)
        removed.update(id(e) for e in inner + products)
    if not replace:
        return eqns
    result = []
    for eqn in eqns:
        if id(eqn) in replace:
            result.extend(replace[id(eqn)])
        elif id(eqn) not in removed:
            result.append(eqn)
    return result


def _same_shape(eqn) -> bool:
    return all(not isinstance(a, Literal) and a.aval == eqn.outputs[0].aval for a in eqn.inputs)


def _feeds_add(eqn, eqns, uses) -> bool:
    (user,) = uses[id(eqn.outputs[0])]
    return user < len(eqns) and eqns[user].prim is P.add_p and _same_shape(eqns[user])


def _one_sum(products: list, rest: list, root: Eqn) -> list:
    """``Σ p_i @ q_i (+ the other terms)`` as one product of concatenations."""
    source, out = root.source, root.outputs[0]
    ps, qs = [e.inputs[0] for e in products], [e.inputs[1] for e in products]
    inner = sum(q.aval.shape[0] for q in qs)
    p_joined = Var(Aval(ps[0].aval.shape[:-1] + (inner,), out.aval.dtype))
    q_joined = Var(Aval((inner, qs[0].aval.shape[1]), out.aval.dtype))
    made = [Eqn(P.concatenate_p, ps, [p_joined], {"axis": ps[0].aval.ndim - 1}, source),
            Eqn(P.concatenate_p, qs, [q_joined], {"axis": 0}, source)]
    total = out if not rest else Var(out.aval)
    made.append(Eqn(P.matmul_p, [p_joined, q_joined], [total], {}, source))
    for i, term in enumerate(rest):
        last = i == len(rest) - 1
        nxt = out if last else Var(out.aval)
        made.append(Eqn(P.add_p, [total, term], [nxt], {}, source))
        total = nxt
    return made
