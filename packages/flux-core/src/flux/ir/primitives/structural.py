"""Primitives that move or combine elements: matmul, reductions, views (broadcast_to, reshape,
transpose, stop_gradient), concatenate, and indexing (getitem and its gradient index_add)."""
from __future__ import annotations

import numpy as np

from flux.errors import ShapeError
from flux.ir.graph import Aval
from flux.ir.primitives.elementwise import broadcast_shapes, convert_p, eq_p, same_dtype
from flux.ir.trace import Primitive

__all__ = ["index_text", "is_basic_index"]

# -- matmul -------------------------------------------------------------------------------------


def _matmul_shape(a: Aval, b: Aval) -> Aval:
    dtype = same_dtype("matmul", [a, b])
    if a.ndim < 2 or b.ndim < 2:
        raise TypeError("matmul_p takes operands of rank 2 or more; the tracer reshapes vectors")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: cannot multiply {a.shape} by {b.shape}: the inner dimensions "
            f"{a.shape[-1]} and {b.shape[-2]} must be equal")
    batch = broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
    return Aval(batch + (a.shape[-2], b.shape[-1]), dtype)


def _swap_last(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


def _matmul_vjp(g, out, a, b):
    ga = matmul_p(g, transpose_p(b, perm=_swap_last(b.ndim)))
    if a.ndim > 2 and b.ndim == 2:
        # (..., m, k) @ (k, n): fold the batch axes into m for one big product
        a2 = reshape_p(a, shape=(int(np.prod(a.shape[:-1])), a.shape[-1]))
        g2 = reshape_p(g, shape=(int(np.prod(g.shape[:-1])), g.shape[-1]))
        gb = matmul_p(transpose_p(a2, perm=(1, 0)), g2)
    else:
        gb = matmul_p(transpose_p(a, perm=_swap_last(a.ndim)), g)
    return [ga, gb]


matmul_p = Primitive("matmul", impl=np.matmul, shape_rule=_matmul_shape, vjp=_matmul_vjp)

# -- reductions ---------------------------------------------------------------------------------


def _reduced_shape(name: str, x: Aval, axes: tuple, keepdims: bool) -> tuple:
    for axis in axes:
        if not 0 <= axis < x.ndim:
            raise ShapeError(f"{name}: axis {axis} is out of range for a value of shape {x.shape}")
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in axes)


def _kept(g, x_shape: tuple, axes: tuple, keepdims: bool):
    """Re-insert reduced axes (as size 1) so `g` broadcasts against the reduction's input."""
    if keepdims or not axes:
        return g
    return reshape_p(g, shape=tuple(1 if i in axes else d for i, d in enumerate(x_shape)))


def _reduce_max_shape(x: Aval, *, axes, keepdims) -> Aval:
    if x.size == 0:
        raise ShapeError(f"max: cannot take the maximum of an empty value of shape {x.shape}")
    return Aval(_reduced_shape("max", x, axes, keepdims), x.dtype)


def _reduce_max_vjp(g, out, x, *, axes, keepdims):
    out_k = _kept(out, x.shape, axes, keepdims)
    mask = convert_p(eq_p(x, broadcast_to_p(out_k, shape=x.shape)), dtype=x.dtype)
    count = reduce_sum_p(mask, axes=axes, keepdims=True)
    return [mask * (_kept(g, x.shape, axes, keepdims) / count)]


reduce_sum_p = Primitive(
    "reduce_sum", reduction=True,
    impl=lambda x, *, axes, keepdims: np.add.reduce(x, axis=axes, keepdims=keepdims),
    shape_rule=lambda x, *, axes, keepdims: Aval(_reduced_shape("sum", x, axes, keepdims),
                                                 x.dtype),
    vjp=lambda g, out, x, *, axes, keepdims: [
        broadcast_to_p(_kept(g, x.shape, axes, keepdims), shape=x.shape)])
reduce_max_p = Primitive(
    "reduce_max", reduction=True, shape_rule=_reduce_max_shape, vjp=_reduce_max_vjp,
    impl=lambda x, *, axes, keepdims: np.maximum.reduce(x, axis=axes, keepdims=keepdims))

# -- views --------------------------------------------------------------------------------------


def _broadcast_to_shape(x: Aval, *, shape) -> Aval:
    if broadcast_shapes("broadcast_to", x.shape, shape) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {x.shape} to {tuple(shape)}")
    return Aval(shape, x.dtype)


def _reshape_shape(x: Aval, *, shape) -> Aval:
    if int(np.prod(shape, dtype=np.int64)) != x.size or any(d < 0 for d in shape):
        raise ShapeError(f"reshape: cannot reshape a value of shape {x.shape} "
                         f"({x.size} elements) to {tuple(shape)}")
    return Aval(shape, x.dtype)


