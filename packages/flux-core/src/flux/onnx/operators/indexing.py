"""ONNX's operators that index tensors: Gather, GatherElements, GatherND, the scatters
(ScatterElements, ScatterND, Scatter), OneHot, Trilu, CumSum, CumProd, ReverseSequence.

Gathered data and gather indices may be traced (a traced index is flux's ``take``). A
scatter's indices must be known: the result is ``where(hit, Σ updates at the indices, data)``
(``data + Σ`` for ``reduction="add"``), one ``index_add`` equation.
"""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P
from flux.onnx.operators.arguments import axis_of, traced
from flux.onnx.operators.registry import operator, static


# -- indexing -----------------------------------------------------------------------------------


@operator("Gather")
def gather(node, x, indices):
    """x indexed along `axis` by `indices` (negative ones count from the end):
    out[i, j, k] = x[i, indices[j], k] for axis 1."""
    axis = axis_of(node, node.attr("axis", 0), len(x.shape))
    if not traced(indices):
        indices = np.asarray(indices).astype(np.int64)
        n = x.shape[axis]
        if indices.size and (indices.min() < -n or indices.max() >= n):
            raise node.error(f"an index is out of range for axis {axis} of size {n}")
        indices = np.where(indices < 0, indices + n, indices)
    return np.take(x, indices, axis=axis)


@operator("GatherElements", since=11)
def gather_elements(node, x, indices):
    """out[i][j] = x[indices[i][j]][j] for axis 0 (indices and the result have one shape)."""
    axis = axis_of(node, node.attr("axis", 0), len(x.shape))
    return np.take_along_axis(x, indices.astype(np.int64), axis=axis)


@operator("GatherND", since=11)
def gather_nd(node, x, indices):
    """out[b, i] = x[b, *indices[b, i, :]] (the first `batch_dims` axes shared): one gather
    along the flattened indexed axes."""
    b = node.attr("batch_dims", 0)
    m = indices.shape[-1]
    batch, indexed, rest = x.shape[:b], x.shape[b:b + m], x.shape[b + m:]
    if tuple(indices.shape[:b]) != tuple(batch):
        raise node.error(f"indices of shape {tuple(indices.shape)} do not share the first "
                         f"{b} axes of the data's shape {tuple(x.shape)}")
    picks = indices.shape[b:-1]
    nb, ni = int(np.prod(batch, dtype=np.int64)), int(np.prod(picks, dtype=np.int64))
    nr = int(np.prod(rest, dtype=np.int64))
    flat = None
    for k, dim in enumerate(indexed):
        idx = indices[..., k].astype(np.int64)
        idx = np.where(np.less(idx, 0), idx + dim, idx)
        stride = int(np.prod(indexed[k + 1:], dtype=np.int64))
        term = idx * stride if stride != 1 else idx
        flat = term if flat is None else flat + term
    data = np.reshape(x, (nb, int(np.prod(indexed, dtype=np.int64)), nr))
    flat = np.reshape(flat, (nb, ni, 1))
    out = np.take_along_axis(data, flat, axis=1)                  # (nb, ni, nr)
    return np.reshape(out, tuple(batch) + tuple(picks) + tuple(rest))


def _scatter_index(node, indices, shape, axis):
    """The index tuple of ScatterElements' positions: `indices` on `axis`, each element's
    own position on the others."""
    indices = np.asarray(indices).astype(np.int64)
    indices = np.where(indices < 0, indices + shape[axis], indices)
    if indices.size and (indices.min() < 0 or indices.max() >= shape[axis]):
        raise node.error(f"an index is out of range for axis {axis} of size {shape[axis]}")
    grid = np.indices(indices.shape, sparse=True)
    return tuple(indices if d == axis else grid[d] for d in range(len(shape)))


_COMBINE = {"none": lambda old, new: new, "add": np.add, "mul": np.multiply,
            "max": np.maximum, "min": np.minimum}


def _scatter(node, data, index, updates, reduction: str):
    """data with `updates` written (or added, multiplied, maxed, minned) at `index`, a
    tuple of known index arrays (over data's first axes; updates' other axes are whole
    slices). Traced: ``Σ updates at the indices`` is one `index_add`; for the other
    reductions, the updates go in rounds, each round holding each position at most once
    (its k-th occurrence), ``out = where(hit, combine(out, placed), out)``."""
    if reduction not in _COMBINE:
        raise node.error(f"reduction {reduction!r} is not one of {', '.join(_COMBINE)}")
    shape = tuple(data.shape)
    if not traced(data, updates):
        out = np.array(data, copy=True)
        if reduction == "none":
            out[index] = updates
        else:
            _COMBINE[reduction].at(out, index, updates)
        return out
    if reduction == "add":
        return data + P.index_add_p(updates, index=index, shape=shape)
    lead = np.broadcast_shapes(*(np.shape(i) for i in index))
    flat_index = [np.broadcast_to(i, lead).reshape(-1) for i in index]
    count = len(flat_index[0])
    rest = tuple(updates.shape[len(lead):])
    flat_updates = np.reshape(updates, (count,) + rest)
    positions = np.ravel_multi_index(flat_index, shape[:len(index)])
    rank = np.zeros(count, np.int64)                     # which occurrence of its position
    seen: dict = {}
    for j, p in enumerate(positions.tolist()):
        rank[j] = seen.get(p, 0)
        seen[p] = rank[j] + 1
    out = data
    for r in range(int(rank.max()) + 1 if count else 0):
        chosen = np.flatnonzero(rank == r)
        at = tuple(i[chosen] for i in flat_index)
        placed = P.index_add_p(flat_updates[chosen], index=at, shape=shape)
        hit = np.zeros(shape, bool)
        hit[at] = True
        out = np.where(hit, _COMBINE[reduction](out, placed), out)
    return out


