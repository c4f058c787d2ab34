"""The closed primitive set. Each primitive's shape rule, NumPy implementation and gradient rule
sit together; every backend implements exactly this list.

Elementwise primitives broadcast their inputs with NumPy's rules and require equal dtypes (the
tracing layer inserts `convert` where NumPy would promote). Gradient rules receive the output
cotangent `g`, the primitive's output and its inputs, and return one cotangent per input
(None where the input gets no gradient); they are written with ordinary traced operations.
"""
from __future__ import annotations

import numpy as np

from ._core import Primitive
from ._errors import ShapeError
from ._ir import Aval, Literal

# -- helpers ------------------------------------------------------------------------------------


def broadcast_shapes(name: str, *shapes) -> tuple:
    """NumPy broadcasting of `shapes`, or a ShapeError naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(f"{name}: shapes {listed} cannot be broadcast together "
                         f"(each axis must be equal or 1, aligned from the right)") from None


def _same_dtype(name: str, avals) -> np.dtype:
    dtypes = {a.dtype for a in avals}
    if len(dtypes) != 1:
        raise TypeError(f"{name}: inputs have dtypes {sorted(str(d) for d in dtypes)}; "
                        f"the tracer should have converted them")
    return avals[0].dtype


def sum_to(g, shape: tuple):
    """Sum a broadcast cotangent `g` back down to `shape` (the inverse of broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    out = reduce_sum_p(g, axes=axes, keepdims=False) if axes else g
    return reshape_p(out, shape=shape) if out.shape != shape else out


def _float(aval: Aval) -> bool:
    return aval.dtype.kind in "fc"


# -- elementwise unary --------------------------------------------------------------------------


def _unary(name: str, ufunc: np.ufunc, vjp, *, floats_only: bool = True) -> Primitive:
    prim = Primitive(name)
    prim.ufunc = ufunc

    def shape_rule(x: Aval) -> Aval:
        if floats_only and not _float(x):
            raise TypeError(f"{name} needs a floating input, found {x.dtype}")
        return x

    prim.shape_rule = shape_rule
    prim.impl = ufunc
    prim.vjp = vjp
    return prim


neg_p = _unary("neg", np.negative, lambda g, out, x: [-g], floats_only=False)
exp_p = _unary("exp", np.exp, lambda g, out, x: [g * out])
log_p = _unary("log", np.log, lambda g, out, x: [g / x])
tanh_p = _unary("tanh", np.tanh, lambda g, out, x: [g * (1 - out * out)])
sqrt_p = _unary("sqrt", np.sqrt, lambda g, out, x: [g / (2 * out)])
sin_p = _unary("sin", np.sin, lambda g, out, x: [g * cos_p(x)])
cos_p = _unary("cos", np.cos, lambda g, out, x: [-(g * sin_p(x))])
abs_p = _unary("abs", np.abs, lambda g, out, x: [g * sign_p(x)], floats_only=False)
sign_p = _unary("sign", np.sign, lambda g, out, x: [None], floats_only=False)


def _logistic(x):
    """σ(x) = 1 / (1 + exp(-x)), computed as (tanh(x/2) + 1)/2: no overflow for any x."""
    out = np.multiply(x, 0.5)
    if out.ndim:
        np.tanh(out, out=out)
        np.multiply(out, 0.5, out=out)
        np.add(out, 0.5, out=out)
        return out
    return np.tanh(out) * out.dtype.type(0.5) + out.dtype.type(0.5)


def _relu_vjp(g, out, x):
    """relu'(x) = 1 where x > 0, else 0 (0 at x = 0, as in PyTorch and Keras)."""
    return [g * convert_p(gt_p(out, Literal(0, out.dtype)), dtype=out.dtype)]


relu_p = _unary("relu", np.maximum, _relu_vjp)
relu_p.ufunc = None
relu_p.impl = lambda x: np.maximum(x, x.dtype.type(0))

logistic_p = _unary("logistic", np.tanh, lambda g, out, x: [g * out * (1 - out)])
logistic_p.ufunc = None
logistic_p.impl = _logistic

# -- elementwise binary -------------------------------------------------------------------------


def _binary(name: str, ufunc: np.ufunc, vjp, *, result=None) -> Primitive:
    prim = Primitive(name)
    prim.ufunc = ufunc

    def shape_rule(x: Aval, y: Aval) -> Aval:
        dtype = _same_dtype(name, [x, y])
        return Aval(broadcast_shapes(name, x.shape, y.shape), result or dtype)

    prim.shape_rule = shape_rule
    prim.impl = ufunc
    prim.vjp = vjp
    return prim


def _add_vjp(g, out, x, y):
    return [sum_to(g, x.shape), sum_to(g, y.shape)]


def _sub_vjp(g, out, x, y):
    return [sum_to(g, x.shape), sum_to(-g, y.shape)]


def _mul_vjp(g, out, x, y):
    return [sum_to(g * y, x.shape), sum_to(g * x, y.shape)]


def _div_vjp(g, out, x, y):
    gx = g / y
    return [sum_to(gx, x.shape), sum_to(-(gx * out), y.shape)]


def _pow_vjp(g, out, x, y):
    gx = g * y * pow_p(x, y - 1)
    safe_log = log_p(where_p(gt_p(x, Literal(0, x.dtype)), x, Literal(1, x.dtype)))
    gy = g * out * safe_log
    return [sum_to(gx, x.shape), sum_to(gy, y.shape)]


def _minmax_vjp(g, out, x, y):
    """Ties share the cotangent equally, so the rule is symmetric in x and y."""
    in_x = convert_p(eq_p(x, out), dtype=out.dtype)
    in_y = convert_p(eq_p(y, out), dtype=out.dtype)
    share = g / (in_x + in_y)
    return [sum_to(share * in_x, x.shape), sum_to(share * in_y, y.shape)]


add_p = _binary("add", np.add, _add_vjp)
sub_p = _binary("sub", np.subtract, _sub_vjp)
mul_p = _binary("mul", np.multiply, _mul_vjp)
div_p = _binary("div", np.true_divide, _div_vjp)
pow_p = _binary("pow", np.power, _pow_vjp)
max_p = _binary("max", np.maximum, _minmax_vjp)
min_p = _binary("min", np.minimum, _minmax_vjp)


def _no_grad(g, out, *ins):
    return [None] * len(ins)


gt_p = _binary("gt", np.greater, _no_grad, result=np.bool_)
ge_p = _binary("ge", np.greater_equal, _no_grad, result=np.bool_)
lt_p = _binary("lt", np.less, _no_grad, result=np.bool_)
le_p = _binary("le", np.less_equal, _no_grad, result=np.bool_)
eq_p = _binary("eq", np.equal, _no_grad, result=np.bool_)
ne_p = _binary("ne", np.not_equal, _no_grad, result=np.bool_)
and_p = _binary("and", np.logical_and, _no_grad, result=np.bool_)
or_p = _binary("or", np.logical_or, _no_grad, result=np.bool_)

# -- select, convert, stop_gradient --------------------------------------------------------------

where_p = Primitive("where")


def _where_shape(c: Aval, x: Aval, y: Aval) -> Aval:
    if c.dtype != np.bool_:
        raise TypeError(f"where: the condition must be bool, found {c.dtype}")
    dtype = _same_dtype("where", [x, y])
    return Aval(broadcast_shapes("where", c.shape, x.shape, y.shape), dtype)


def _where_vjp(g, out, c, x, y):
    zero = Literal(0, g.dtype)
    return [None, sum_to(where_p(c, g, zero), x.shape), sum_to(where_p(c, zero, g), y.shape)]


where_p.shape_rule = _where_shape
where_p.impl = np.where
where_p.vjp = _where_vjp

convert_p = Primitive("convert")
convert_p.shape_rule = lambda x, *, dtype: Aval(x.shape, dtype)
convert_p.impl = lambda x, *, dtype: np.asarray(x).astype(dtype)


def _convert_vjp(g, out, x, *, dtype):
    return [convert_p(g, dtype=x.dtype) if _float(x.aval) else None]


convert_p.vjp = _convert_vjp

stop_gradient_p = Primitive("stop_gradient", view=True)
stop_gradient_p.shape_rule = lambda x: x
stop_gradient_p.impl = lambda x: x
stop_gradient_p.vjp = lambda g, out, x: [None]

# -- matmul -------------------------------------------------------------------------------------

matmul_p = Primitive("matmul")


def _matmul_shape(a: Aval, b: Aval) -> Aval:
    dtype = _same_dtype("matmul", [a, b])
    if a.ndim < 2 or b.ndim < 2:
        raise TypeError("matmul_p takes operands of rank 2 or more; the tracer reshapes vectors")
    if a.shape[-1] != b.shape[-2]:
        raise ShapeError(
            f"matmul: cannot multiply {a.shape} by {b.shape}: the inner dimensions "
            f"{a.shape[-1]} and {b.shape[-2]} must be equal")
    batch = broadcast_shapes("matmul", a.shape[:-2], b.shape[:-2])
    return Aval(batch + (a.shape[-2], b.shape[-1]), dtype)


def _matmul_vjp(g, out, a, b):
    ga = matmul_p(g, transpose_p(b, perm=_swap_last(b.ndim)))
    if a.ndim > 2 and b.ndim == 2:
        # (..., m, k) @ (k, n): fold the batch axes into m for one big product.
        a2 = reshape_p(a, shape=(int(np.prod(a.shape[:-1])), a.shape[-1]))
        g2 = reshape_p(g, shape=(int(np.prod(g.shape[:-1])), g.shape[-1]))
        gb = matmul_p(transpose_p(a2, perm=(1, 0)), g2)
    else:
        gb = matmul_p(transpose_p(a, perm=_swap_last(a.ndim)), g)
    return [sum_to(ga, a.shape), sum_to(gb, b.shape)]


def _swap_last(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


matmul_p.shape_rule = _matmul_shape
matmul_p.impl = np.matmul
matmul_p.vjp = _matmul_vjp

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


reduce_sum_p = Primitive("reduce_sum")
reduce_sum_p.shape_rule = lambda x, *, axes, keepdims: Aval(
    _reduced_shape("sum", x, axes, keepdims), x.dtype)
reduce_sum_p.impl = lambda x, *, axes, keepdims: np.add.reduce(x, axis=axes, keepdims=keepdims)
reduce_sum_p.vjp = lambda g, out, x, *, axes, keepdims: [
    broadcast_to_p(_kept(g, x.shape, axes, keepdims), shape=x.shape)]

reduce_max_p = Primitive("reduce_max")


def _reduce_max_shape(x: Aval, *, axes, keepdims) -> Aval:
    if x.size == 0:
        raise ShapeError(f"max: cannot take the maximum of an empty value of shape {x.shape}")
    return Aval(_reduced_shape("max", x, axes, keepdims), x.dtype)


def _reduce_max_vjp(g, out, x, *, axes, keepdims):
    out_k = _kept(out, x.shape, axes, keepdims)
    mask = convert_p(eq_p(x, broadcast_to_p(out_k, shape=x.shape)), dtype=x.dtype)
    count = reduce_sum_p(mask, axes=axes, keepdims=True)
    return [mask * (_kept(g, x.shape, axes, keepdims) / count)]


reduce_max_p.shape_rule = _reduce_max_shape
reduce_max_p.impl = lambda x, *, axes, keepdims: np.maximum.reduce(x, axis=axes, keepdims=keepdims)
reduce_max_p.vjp = _reduce_max_vjp

# -- shape manipulation (views) -----------------------------------------------------------------

broadcast_to_p = Primitive("broadcast_to", view=True)


def _broadcast_to_shape(x: Aval, *, shape) -> Aval:
    if broadcast_shapes("broadcast_to", x.shape, shape) != tuple(shape):
        raise ShapeError(f"broadcast_to: cannot broadcast {x.shape} to {tuple(shape)}")
    return Aval(shape, x.dtype)


broadcast_to_p.shape_rule = _broadcast_to_shape
broadcast_to_p.impl = lambda x, *, shape: np.broadcast_to(x, shape)
broadcast_to_p.vjp = lambda g, out, x, *, shape: [sum_to(g, x.shape)]

reshape_p = Primitive("reshape", view=True)


def _reshape_shape(x: Aval, *, shape) -> Aval:
    if int(np.prod(shape, dtype=np.int64)) != x.size or any(d < 0 for d in shape):
        raise ShapeError(f"reshape: cannot reshape a value of shape {x.shape} "
                         f"({x.size} elements) to {tuple(shape)}")
    return Aval(shape, x.dtype)


reshape_p.shape_rule = _reshape_shape
reshape_p.impl = lambda x, *, shape: np.reshape(x, shape)
reshape_p.vjp = lambda g, out, x, *, shape: [reshape_p(g, shape=x.shape)]

transpose_p = Primitive("transpose", view=True)


def _transpose_shape(x: Aval, *, perm) -> Aval:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: axes {tuple(perm)} are not a permutation of the "
                         f"{x.ndim} axes of a value of shape {x.shape}")
    return Aval(tuple(x.shape[i] for i in perm), x.dtype)


transpose_p.shape_rule = _transpose_shape
transpose_p.impl = lambda x, *, perm: np.transpose(x, perm)
transpose_p.vjp = lambda g, out, x, *, perm: [transpose_p(g, perm=tuple(np.argsort(perm)))]

concatenate_p = Primitive("concatenate")


def _concatenate_shape(*xs: Aval, axis) -> Aval:
    dtype = _same_dtype("concatenate", xs)
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
        index = (slice(None),) * axis + (slice(start, stop),)
        cts.append(getitem_p(g, index=index))
        start = stop
    return cts


concatenate_p.shape_rule = _concatenate_shape
concatenate_p.impl = lambda *xs, axis: np.concatenate(xs, axis=axis)
concatenate_p.vjp = _concatenate_vjp

# -- indexing -----------------------------------------------------------------------------------


def _indexed_shape(shape: tuple, index) -> tuple:
    probe = np.broadcast_to(np.zeros((), np.int8), shape)
    try:
        return probe[index].shape
    except IndexError as error:
        raise ShapeError(f"index {_index_text(index)} does not fit a value of shape {shape}: "
                         f"{error}") from None


def _index_text(index) -> str:
    def one(i):
        if isinstance(i, slice):
            parts = ("" if v is None else str(v) for v in (i.start, i.stop, i.step))
            return ":".join(parts).rstrip(":") or ":"
        if isinstance(i, np.ndarray):
            return f"array{i.shape}"
        return repr(i)
    return "[" + ", ".join(one(i) for i in index) + "]"


def _is_basic(index) -> bool:
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) for i in index)


