"""ONNX's operators that choose elements by their values: TopK, Compress, and (on known
values only, their results' shapes depend on the data) NonZero and Unique.

``TopK`` with a known k is k steps of arg-max, each masking the element it took, so a traced
input works: ``iᵢ`` = the first position, among the elements not yet taken, holding their
maximum (ONNX's order: larger first, the lower index first among equals; ``largest=0``
takes minima), and ``vᵢ = x[iᵢ]``, a gather, so the gradient flows to the chosen elements
alone. ``Compress`` with a known condition is a gather of the positions where it
holds.
"""
from __future__ import annotations

import numpy as np

from flux.onnx.operators.arguments import axis_of, folded, traced
from flux.onnx.operators.registry import operator, static


def _top_k(node, x, k: int):
    axis = axis_of(node, node.attr("axis", -1), len(x.shape))
    largest = bool(node.attr("largest", 1))
    n = x.shape[axis]
    if not 0 <= k <= n:
        raise node.error(f"k = {k} is not within the {n} elements of axis {axis}")
    if not traced(x):
        x = np.asarray(x)
        key = (-x if x.dtype.kind == "f" else ~x) if largest else x     # (~: no overflow)
        indices = np.take(np.argsort(key, axis=axis, kind="stable"), np.arange(k), axis=axis)
        return np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64)
    x = np.moveaxis(x, axis, -1)                                     # (..., n)
    positions = np.arange(n, dtype=np.int64)
    taken = np.zeros((1,) * (len(x.shape) - 1) + (n,), dtype=bool)
    fill = _extreme(x.dtype, lowest=largest)       # what taken elements become: never picked
    pick = np.max if largest else np.min
    values, indices = [], []
    for _ in range(k):
        best = pick(np.where(taken, fill, x) if values else x, axis=-1, keepdims=True)
        hit = np.logical_and(np.equal(x, best), np.logical_not(taken))
        i = np.argmax(hit, axis=-1, keepdims=True)                   # the first one
        taken = np.logical_or(taken, np.equal(positions, i))
        values.append(np.take_along_axis(x, i, axis=-1))    # (its gradient: to x[i] alone)
        indices.append(i)
    return (np.moveaxis(np.concatenate(values, axis=-1), -1, axis),     # (..., k) moved back
            np.moveaxis(np.concatenate(indices, axis=-1), -1, axis))


def _extreme(dtype, lowest: bool) -> np.ndarray:
    """The dtype's lowest (or highest) value: ∓∞ for floats, the integer bounds otherwise."""
    if dtype.kind == "f":
        return np.asarray(-np.inf if lowest else np.inf, dtype)
    info = np.iinfo(dtype)
    return np.asarray(info.min if lowest else info.max, dtype)


@operator("TopK")
def top_k_attribute(node, x):
    """Opsets 1-9: the k largest along `axis`, k an attribute."""
    return _top_k(node, x, int(node.attr("k")))


@operator("TopK", since=10)
def top_k(node, x, k):
    """The k largest (smallest with largest=0) elements along `axis`, sorted, and their
    positions."""
    return _top_k(node, x, int(static(node, k, "K").reshape(-1)[0]))


@operator("Compress", since=9)
def compress(node, x, condition):
    """The slices of x along `axis` (the flattened x without one) where the condition
    holds; the condition must be known."""
    keep = np.flatnonzero(static(node, condition, "condition"))
    axis = node.attr("axis")
    if axis is None:
        return np.take(np.reshape(x, (-1,)), keep, axis=0)
    return np.take(x, keep, axis=axis_of(node, axis, len(x.shape)))


@folded("NonZero", since=9)
def non_zero(node, x):
    """The positions of the non-zero elements, (rank, count) int64 (known values only)."""
    return np.array(np.nonzero(x), dtype=np.int64).reshape(np.ndim(x), -1)


@folded("Unique", since=11)
def unique(node, x):
    """The distinct values (sorted, or in order of appearance with sorted=0), along `axis`
    or of the flattened x, with the first index of each, the inverse map and the counts
    (known values only)."""
    axis = node.attr("axis")
    values, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                               return_counts=True, axis=axis)
    if not node.attr("sorted", 1):
        order = np.argsort(first, kind="stable")
        rank = np.argsort(order)
        values = np.take(values, order, axis=0 if axis is None else axis)
        first, counts, inverse = first[order], counts[order], rank[inverse]
    return (values, first.astype(np.int64), inverse.reshape(-1).astype(np.int64),
            counts.astype(np.int64))
