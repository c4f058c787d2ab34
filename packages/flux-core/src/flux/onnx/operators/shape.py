"""ONNX's operators on shapes: Shape and Size (known while tracing: flux's shapes are static,
so what follows them folds), Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Expand,
DepthToSpace, SpaceToDepth and Identity."""
from __future__ import annotations

import numpy as np

from flux.onnx.operators.arguments import attr_or_input, axes_of, axis_of, ints
from flux.onnx.operators.registry import operator


@operator("Identity")
def identity(node, x):
    return x


@operator("Shape")
def shape(node, x):
    """The shape of x as int64, from `start` to `end` (opset 15; clamped, negative from the
    end)."""
    dims = tuple(x.shape)
    start, end = node.attr("start", 0), node.attr("end", len(dims))
    start = min(max(start + len(dims) if start < 0 else start, 0), len(dims))
    end = min(max(end + len(dims) if end < 0 else end, 0), len(dims))
    return np.array(dims[start:end], dtype=np.int64)


@operator("Size")
def size(node, x):
    """The number of elements of x, int64."""
    return np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)


@operator("Reshape")
def reshape_attribute(node, x):
    """Opsets 1-4: the shape as an attribute."""
    return _reshape(node, x, list(node.attr("shape")), allow_zero=False)


@operator("Reshape", since=5)
def reshape(node, x, shape):
    """x in the shape `shape`: 0 copies x's size on that axis (unless allowzero=1), one -1
    takes what is left."""
    return _reshape(node, x, ints(node, shape, "shape"), bool(node.attr("allowzero", 0)))


def _reshape(node, x, dims: list, allow_zero: bool):
    dims = [x.shape[i] if d == 0 and not allow_zero and i < len(x.shape) else d
            for i, d in enumerate(dims)]
    if dims.count(-1) > 1:
        raise node.error(f"the shape {dims} has more than one -1")
    total = int(np.prod(x.shape, dtype=np.int64))
    if -1 in dims:
        rest = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
        if rest == 0 or total % rest:
            raise node.error(f"cannot reshape a value of shape {tuple(x.shape)} to {dims}")
        dims[dims.index(-1)] = total // rest
    if int(np.prod(dims, dtype=np.int64)) != total:
        raise node.error(f"cannot reshape a value of shape {tuple(x.shape)} ({total} elements) "
                         f"to {dims}")
    return np.reshape(x, tuple(dims))


@operator("Flatten")
def flatten(node, x):
    """x as a matrix: the axes before `axis` (default 1) times the rest."""
    ndim = len(x.shape)
    axis = node.attr("axis", 1)
    axis = axis + ndim if axis < 0 else axis
    if not 0 <= axis <= ndim:
        raise node.error(f"axis {node.attr('axis')} is out of range for rank {ndim}")
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    return np.reshape(x, (rows, int(np.prod(x.shape[axis:], dtype=np.int64))))


@operator("Squeeze")
def squeeze(node, x, axes=None):
    """x without the given size-1 axes (all of them when none are given; attribute before
    opset 13, input from it)."""
    ndim = len(x.shape)
    given = attr_or_input(node, axes, "axes", since=13)
    if given is None:
        drop = [i for i, d in enumerate(x.shape) if d == 1]
    else:
        drop = axes_of(node, given, ndim)
        for a in drop:
            if x.shape[a] != 1:
                raise node.error(f"axis {a} of shape {tuple(x.shape)} has size {x.shape[a]}, "
                                 f"not 1")
    return np.reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in drop))


@operator("Unsqueeze")
def unsqueeze(node, x, axes=None):
    """x with size-1 axes inserted at `axes` (positions in the result; attribute before opset
    13, input from it)."""
    given = attr_or_input(node, axes, "axes", since=13)
    if given is None:
        raise node.error("needs axes")
    ndim = len(x.shape) + len(given)
    inserted = axes_of(node, given, ndim)
    dims = list(x.shape)
    for a in inserted:
        dims.insert(a, 1)
    return np.reshape(x, tuple(dims))


@operator("Transpose")
def transpose(node, x):
    """x with its axes permuted by `perm` (reversed by default)."""
    ndim = len(x.shape)
    perm = node.attr("perm")
    perm = list(reversed(range(ndim))) if perm is None else [axis_of(node, p, ndim, "perm")
                                                             for p in perm]
    if sorted(perm) != list(range(ndim)):
        raise node.error(f"perm {perm} is not a permutation of {ndim} axes")
    return np.transpose(x, perm)


@operator("Expand", since=8)
def expand(node, x, shape):
    """x broadcast with `shape` (both ways: the result has the broadcast of both shapes)."""
    dims = ints(node, shape, "shape")
    try:
        target = np.broadcast_shapes(tuple(x.shape), tuple(dims))
    except ValueError:
        raise node.error(f"cannot broadcast a value of shape {tuple(x.shape)} with the shape "
                         f"{dims}") from None
    if target == tuple(x.shape):
        return x
    return np.broadcast_to(x, target)


@operator("DepthToSpace")
def depth_to_space(node, x):
    """(N, C·b², H, W) → (N, C, H·b, W·b), blocks taken depth-first ("DCR", the default) or
    channel-first ("CRD")."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    if node.attr("mode", "DCR") == "CRD":
        y = np.reshape(x, (n, c // (b * b), b, b, h, w))
        y = np.transpose(y, (0, 1, 4, 2, 5, 3))
    else:
        y = np.reshape(x, (n, b, b, c // (b * b), h, w))
        y = np.transpose(y, (0, 3, 4, 1, 5, 2))
    return np.reshape(y, (n, c // (b * b), h * b, w * b))


@operator("SpaceToDepth")
def space_to_depth(node, x):
    """(N, C, H·b, W·b) → (N, C·b², H, W), the inverse of DepthToSpace in the same `mode`
    ("DCR", the default, or "CRD")."""
    b = node.attr("blocksize")
    n, c, h, w = x.shape
    y = np.reshape(x, (n, c, h // b, b, w // b, b))
    order = (0, 1, 3, 5, 2, 4) if node.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = np.transpose(y, order)
    return np.reshape(y, (n, c * b * b, h // b, w // b))
