"""NumPy implementations of the window primitives (`flux.ir.primitives.windows` declares them):
convolution and its gradients, max and sum over windows and theirs, take and its scatter-add.

The NumPy implementations run on strided views: the padded input seen as
``(N, *out, *window, C)`` without a copy, then one BLAS product per group (convolution) or one
ufunc per window offset (pools and the scatter of gradients back to the input). Convolutions
without groups build their columns (or the columns' gradients) a few images at a time, about
`_CHUNK_BYTES` each, in one reused buffer: one product per chunk while the chunk is still in
cache, and no column matrix of the whole batch (K times the input) to allocate and page in.
Pools whose windows tile the input (stride = window, no padding) see it as
``(N, o1, k1, o2, k2, ..., C)`` and take the max's gradient in a few whole-array operations.
"""
from __future__ import annotations

import itertools
import sys

import numpy as np

__all__ = ["out_size", "check_indices", "conv", "conv_input_grad", "conv_filter_grad",
           "window_max", "window_max_grad", "window_sum", "window_sum_grad", "take",
           "take_grad"]


def out_size(size: int, k: int, stride: int, dilation: int, before: int, after: int) -> int:
    """The output length of one spatial axis (may be < 1: the window does not fit)."""
    return (size + before + after - dilation * (k - 1) - 1) // stride + 1


# Temporaries (the columns of a convolution, their gradients) are built for a few images at a
# time, about this many bytes each, so that they stay in cache between being written and being
# read by the BLAS product, and one buffer serves every chunk. 2 MiB was the best of 1-32 MiB
# for bench/cnn.py's training step on a 2-core EPYC (1 MiB of L2 per core); much smaller
# chunks mean many small products (each threaded BLAS call is a rendezvous of its threads).
_CHUNK_BYTES = 1 << 21


def _module(a):
    """The array module of `a`: NumPy, or CuPy for its arrays (flux-cupy runs these kernels on
    the GPU: NumPy's functions dispatch to CuPy's, `like=` makes new arrays there, and BLAS
    products become cuBLAS ones)."""
    if isinstance(a, np.ndarray):
        return np
    module = sys.modules.get(type(a).__module__.split(".")[0])
    return module if module is not None and hasattr(module, "lib") else np


def _strided(a, shape, strides, writeable=False):
    """A strided view of `a` (no copy), by its module's `as_strided`."""
    module = _module(a)
    if module is np:
        return np.lib.stride_tricks.as_strided(a, shape, strides, writeable=writeable)
    return module.lib.stride_tricks.as_strided(a, shape, strides)


def _pad(x, padding, value=0):
    if not any(lo or hi for lo, hi in padding):
        return x
    return np.pad(x, ((0, 0),) + tuple(tuple(p) for p in padding) + ((0, 0),),
                  constant_values=value)


def _view(xp, window, strides, dilation, out):
    """The padded input `xp` as ``(N, *out, *window, C)``, no copy."""
    s = xp.strides
    spatial = s[1:-1]
    return _strided(
        xp, (xp.shape[0],) + tuple(out) + tuple(window) + (xp.shape[-1],),
        (s[0],) + tuple(a * b for a, b in zip(spatial, strides))
        + tuple(a * b for a, b in zip(spatial, dilation)) + (s[-1],))