getitem_p = Primitive("getitem")
getitem_p.shape_rule = lambda x, *, index: Aval(_indexed_shape(x.shape, index), x.dtype)
getitem_p.impl = lambda x, *, index: x[index]
getitem_p.vjp = lambda g, out, x, *, index: [index_add_p(g, index=index, shape=x.shape)]

index_add_p = Primitive("index_add")


def _index_add_shape(g: Aval, *, index, shape) -> Aval:
    expected = _indexed_shape(shape, index)
    if g.shape != expected:
        raise ShapeError(f"index_add: a value of shape {g.shape} cannot fill {_index_text(index)} "
                         f"of shape {shape}, which is {expected}")
    return Aval(shape, g.dtype)


def _index_add_impl(g, *, index, shape):
    """zeros(shape) with g added at [index] (repeated indices accumulate)."""
    out = np.zeros(shape, g.dtype)
    if _is_basic(index):
        out[index] = g
    else:
        np.add.at(out, index, g)
    return out


index_add_p.shape_rule = _index_add_shape
index_add_p.impl = _index_add_impl
index_add_p.vjp = lambda g, out, x, *, index, shape: [getitem_p(g, index=index)]

PRIMITIVES = [value for value in list(globals().values()) if isinstance(value, Primitive)]
"""Every primitive, in definition order: the list a backend must implement."""