@operator("ScatterElements", since=11)
def scatter_elements(node, data, indices, updates):
    """data with updates[i][j] at [indices[i][j]][j] (axis 0), reduced by `reduction`
    (none, add, mul, max, min; indices must be known)."""
    axis = axis_of(node, node.attr("axis", 0), len(data.shape))
    index = _scatter_index(node, static(node, indices, "indices"), tuple(data.shape), axis)
    return _scatter(node, data, index, updates, node.attr("reduction", "none"))


@operator("Scatter", since=9)
def scatter(node, data, indices, updates):
    """Opsets 9-10: ScatterElements without reduction."""
    axis = axis_of(node, node.attr("axis", 0), len(data.shape))
    index = _scatter_index(node, static(node, indices, "indices"), tuple(data.shape), axis)
    return _scatter(node, data, index, updates, "none")


@operator("ScatterND", since=11)
def scatter_nd(node, data, indices, updates):
    """data with updates[i] written at data[*indices[i]] (indices must be known)."""
    indices = static(node, indices, "indices").astype(np.int64)
    k = indices.shape[-1]
    dims = np.asarray(data.shape[:k])
    indices = np.where(indices < 0, indices + dims, indices)
    index = tuple(indices[..., j] for j in range(k))
    return _scatter(node, data, index, updates, node.attr("reduction", "none"))


@operator("OneHot", since=9)
def one_hot(node, indices, depth, values):
    """on where indices (negative: from the end) equal the class, off elsewhere, the classes
    along a new axis `axis` (default last); values = [off, on]."""
    depth = int(static(node, depth, "depth").reshape(-1)[0])
    rank = len(indices.shape) + 1
    axis = axis_of(node, node.attr("axis", -1), rank)
    if indices.dtype.kind == "f":
        indices = indices.astype(np.int64)
    indices = np.where(np.less(indices, 0), indices + depth, indices)
    classes = np.arange(depth).reshape([depth if d == axis else 1 for d in range(rank)])
    hit = np.equal(np.expand_dims(indices, axis), classes.astype(indices.dtype))
    return np.where(hit, values[1], values[0])


@operator("Trilu", since=14)
def trilu(node, x, k=None):
    """x with the elements below (upper=1, default) or above (upper=0) the k-th diagonal
    zeroed."""
    k = 0 if k is None else int(static(node, k, "k").reshape(()))
    n, m = x.shape[-2:]
    keep = np.triu(np.ones((n, m), bool), k) if node.attr("upper", 1) else \
        np.tril(np.ones((n, m), bool), k)
    return np.where(keep, x, np.zeros((), x.dtype))


@operator("CumSum", since=11)
def cum_sum(node, x, axis):
    """Running sums along `axis`; exclusive=1 shifts them by one (the first is 0),
    reverse=1 sums from the end."""
    axis = axis_of(node, int(static(node, axis, "axis").reshape(())), len(x.shape))
    reverse, exclusive = node.attr("reverse", 0), node.attr("exclusive", 0)
    if reverse:
        x = np.flip(x, axis)
    sums = np.cumsum(x, axis=axis, dtype=x.dtype)
    if exclusive:
        before = (slice(None),) * axis
        zeros = np.zeros(tuple(x.shape[:axis]) + (1,) + tuple(x.shape[axis + 1:]), x.dtype)
        sums = np.concatenate([zeros, sums[before + (slice(0, x.shape[axis] - 1),)]],
                              axis=axis)
    return np.flip(sums, axis) if reverse else sums


@operator("CumProd", since=26)
def cum_prod(node, x, axis):
    """Running products along `axis` (exclusive=1: shifted by one, the first is 1; reverse=1:
    from the end): one product per step, pᵢ = pᵢ₋₁ · xᵢ."""
    axis = axis_of(node, int(static(node, axis, "axis").reshape(())), len(x.shape))
    reverse, exclusive = node.attr("reverse", 0), node.attr("exclusive", 0)
    n = x.shape[axis]
    if reverse:
        x = np.flip(x, axis)
    before = (slice(None),) * axis
    steps = [x[before + (slice(i, i + 1),)] for i in range(n)]
    if exclusive:
        ones = np.ones(tuple(x.shape[:axis]) + (1,) + tuple(x.shape[axis + 1:]), x.dtype)
        steps = [ones] + steps[:-1]
    if not steps:
        return x                                       # (an empty axis)
    products = [steps[0]]
    for step in steps[1:]:
        products.append(products[-1] * step)
    out = products[0] if n == 1 else np.concatenate(products, axis=axis)
    return np.flip(out, axis) if reverse else out


@operator("ReverseSequence", since=10)
def reverse_sequence(node, x, lengths):
    """Each batch entry's first lengths[b] steps (along time_axis, 0 or 1; the batch axis is
    the other one) reversed, the rest kept."""
    time_axis = node.attr("time_axis", 0)
    lengths = static(node, lengths, "sequence_lens").astype(np.int64)
    steps = x.shape[time_axis]
    t = np.arange(steps)[:, None]
    lens = lengths[None, :]
    source = np.where(t < lens, lens - 1 - t, t)                 # (time, batch)
    batch = np.broadcast_to(np.arange(len(lengths))[None, :], source.shape)
    if time_axis == 0:
        return x[source, batch]
    return x[batch.T, source.T]