def _transpose_shape(x: Aval, *, perm) -> Aval:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {tuple(perm)} are not a permutation of the "
                         f"{x.ndim} axes of a value of shape {x.shape}")
    return Aval(tuple(x.shape[i] for i in perm), x.dtype)


broadcast_to_p = Primitive(          # autodiff sums the cotangent back to x's shape
    "broadcast_to", view=True, shape_rule=_broadcast_to_shape,
    impl=lambda x, *, shape: np.broadcast_to(x, shape), vjp=lambda g, out, x, *, shape: [g])
reshape_p = Primitive(
    "reshape", view=True, shape_rule=_reshape_shape,
    impl=lambda x, *, shape: np.reshape(x, shape),
    vjp=lambda g, out, x, *, shape: [reshape_p(g, shape=x.shape)])
transpose_p = Primitive(
    "transpose", view=True, shape_rule=_transpose_shape,
    impl=lambda x, *, perm: np.transpose(x, perm),
    vjp=lambda g, out, x, *, perm: [transpose_p(g, perm=tuple(np.argsort(perm)))])
stop_gradient_p = Primitive("stop_gradient", view=True, shape_rule=lambda x: x,
                            impl=lambda x: x, vjp=lambda g, out, x: [None])

# -- concatenate --------------------------------------------------------------------------------


def _concatenate_shape(*xs: Aval, axis) -> Aval:
    dtype = same_dtype("concatenate", xs)
    first = xs[0]
    if not 0 <= axis < first.ndim:
        raise ShapeError(f"concatenate: axis {axis} is out of range for shape {first.shape}")
    for i, x in enumerate(xs[1:], 1):
        if x.ndim != first.ndim or any(
                a != b for k, (a, b) in enumerate(zip(x.shape, first.shape)) if k != axis):
            raise ShapeError(
                f"concatenate along axis {axis}: value {i} has shape {x.shape}, which does not "
                f"match value 0's shape {first.shape} on the other axes")
    size = sum(x.shape[axis] for x in xs)
    return Aval(first.shape[:axis] + (size,) + first.shape[axis + 1:], dtype)


def _concatenate_vjp(g, out, *xs, axis):
    cts, start = [], 0
    for x in xs:
        stop = start + x.shape[axis]
        cts.append(getitem_p(g, index=(slice(None),) * axis + (slice(start, stop),)))
        start = stop
    return cts


concatenate_p = Primitive("concatenate", shape_rule=_concatenate_shape, vjp=_concatenate_vjp,
                          impl=lambda *xs, axis: np.concatenate(xs, axis=axis))

# -- indexing -----------------------------------------------------------------------------------


def _indexed_shape(shape: tuple, index) -> tuple:
    probe = np.broadcast_to(np.zeros((), np.int8), shape)
    try:
        return probe[index].shape
    except IndexError as error:
        raise ShapeError(f"index {index_text(index)} does not fit a value of shape {shape}: "
                         f"{error}") from None


def index_text(index) -> str:
    """An index as users write it: ``[:, 1:3, array(4,)]``."""
    def one(i):
        if isinstance(i, slice):
            parts = ("" if v is None else str(v) for v in (i.start, i.stop, i.step))
            return ":".join(parts).rstrip(":") or ":"
        if isinstance(i, np.ndarray):
            return f"array{i.shape}"
        return repr(i)
    return "[" + ", ".join(one(i) for i in index) + "]"


def is_basic_index(index) -> bool:
    """True when `index` has only ints, slices, None and Ellipsis (a strided view in NumPy)."""
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in index)


def _index_add_shape(g: Aval, *, index, shape) -> Aval:
    expected = _indexed_shape(shape, index)
    if g.shape != expected:
        raise ShapeError(f"index_add: a value of shape {g.shape} cannot fill {index_text(index)} "
                         f"of shape {shape}, which is {expected}")
    return Aval(shape, g.dtype)


def _index_add(g, *, index, shape):
    """zeros(shape) with g added at [index] (repeated indices accumulate)."""
    out = np.zeros(shape, g.dtype)
    if is_basic_index(index):
        out[index] = g
    else:
        np.add.at(out, index, g)
    return out


getitem_p = Primitive(
    "getitem", impl=lambda x, *, index: x[index],
    shape_rule=lambda x, *, index: Aval(_indexed_shape(x.shape, index), x.dtype),
    vjp=lambda g, out, x, *, index: [index_add_p(g, index=index, shape=x.shape)])
index_add_p = Primitive(
    "index_add", impl=_index_add, shape_rule=_index_add_shape,
    vjp=lambda g, out, x, *, index, shape: [getitem_p(g, index=index)])
