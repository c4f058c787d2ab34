"""Elementwise primitives: NumPy broadcasting, equal input dtypes (the tracer converts), one
result of the broadcast shape. Each is declared with its NumPy implementation and gradient
rule; a rule may return a cotangent of the broadcast shape (autodiff sums it back down)."""
from __future__ import annotations

import numpy as np

from flux.errors import ShapeError
from flux.ir.graph import Aval, Literal
from flux.ir.trace import Primitive

__all__ = ["broadcast_shapes", "same_dtype", "elementwise"]


def broadcast_shapes(name: str, *shapes) -> tuple:
    """NumPy broadcasting of `shapes`, or a ShapeError naming them."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        listed = " and ".join(str(tuple(s)) for s in shapes)
        raise ShapeError(f"{name}: shapes {listed} cannot be broadcast together "
                         f"(each axis must be equal or 1, aligned from the right)") from None


def same_dtype(name: str, avals) -> np.dtype:
    dtypes = {a.dtype for a in avals}
    if len(dtypes) != 1:
        raise TypeError(f"{name}: inputs have dtypes {sorted(str(d) for d in dtypes)}; "
                        f"the tracer should have converted them")
    return avals[0].dtype


def _float(aval: Aval) -> bool:
    return aval.dtype.kind in "fc"


def elementwise(name: str, impl, vjp, *, arity: int, floats_only: bool = False,
                result_dtype=None) -> Primitive:
    """Declare an elementwise primitive of `arity` (1 or 2) inputs (see the module docstring)."""
    result = None if result_dtype is None else np.dtype(result_dtype)

    def check(x: Aval) -> None:
        if floats_only and not _float(x):
            raise TypeError(f"{name} needs a floating input, found {x.dtype}")

    def unary(x: Aval) -> Aval:
        check(x)
        return x if result is None else Aval(x.shape, result)

    def binary(x: Aval, y: Aval) -> Aval:
        if x.dtype != y.dtype:
            same_dtype(name, [x, y])          # raises, naming both
        check(x)
        shape = x.shape if x.shape == y.shape else broadcast_shapes(name, x.shape, y.shape)
        return Aval(shape, result or x.dtype)

    rules = {1: unary, 2: binary}
    return Primitive(name, impl=impl, shape_rule=rules[arity], vjp=vjp, elementwise=True,
                     floats_only=floats_only, result_dtype=result_dtype)


def _no_grad(g, out, *ins):
    return [None] * len(ins)


# -- unary --------------------------------------------------------------------------------------

neg_p = elementwise("neg", np.negative, lambda g, out, x: [-g], arity=1)
exp_p = elementwise("exp", np.exp, lambda g, out, x: [g * out], arity=1, floats_only=True)
log_p = elementwise("log", np.log, lambda g, out, x: [g / x], arity=1, floats_only=True)
tanh_p = elementwise("tanh", np.tanh, lambda g, out, x: [g * (1 - out * out)], arity=1,
                     floats_only=True)
sqrt_p = elementwise("sqrt", np.sqrt, lambda g, out, x: [g / (2 * out)], arity=1,
                     floats_only=True)
sin_p = elementwise("sin", np.sin, lambda g, out, x: [g * cos_p(x)], arity=1, floats_only=True)
cos_p = elementwise("cos", np.cos, lambda g, out, x: [-(g * sin_p(x))], arity=1,
                    floats_only=True)
abs_p = elementwise("abs", np.abs, lambda g, out, x: [g * sign_p(x)], arity=1)
sign_p = elementwise("sign", np.sign, _no_grad, arity=1)


def _relu(x):
    return np.maximum(x, x.dtype.type(0))


def _relu_vjp(g, out, x):
    """relu'(x) = 1 where x > 0, else 0 (0 at x = 0, as in PyTorch and Keras)."""
    return [g * convert_p(gt_p(out, Literal(0, out.dtype)), dtype=out.dtype)]


def _logistic(x):
    """σ(x) = 1 / (1 + exp(-x)), computed as (tanh(x/2) + 1)/2: no overflow for any x."""
    out = np.multiply(x, 0.5)
    if out.ndim:
        np.tanh(out, out=out)
        np.multiply(out, 0.5, out=out)
        np.add(out, 0.5, out=out)
        return out
    return np.tanh(out) * out.dtype.type(0.5) + out.dtype.type(0.5)