def _chunks(n, out, row_bytes):
    """``(images, first, stop)`` pieces of the output ``(n, *out)``: whole images (all of
    their first spatial axis) when one fits in `_CHUNK_BYTES` of temporaries (`row_bytes` per
    position of that axis), else one image's rows ``first:stop`` at a time. Every piece is
    contiguous in a C-ordered ``(n, *out, ...)`` array."""
    rows = max(1, _CHUNK_BYTES // max(1, row_bytes))
    if n == 0:
        return [(slice(0, 0), 0, out[0])]
    if rows >= out[0]:
        per = rows // out[0]
        return [(slice(i, min(n, i + per)), 0, out[0]) for i in range(0, n, per)]
    return [(slice(i, i + 1), a, min(out[0], a + rows)) for i in range(n)
            for a in range(0, out[0], rows)]


def _offsets(window, strides, dilation, out, first=0):
    """Per window offset: the index of the padded input it reads for every output position
    (for the output positions ``first:first + out[0]`` of the first spatial axis)."""
    starts = (first,) + (0,) * (len(out) - 1)
    for k in itertools.product(*(range(n) for n in window)):
        yield k, (slice(None),) + tuple(
            slice(a * s + i * d, (a + o - 1) * s + i * d + 1, s)
            for i, d, s, o, a in zip(k, dilation, strides, out, starts)) + (slice(None),)


def _unpad(xp, padding, shape):
    return xp[(slice(None),) + tuple(slice(lo, lo + n) for (lo, _), n in
                                     zip(padding, shape[1:-1])) + (slice(None),)]


def _grouped(cols, groups, width):
    """``(rows, K * C)`` columns as ``(groups, rows, K * C / groups)``: group j's channels."""
    rows, kc = cols.shape
    return cols.reshape(rows, kc // (groups * width), groups, width).transpose(2, 0, 1, 3) \
        .reshape(groups, rows, kc // groups)


def _filters(w, groups):
    """``(*window, C/g, out)`` as ``(groups, K * C/g, out/g)``."""
    kc, out = int(np.prod(w.shape[:-1])), w.shape[-1]
    width = w.shape[-2]
    return w.reshape(kc // width, width, groups, out // groups).transpose(2, 0, 1, 3) \
        .reshape(groups, kc, out // groups)


def conv(x, w, *, strides, padding, dilation, groups):
    window, out_c = w.shape[:-2], w.shape[-1]
    out = tuple(out_size(n, k, s, d, lo, hi) for n, k, s, d, (lo, hi)
                in zip(x.shape[1:-1], window, strides, dilation, padding))
    xp = _pad(x, padding)
    rows = x.shape[0] * int(np.prod(out))
    if groups > 1:
        cols = _view(xp, window, strides, dilation, out).reshape(rows, -1)
        y = np.matmul(_grouped(cols, groups, w.shape[-2]), _filters(w, groups))
        y = y.transpose(1, 0, 2).reshape(rows, out_c)
        return y.reshape((x.shape[0],) + out + (out_c,))
    w2 = w.reshape(-1, out_c)
    if all(k == 1 for k in window) and xp is x and all(s == 1 for s in strides):
        return (x.reshape(rows, x.shape[-1]) @ w2).reshape((x.shape[0],) + out + (out_c,))
    cols = _view(xp, window, strides, dilation, out)
    y = np.empty((x.shape[0],) + out + (out_c,), np.result_type(x.dtype, w.dtype), like=x)
    for part, images, a, b in _column_chunks(cols, out, dilation):
        np.matmul(part, w2, out=y[images, a:b].reshape(-1, out_c))
    return y


def _column_chunks(cols, out, dilation):
    """``(columns, images, first, stop)`` for each chunk of `_chunks`: the columns of those
    output positions as a ``(positions, K * C)`` matrix, copied into one reused buffer. With
    few channels (a short contiguous run per window row, 3 floats for a 3 × 3 window on one
    channel) the buffer is ``(K * C, positions)`` instead, each window offset's rows copied in
    long runs, and the matrix is its transpose (BLAS takes either)."""
    n = len(out)
    kc = int(np.prod(cols.shape[n + 1:]))
    run = cols.shape[-1] * (cols.shape[-2] if dilation[-1] == 1 else 1)
    offsets_first = run < 16
    chunks = _chunks(cols.shape[0], out, int(np.prod(out[1:])) * kc * cols.itemsize)
    images, a, b = chunks[0]                  # the largest
    buf = np.empty((images.stop - images.start) * (b - a) * int(np.prod(out[1:])) * kc,
                   cols.dtype, like=cols)
    for images, a, b in chunks:
        part = cols[images, a:b]
        positions = int(np.prod(part.shape[:n + 1]))
        if offsets_first:                     # (*window, C, N, *out)
            part = part.transpose(tuple(range(n + 1, 2 * n + 2)) + tuple(range(n + 1)))
        tmp = buf[:part.size].reshape(part.shape)
        np.copyto(tmp, part)
        yield (tmp.reshape(kc, positions).T if offsets_first
               else tmp.reshape(positions, kc)), images, a, b


def conv_input_grad(g, w, *, strides, padding, dilation, groups, shape):
    """The input's gradient: each output's g spread back over the window it read."""
    window, cin = w.shape[:-2], shape[-1]
    out = g.shape[1:-1]
    padded = (shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(shape[1:-1], padding)) \
        + (cin,)
    if groups > 1:
        rows = g.shape[0] * int(np.prod(out))
        gg = g.reshape(rows, groups, -1).transpose(1, 0, 2)        # (G, rows, out / G)
        dcols = np.matmul(gg, _filters(w, groups).transpose(0, 2, 1))  # (G, rows, K * C / G)
        dcols = dcols.reshape(groups, rows, int(np.prod(window)), w.shape[-2])
        dcols = dcols.transpose(1, 2, 0, 3).reshape(g.shape[:-1] + tuple(window) + (cin,))
        dxp = np.zeros(padded, g.dtype, like=g)
        n = len(window)
        for k, where in _offsets(window, strides, dilation, out):
            dxp[where] += dcols[(slice(None),) * (n + 1) + k]
        return _unpad(dxp, padding, shape)
    # for a chunk of images at a time: one product, the columns' gradients (positions, K * C)
    # in one reused buffer, then one add per window offset into the inputs it read (one BLAS
    # call per chunk, not one per offset: each threaded call is a rendezvous of the threads)
    k = int(np.prod(window))
    wt = w.reshape(k * cin, w.shape[-1]).T
    dtype = np.result_type(g.dtype, w.dtype)
    dxp = np.zeros(padded, g.dtype, like=g)
    per_row = int(np.prod(out[1:]))
    chunks = _chunks(g.shape[0], out, per_row * k * cin * dtype.itemsize)
    images, a, b = chunks[0]                  # the largest
    buf = np.empty(k * (images.stop - images.start) * (b - a) * per_row * cin, dtype, like=g)
    n = len(window)
    for images, a, b in chunks:
        part = g[images, a:b]
        positions = int(np.prod(part.shape[:-1]))
        dcols = buf[:k * positions * cin].reshape(positions, k * cin)
        np.matmul(part.reshape(positions, part.shape[-1]), wt, out=dcols)
        dcols = dcols.reshape(part.shape[:-1] + tuple(window) + (cin,))
        target = dxp[images]
        for j, where in _offsets(window, strides, dilation, (b - a,) + out[1:], a):
            target[where] += dcols[(slice(None),) * (n + 1) + j]
    return _unpad(dxp, padding, shape)


def conv_filter_grad(x, g, *, strides, padding, dilation, groups, shape):
    """The filter's gradient: the windows read, weighted by the output gradients."""
    window, out = shape[:-2], g.shape[1:-1]
    cols = _view(_pad(x, padding), window, strides, dilation, out)
    if groups > 1:
        rows = x.shape[0] * int(np.prod(out))
        cols = cols.reshape(rows, -1)
        g2 = g.reshape(rows, -1)
        per = np.matmul(_grouped(cols, groups, shape[-2]).transpose(0, 2, 1),
                        g2.reshape(rows, groups, -1).transpose(1, 0, 2))  # (G, K * C/G, out/G)
        k = int(np.prod(window))
        return per.reshape(groups, k, shape[-2], -1).transpose(1, 2, 0, 3).reshape(shape)
    dw = term = None
    for part, images, a, b in _column_chunks(cols, out, dilation):
        gp = g[images, a:b].reshape(-1, shape[-1])
        if dw is None:
            dw = part.T @ gp
            term = np.empty_like(dw)
        else:
            dw += np.matmul(part.T, gp, out=term)
    return dw.reshape(shape)


def _pool_out(shape, window, strides, padding):
    return tuple(out_size(n, k, s, 1, lo, hi) for n, k, s, (lo, hi)
                 in zip(shape[1:-1], window, strides, padding))


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _tiles(a, window, out, writeable=False):
    """`a` ``(N, *spatial, C)`` as its non-overlapping windows ``(N, o1, k1, o2, k2, ..., C)``
    (stride == window, no padding; trailing positions no window covers are left out), no
    copy."""
    s = a.strides
    shape = (a.shape[0],) + sum(((o, k) for o, k in zip(out, window)), ()) + (a.shape[-1],)
    strides = (s[0],) + sum(((t * k, t) for t, k in zip(s[1:-1], window)), ()) + (s[-1],)
    return _strided(a, shape, strides, writeable)


def _tiled(window, strides, padding) -> bool:
    """Whether the windows tile the input: stride == window, no padding."""
    return tuple(strides) == tuple(window) and not any(lo or hi for lo, hi in padding)


def _tile_index(k):
    """The index of window offset `k` in a `_tiles` view: ``(N, o1, o2, ..., C)``."""
    return (slice(None),) + sum(((slice(None), i) for i in k), ()) + (slice(None),)


def _per_tile(y):
    """``(N, *out, C)`` as ``(N, o1, 1, o2, 1, ..., C)``, to broadcast against `_tiles`."""
    return y.reshape((y.shape[0],) + sum(((o, 1) for o in y.shape[1:-1]), ()) + (y.shape[-1],))


def _select(mask, values):
    """``where(mask, values, 0)`` in the shape of `mask` (`values` broadcast to it), exactly:
    done on the bits (an all-ones or all-zeros mask and-ed with the values), which is several
    times faster than a masked copy."""
    dtype = values.dtype
    if dtype.kind not in "biuf" or dtype.itemsize not in (1, 2, 4, 8):
        picked = np.zeros(mask.shape, dtype, like=mask)
        np.copyto(picked, values, where=mask)
        return picked
    signed, unsigned = np.dtype(f"i{dtype.itemsize}"), np.dtype(f"u{dtype.itemsize}")
    picked = np.empty(mask.shape, signed, like=mask)
    np.negative(mask.view(np.int8), out=picked, casting="unsafe")    # True -> -1: all ones
    picked = picked.view(unsigned)
    np.bitwise_and(picked, values.view(unsigned), out=picked)
    return picked.view(dtype)


def window_max(x, *, window, strides, padding):
    out = _pool_out(x.shape, window, strides, padding)
    xp = _pad(x, padding, _lowest(x.dtype))
    y = None
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        y = xp[where].copy() if y is None else np.maximum(y, xp[where], out=y)
    return y


def window_max_grad(x, y, g, *, window, strides, padding):
    """g sent to the first maximum of each window (row-major order), as PyTorch does."""
    out = y.shape[1:-1]
    if _tiled(window, strides, padding):
        # windows that tile the input: one comparison with the broadcast max marks every
        # maximum; per offset in row-major order, those of a window already hit are dropped
        hit = _tiles(x, window, out) == _per_tile(y)
        offsets = list(itertools.product(*(range(n) for n in window)))
        seen = hit[_tile_index(offsets[0])].copy()
        for j, k in enumerate(offsets[1:], 2):
            mark = hit[_tile_index(k)]
            np.greater(mark, seen, out=mark)           # a maximum and none before it
            if j < len(offsets):
                seen |= mark
        picked = _select(hit, _per_tile(g))
        if picked.size == x.size:                      # the windows cover the whole input
            return picked.reshape(x.shape)
        dx = np.zeros(x.shape, g.dtype, like=g)
        _tiles(dx, window, out, writeable=True)[...] = picked
        return dx
    xp = _pad(x, padding, _lowest(x.dtype))
    dxp = np.zeros(xp.shape, g.dtype, like=g)
    open_ = None                                       # windows whose max is not yet found
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        hit = np.equal(xp[where], y)
        if open_ is None:
            open_ = ~hit
        else:
            hit &= open_
            open_ ^= hit                               # hit is within open_
        dxp[where] += _select(hit, g)
    return _unpad(dxp, padding, x.shape)


def window_sum(x, *, window, strides, padding):
    out = _pool_out(x.shape, window, strides, padding)
    xp = _pad(x, padding)
    y = None
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        y = xp[where].copy() if y is None else np.add(y, xp[where], out=y)
    return y


def window_sum_grad(g, *, window, strides, padding, shape):
    out = g.shape[1:-1]
    if _tiled(window, strides, padding):
        dx = np.zeros(shape, g.dtype, like=g)
        _tiles(dx, window, out, writeable=True)[...] = _per_tile(g)
        return dx
    padded = (shape[0],) + tuple(n + lo + hi for n, (lo, hi) in zip(shape[1:-1], padding)) \
        + (shape[-1],)
    dxp = np.zeros(padded, g.dtype, like=g)
    for _, where in _offsets(window, strides, (1,) * len(window), out):
        dxp[where] += g
    return _unpad(dxp, padding, shape)


def check_indices(indices, size: int, what: str = "take") -> None:
    """Raise IndexError naming the first index outside ``[0, size)``."""
    if indices.size and (indices.min() < 0 or indices.max() >= size):
        bad = indices[(indices < 0) | (indices >= size)].flat[0]
        raise IndexError(f"{what}: index {int(bad)} is out of range for {size} rows "
                         f"(indices must be in [0, {size}))")


def take(x, indices, *, axis):
    check_indices(indices, x.shape[axis])
    return np.take(x, indices, axis=axis)


def take_grad(g, indices, *, axis, shape):
    """zeros(shape) with the gradient of each gathered row added back to its row."""
    out = np.zeros(shape, g.dtype, like=g)
    moved = np.moveaxis(out, axis, 0)
    rows = np.moveaxis(g, tuple(range(axis, axis + indices.ndim)),
                       tuple(range(indices.ndim))).reshape((indices.size,) + moved.shape[1:])
    flat = indices.reshape(-1)
    if flat.size >= 32 and flat.min() >= 0 and isinstance(flat, np.ndarray):
        # np.add.at is slow (one row at a time); instead one fancy-indexed += per rank of
        # repetition (the first occurrence of every index, then the second ...): no index
        # repeats within a pass, and each row's sum is built in the order of its occurrences,
        # as add.at builds it, so the result is the same to the bit
        order = np.argsort(flat, kind="stable")
        ranked = flat[order]
        position = np.arange(flat.size)
        first = np.empty(flat.size, bool)
        first[0] = True
        np.not_equal(ranked[1:], ranked[:-1], out=first[1:])
        rank = position - np.maximum.accumulate(np.where(first, position, 0))
        passes = int(rank.max()) + 1
        if passes <= max(8, flat.size // 40):      # else (a few very frequent indices) add.at
            for r in range(passes):
                chosen = order[rank == r]
                moved[flat[chosen]] += rows[chosen]
            return out
    _module(moved).add.at(moved, flat, rows)
    return out
