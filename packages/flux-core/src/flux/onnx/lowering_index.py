"""Lowering rules for indexing: `getitem` (NumPy's basic and advanced indexing with constant
indices) and its gradient `index_add`.

Basic indices (ints, slices, None, Ellipsis) are one Slice, then a Squeeze of the axes ints
took and an Unsqueeze of those None adds. Advanced indices (constant integer or boolean arrays,
and the ints beside them) follow NumPy's rules: the slices first, then one Gather (a single
index array) or a GatherND over the indexed axes moved to the front (several), the broadcast
index axes placed where NumPy places them (where the first index array was when the index
arrays are adjacent in the index, else first), then the Nones' axes.

`index_add` (zeros of the input's shape with the gradient added at the index) is a Pad for a
basic index of unit steps, else a ScatterND of the flat positions (adding, from opset 16, so
that repeated positions accumulate).
"""
from __future__ import annotations

import numpy as np

from flux.backends.indexing import flat_positions, strided
from flux.ir import primitives as P
from flux.ir.primitives import is_basic_index
from flux.onnx.export_batch import BatchDim

__all__ = ["INDEX_RULES", "INT_MAX", "INT_MIN"]

INT_MAX, INT_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


def _chain(b, x, steps) -> None:
    """Nodes applied one after another to `x` (``(op, extra inputs, attributes)`` each), the
    last writing the equation's result; an Identity when there are none."""
    if not steps:
        b.node("Identity", x, out=b.out)
        return
    for k, (op, extra, attrs) in enumerate(steps):
        x = b.node(op, x, *extra, out=b.out if k == len(steps) - 1 else None, **attrs)


def _bounds(s: slice, size) -> tuple | None:
    """ONNX Slice's (start, end, step) for slice `s` of an axis of `size` (a `BatchDim`: the
    slice as written, which ONNX reads as Python does); None for the whole axis."""
    step = 1 if s.step is None else int(s.step)
    if isinstance(size, BatchDim):
        if s.start is None and s.stop is None and step == 1:
            return None
        start = (0 if step > 0 else INT_MAX) if s.start is None else int(s.start)
        stop = (INT_MAX if step > 0 else INT_MIN) if s.stop is None else int(s.stop)
        return start, stop, step
    start, stop, step = s.indices(int(size))
    if step == 1 and start == 0 and stop >= size:
        return None
    if step < 0 and stop < 0:
        stop = INT_MIN              # (Python's -1 here means "past the first element")
    return start, stop, step


def _slice_step(b, dims, slices) -> list:
    """The Slice of `slices` (``(axis, slice)`` pairs), or nothing for whole axes."""
    parts = [(axis, _bounds(s, dims[axis])) for axis, s in slices]
    parts = [(axis, bounds) for axis, bounds in parts if bounds is not None]
    if not parts:
        return []
    starts, ends, steps = zip(*(bounds for _, bounds in parts))
    return [("Slice", [b.ints(starts), b.ints(ends), b.ints([a for a, _ in parts]),
                       b.ints(steps)], {})]


def _getitem(b, x):
    index = tuple(b.attrs["index"])
    dims = b.dims(b.eqn.inputs[0])
    if is_basic_index(index):
        slices, dropped, inserted = strided(len(dims), index)
        steps = _slice_step(b, dims, list(enumerate(slices)))
        if dropped:
            steps.append(("Squeeze", [b.ints(dropped)], {}))
        if inserted:
            steps.append(("Unsqueeze", [b.ints(inserted)], {}))
        _chain(b, x, steps)
        return
    _advanced(b, x, index, dims)


def _entries(index, ndim: int) -> list:
    """The index with its Ellipsis expanded, boolean arrays as their nonzero() integer
    arrays, and whole slices for the axes it leaves out."""
    entries = []
    for item in index:
        if isinstance(item, np.ndarray) and item.dtype == np.bool_:
            entries.extend(np.nonzero(item))
        else:
            entries.append(item)
    used = sum(1 for e in entries if e is not None and e is not Ellipsis)
    if any(e is Ellipsis for e in entries):
        at = next(i for i, e in enumerate(entries) if e is Ellipsis)
        entries[at:at + 1] = [slice(None)] * (ndim - used)
    return entries + [slice(None)] * (ndim - sum(1 for e in entries if e is not None))


