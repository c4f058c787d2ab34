"""ONNX's elementwise arithmetic: unary math, the binary operators, the variadic ones (Max,
Min, Sum, Mean), Clip, rounding and Cast, each as NumPy's function on flux values.

ONNX's types are strict: both inputs of a binary operator have one dtype (Pow's exponent is
the exception, and is converted to the base's), so NumPy's promotion never changes a
result's dtype here. Where ONNX and NumPy differ, the formula is written out:

- integer ``Div`` truncates toward zero: ``trunc(a / b)``, computed in float64 when traced
  (exact for |a| < 2⁵³) and exactly in integers when known;
- ``Floor``, ``Ceil``, ``Round`` (half to even) from ``t = trunc(x)``, a conversion to int64
  and back, used only where ``|x| < 2^mantissa`` (larger floats are integers already);
- ``Tan = sin/cos``, ``Sinh``, ``Cosh``, ``Asinh``, ``Acosh``, ``Atanh`` from exp, log and
  sqrt (accurate to a few float32 roundings); ``Asin``, ``Acos``, ``Atan`` have no such form
  and are computed on known values only.
"""
from __future__ import annotations

import functools

import numpy as np

from flux.onnx.files import tensor_dtype
from flux.onnx.operators.arguments import NO_PRIMITIVE, folded, traced
from flux.onnx.operators.registry import operator

# -- unary --------------------------------------------------------------------------------------

_UNARY = {
    "Abs": np.abs, "Neg": np.negative, "Exp": np.exp, "Log": np.log, "Sqrt": np.sqrt,
    "Sin": np.sin, "Cos": np.cos, "Sign": np.sign, "Reciprocal": np.reciprocal,
}


def _unary(fn):
    def apply(node, x):
        return fn(x)
    apply.__name__ = fn.__name__
    return apply


for _op, _fn in _UNARY.items():
    operator(_op)(_unary(_fn))


@operator("Tan", since=7)
def tan(node, x):
    """tan x = sin x / cos x."""
    return np.sin(x) / np.cos(x)


@operator("Sinh", since=9)
def sinh(node, x):
    """sinh x = (eˣ − e⁻ˣ) / 2."""
    return (np.exp(x) - np.exp(-x)) * 0.5


@operator("Cosh", since=9)
def cosh(node, x):
    """cosh x = (eˣ + e⁻ˣ) / 2."""
    return (np.exp(x) + np.exp(-x)) * 0.5


@operator("Asinh", since=9)
def asinh(node, x):
    """asinh x = sign(x) · log(|x| + √(x² + 1)) (odd, so no cancellation for x < 0)."""
    a = np.abs(x)
    return np.sign(x) * np.log(a + np.sqrt(a * a + 1))


@operator("Acosh", since=9)
def acosh(node, x):
    """acosh x = log(x + √(x² − 1))."""
    return np.log(x + np.sqrt(x * x - 1))


@operator("Atanh", since=9)
def atanh(node, x):
    """atanh x = log((1 + x) / (1 − x)) / 2."""
    return np.log((1 + x) / (1 - x)) * 0.5


@folded("Asin", "Acos", "Atan", since=7)
def inverse_trigonometric(node, x):
    """asin, acos, atan: NumPy's, on known values."""
    return {"Asin": np.arcsin, "Acos": np.arccos, "Atan": np.arctan}[node.op_type](x)


@operator("IsNaN", since=9)
def isnan(node, x):
    """isnan x = (x ≠ x)."""
    return np.not_equal(x, x)


@operator("IsInf", since=10)
def isinf(node, x):
    """x = +∞ (unless detect_positive=0) or x = −∞ (unless detect_negative=0)."""
    positive = np.equal(x, np.inf) if node.attr("detect_positive", 1) else None
    negative = np.equal(x, -np.inf) if node.attr("detect_negative", 1) else None
    if positive is not None and negative is not None:
        return np.logical_or(positive, negative)
    found = positive if positive is not None else negative
    return found if found is not None else np.zeros_like(x, dtype=bool)


# -- rounding -----------------------------------------------------------------------------------


def _trunc(x):
    """trunc x: a conversion to int64 and back where |x| < 2^mantissa, x itself elsewhere
    (those floats, ±∞ and NaN are their own truncation)."""
    if not traced(x):
        return np.trunc(x)
    limit = float(2 ** np.finfo(x.dtype).nmant)
    small = np.less(np.abs(x), limit)
    t = np.where(small, x, 0).astype(np.int64).astype(x.dtype)
    return np.where(small, t, x)


@operator("Floor", since=6)
def floor(node, x):
    """floor x = t − (t > x), t = trunc x."""
    if not traced(x):
        return np.floor(x)
    t = _trunc(x)
    return t - np.greater(t, x).astype(x.dtype)


@operator("Ceil", since=6)
def ceil(node, x):
    """ceil x = t + (t < x), t = trunc x."""
    if not traced(x):
        return np.ceil(x)
    t = _trunc(x)
    return t + np.less(t, x).astype(x.dtype)