# relu and logistic are primitives, not composites, because their kernels are much faster
# than the composites (np.where on a random mask is ~8x slower than np.maximum) and every
# backend library has them natively
relu_p = elementwise("relu", _relu, _relu_vjp, arity=1, floats_only=True)
logistic_p = elementwise("logistic", _logistic, lambda g, out, x: [g * out * (1 - out)],
                         arity=1, floats_only=True)

# -- binary -------------------------------------------------------------------------------------


def _pow_vjp(g, out, x, y):
    gx = g * y * pow_p(x, y - 1)
    safe_log = log_p(where_p(gt_p(x, Literal(0, x.dtype)), x, Literal(1, x.dtype)))
    return [gx, g * out * safe_log]


def _minmax_vjp(g, out, x, y):
    """Ties share the cotangent equally, so the rule is symmetric in x and y."""
    in_x = convert_p(eq_p(x, out), dtype=out.dtype)
    in_y = convert_p(eq_p(y, out), dtype=out.dtype)
    share = g / (in_x + in_y)
    return [share * in_x, share * in_y]


def _div_vjp(g, out, x, y):
    gx = g / y
    return [gx, -(gx * out)]


def _logaddexp_vjp(g, out, x, y):
    """d/dx log(eˣ + eʸ) = eˣ⁻ᵒᵘᵗ, likewise for y (both ≤ 1: no overflow)."""
    return [g * exp_p(x - out), g * exp_p(y - out)]


add_p = elementwise("add", np.add, lambda g, out, x, y: [g, g], arity=2)
sub_p = elementwise("sub", np.subtract, lambda g, out, x, y: [g, -g], arity=2)
mul_p = elementwise("mul", np.multiply, lambda g, out, x, y: [g * y, g * x], arity=2)
div_p = elementwise("div", np.true_divide, _div_vjp, arity=2)
pow_p = elementwise("pow", np.power, _pow_vjp, arity=2)
max_p = elementwise("max", np.maximum, _minmax_vjp, arity=2)
min_p = elementwise("min", np.minimum, _minmax_vjp, arity=2)
logaddexp_p = elementwise("logaddexp", np.logaddexp, _logaddexp_vjp, arity=2,
                          floats_only=True)

gt_p = elementwise("gt", np.greater, _no_grad, arity=2, result_dtype=np.bool_)
ge_p = elementwise("ge", np.greater_equal, _no_grad, arity=2, result_dtype=np.bool_)
lt_p = elementwise("lt", np.less, _no_grad, arity=2, result_dtype=np.bool_)
le_p = elementwise("le", np.less_equal, _no_grad, arity=2, result_dtype=np.bool_)
eq_p = elementwise("eq", np.equal, _no_grad, arity=2, result_dtype=np.bool_)
ne_p = elementwise("ne", np.not_equal, _no_grad, arity=2, result_dtype=np.bool_)
and_p = elementwise("and", np.logical_and, _no_grad, arity=2, result_dtype=np.bool_)
or_p = elementwise("or", np.logical_or, _no_grad, arity=2, result_dtype=np.bool_)

# -- select, convert ----------------------------------------------------------------------------


def _where_shape(c: Aval, x: Aval, y: Aval) -> Aval:
    if c.dtype != np.bool_:
        raise TypeError(f"where: the condition must be bool, found {c.dtype}")
    dtype = same_dtype("where", [x, y])
    return Aval(broadcast_shapes("where", c.shape, x.shape, y.shape), dtype)


def _where_vjp(g, out, c, x, y):
    zero = Literal(0, g.dtype)
    return [None, where_p(c, g, zero), where_p(c, zero, g)]


where_p = Primitive("where", impl=np.where, shape_rule=_where_shape, vjp=_where_vjp,
                    elementwise=True)


def _convert_vjp(g, out, x, *, dtype):
    return [convert_p(g, dtype=x.dtype) if _float(x.aval) else None]


convert_p = Primitive("convert", impl=lambda x, *, dtype: np.asarray(x).astype(dtype),
                      shape_rule=lambda x, *, dtype: Aval(x.shape, dtype), vjp=_convert_vjp,
                      elementwise=True)