def _advanced(b, x, index, dims) -> None:
    entries = _entries(index, len(dims))
    slices, arrays, kinds, axis = [], [], [], 0
    for entry in entries:
        if entry is None:
            kinds.append("new")
            continue
        if isinstance(entry, slice):
            slices.append((axis, entry))
            kinds.append("slice")
        else:
            arrays.append((axis, np.asarray(entry)))
            kinds.append("array")
        axis += 1
    steps = _slice_step(b, dims, slices)
    indexed = [a for a, _ in arrays]
    broadcast = np.broadcast_arrays(*(i for _, i in arrays))
    positions = [np.where(i < 0, i + dims[a], i) if not isinstance(dims[a], BatchDim) else i
                 for (a, _), i in zip(arrays, broadcast)]
    block = broadcast[0].ndim
    first = kinds.index("array")
    last = len(kinds) - 1 - kinds[::-1].index("array")
    adjacent = all(k == "array" for k in kinds[first:last + 1])
    if len(arrays) == 1:                  # the index axes land where the array was
        steps.append(("Gather", [b.const(positions[0].astype(np.int64))],
                      {"axis": indexed[0]}))
    else:
        rest = [a for a in range(len(dims)) if a not in indexed]
        if indexed != list(range(len(indexed))):
            steps.append(("Transpose", [], {"perm": indexed + rest}))
        coords = np.stack([p.astype(np.int64) for p in positions], axis=-1)
        steps.append(("GatherND", [b.const(coords)], {}))
        before = indexed[0] if adjacent else 0      # (NumPy: where the first one was)
        if before:
            r = len(rest)
            steps.append(("Transpose", [], {"perm": list(range(block, block + before))
                                            + list(range(block)) + list(range(block + before,
                                                                              block + r))}))
    layout = []
    for k, kind in enumerate(kinds):
        if kind == "array":
            if adjacent and k == first:
                layout += ["array"] * block
        else:
            layout.append(kind)
    if not adjacent:
        layout = ["array"] * block + layout
    new = [i for i, kind in enumerate(layout) if kind == "new"]
    if new:
        steps.append(("Unsqueeze", [b.ints(new)], {}))
    _chain(b, x, steps)


def _index_add(b, g):
    """zeros(shape) with g added at [index]."""
    index, shape = tuple(b.attrs["index"]), b.attr_dims("shape")
    if is_basic_index(index):
        slices, dropped, inserted = strided(len(shape), index)
        if all(_unit(s, d) for s, d in zip(slices, shape)):
            _padded(b, g, shape, slices, dropped, inserted)
            return
    size = _static(b, shape, "an index_add of this index")
    b.static(b.eqn.inputs[0], "an index_add of this index")
    positions = flat_positions(tuple(shape), index)
    repeats = np.unique(positions).size < positions.size
    attrs = {}
    if repeats:
        b.needs_opset(16, "an index_add with repeated indices (ScatterND adding)")
        attrs["reduction"] = "add"
    dtype = b.eqn.outputs[0].aval.dtype
    zero = b.export.onnx.numpy_helper.from_array(np.zeros(1, dtype))
    zeros = b.node("ConstantOfShape", b.ints([size]), value=zero)
    flat = b.node("ScatterND", zeros, b.const(positions[..., None].astype(np.int64)), g,
                  **attrs)
    b.node("Reshape", flat, b.ints(shape), out=b.out)


def _static(b, shape, what: str) -> int:
    if any(isinstance(d, BatchDim) for d in shape):
        raise b.error(f"{what} has no ONNX form for every batch size; pass "
                      f"dynamic_batch=False to export it for the example's batch size")
    return int(np.prod(shape, dtype=np.int64))


def _unit(s: slice, size) -> bool:
    """Whether slice `s` of an axis of `size` is contiguous (a step of ±1, or one element);
    on a batch axis only the whole axis is."""
    if isinstance(size, BatchDim):
        return _bounds(s, size) is None
    start, stop, step = s.indices(int(size))
    return abs(step) == 1 or len(range(start, stop, step)) <= 1


def _padded(b, g, shape, slices, dropped, inserted) -> None:
    """index_add of a contiguous basic index: g with the ints' axes restored, flipped back
    where the slice ran backwards, padded with zeros to `shape`."""
    if inserted:
        g = b.node("Squeeze", g, b.ints(inserted))
    if dropped:
        g = b.node("Unsqueeze", g, b.ints(dropped))
    before, after, flips = [], [], []
    for axis, (s, size) in enumerate(zip(slices, shape)):
        if isinstance(size, BatchDim):
            before.append(0)
            after.append(0)
            continue
        start, stop, step = s.indices(int(size))
        span = range(start, stop, step)
        low = min(span) if len(span) else 0
        if step < 0 and len(span) > 1:
            flips.append(axis)
        before.append(low)
        after.append(int(size) - low - len(span))
    if flips:
        g = b.node("Slice", g, b.ints([-1] * len(flips)), b.ints([INT_MIN] * len(flips)),
                   b.ints(flips), b.ints([-1] * len(flips)))
    if any(before) or any(after):
        b.node("Pad", g, b.ints(before + after), out=b.out)
    else:
        b.node("Identity", g, out=b.out)


INDEX_RULES = {P.getitem_p: _getitem, P.index_add_p: _index_add}