@operator("Round", since=11)
def round_(node, x):
    """round x, halves to even (see `round_half_even`)."""
    return round_half_even(x)


def round_half_even(x):
    """round x, halves to even: t + sign(x)·[|f| > ½ or (|f| = ½ and t odd)], t = trunc x,
    f = x − t."""
    if not traced(x):
        return np.round(x)
    t = _trunc(x)
    f = np.abs(x - t)
    odd = np.not_equal(t - 2 * _trunc(t * 0.5), 0)
    up = np.logical_or(np.greater(f, 0.5), np.logical_and(np.equal(f, 0.5), odd))
    return t + np.sign(x) * up.astype(x.dtype)


# -- binary -------------------------------------------------------------------------------------


def _binary(fn):
    def apply(node, a, b):
        return fn(a, b)
    apply.__name__ = fn.__name__
    return apply


for _op, _fn in {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}.items():
    operator(_op)(_binary(_fn))


@operator("Div")
def div(node, a, b):
    """a / b; for integers trunc(a / b), as C divides."""
    if a.dtype.kind not in "iu":
        return np.divide(a, b)
    if not traced(a, b):
        a, b = np.asarray(a), np.asarray(b)
        q = np.abs(a) // np.where(b == 0, 1, np.abs(b))
        return np.where(np.less(a, 0) != np.less(b, 0), -q, q).astype(a.dtype)
    q = np.divide(a.astype(np.float64), b.astype(np.float64))
    return q.astype(a.dtype)            # (the conversion truncates toward zero)


@operator("Pow")
def pow_(node, x, y):
    """xʸ in x's dtype (ONNX allows another dtype for y); integer powers rounded to the
    nearest integer when computed in floats."""
    dtype = x.dtype
    if dtype.kind == "f":
        return np.power(x, y.astype(dtype) if y.dtype != dtype else y)
    if not traced(x, y) and y.dtype.kind in "iu" and np.all(np.asarray(y) >= 0):
        return np.power(np.asarray(x), np.asarray(y).astype(dtype))
    p = np.power(x.astype(np.float64), y.astype(np.float64))
    return np.where(np.less(p, 0), p - 0.5, p + 0.5).astype(dtype)


@operator("Mod", since=10)
def mod(node, a, b):
    """fmod=1: a − b·trunc(a/b) (C's fmod, the sign of a); fmod=0 (integers only): the
    remainder with the sign of b (Python's %). Traced: integers only (exact for
    |a| < 2⁵³); a float remainder needs known values."""
    c_style = bool(node.attr("fmod", 0))
    if not traced(a, b):
        return (np.fmod if c_style else np.mod)(a, b)
    if a.dtype.kind not in "iu":
        raise node.error(NO_PRIMITIVE.format(op="Mod of floats", which="(a traced float)"))
    q = np.divide(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)
    r = a - b * q
    if c_style or a.dtype.kind == "u":
        return r
    wrong_sign = np.logical_and(np.not_equal(r, 0), np.not_equal(np.less(r, 0), np.less(b, 0)))
    return np.where(wrong_sign, r + b, r)


# -- variadic -----------------------------------------------------------------------------------


def _variadic(fn):
    def apply(node, *xs):
        xs = [x for x in xs if x is not None]
        if not xs:
            raise node.error("needs at least one input")
        return functools.reduce(fn, xs)
    apply.__name__ = fn.__name__
    return apply


for _op, _fn in {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}.items():
    operator(_op)(_variadic(_fn))


@operator("Mean")
def mean(node, *xs):
    """(x₁ + … + xₙ) / n, broadcast."""
    xs = [x for x in xs if x is not None]
    return functools.reduce(np.add, xs) / np.asarray(len(xs), xs[0].dtype)


# -- clip and casts -----------------------------------------------------------------------------


@operator("Clip")
def clip_attributes(node, x):
    """Opsets 1-10: min(max(x, min), max), the bounds as attributes."""
    low, high = node.attr("min"), node.attr("max")
    low = None if low is None else np.asarray(low, x.dtype)
    high = None if high is None else np.asarray(high, x.dtype)
    return np.clip(x, low, high) if low is not None or high is not None else x


@operator("Clip", since=11)
def clip(node, x, low=None, high=None):
    """min(max(x, low), high); a left-out bound does not clip (min > max gives max)."""
    if low is None and high is None:
        return x
    return np.clip(x, low, high)


def _dtype_of(node, elem_type: int) -> np.dtype:
    dtype = tensor_dtype(elem_type)
    if dtype is None:
        raise node.error(f"converts to ONNX type {elem_type}, which flux does not compute with "
                         f"(it computes with bool, integers and float16/32/64)")
    return dtype


@operator("Cast")
def cast(node, x):
    """x converted to the type `to` (floats to integers truncate toward zero)."""
    dtype = _dtype_of(node, node.attr("to"))
    return x if x.dtype == dtype else x.astype(dtype)


@operator("CastLike", since=15)
def cast_like(node, x, like):
    """x converted to the dtype of `like`."""
    return x if x.dtype == like.dtype else x.astype(like.dtype)
