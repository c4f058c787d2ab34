"""NumPy's elementwise functions on traced values: dtype promotion (NumPy 2's rules, on every
NumPy version) and the translation of each elementwise primitive into the NumPy function
users call (``np.add``, ``np.exp`` ...), with the few that NumPy defines differently."""
from __future__ import annotations

import numbers

import numpy as np

from flux.ir import primitives as P
from flux.ir.graph import Literal
from flux.ir.trace import Tracer, current_trace

# -- promotion ----------------------------------------------------------------------------------


def _is_weak(value) -> bool:
    return isinstance(value, (bool, numbers.Number)) and not isinstance(value, np.generic)


def lift(value):
    """A Param becomes its traced value (inside a trace); everything else is returned as is."""
    if getattr(value, "__flux_param__", False):
        trace = current_trace()
        return trace.param(value) if trace is not None else value.value
    return value


def _dtype(value):
    if isinstance(value, (Tracer, Literal)):
        return value.dtype
    return np.asarray(value).dtype


def promote(*values):
    """Convert `values` to one dtype as NumPy 2 would (Python numbers are weakly typed)."""
    values = [lift(v) for v in values]
    strong = [_dtype(v) for v in values if not _is_weak(v)]
    weak = [v for v in values if _is_weak(v)]
    target = np.result_type(*strong, *weak) if strong else np.result_type(*weak)
    return [_to_dtype(v, target) for v in values]


def _to_dtype(value, dtype):
    if _is_weak(value):
        return Literal(value, dtype)
    if isinstance(value, Literal):
        return value if value.dtype == dtype else Literal(value.value, dtype)
    if isinstance(value, Tracer):
        return value if value.dtype == dtype else P.convert_p(value, dtype=dtype)
    array = np.asarray(value)
    return array if array.dtype == dtype else array.astype(dtype)


def weights_dtype(x, weight):
    """`x` for a layer with floating weights: integers and bools in the weights' dtype (as
    Keras layers cast their inputs), floats as they are (NumPy's promotion then applies)."""
    x = lift(x)
    if _dtype(x).kind in "biu" and _dtype(weight).kind == "f":
        return _to_dtype(x, _dtype(weight))
    return x


def _floating(value):
    """Integers and bools become float64 before float-only functions, as in NumPy."""
    value = lift(value)
    if not isinstance(value, (Tracer, Literal)):
        value = np.asarray(value)
    if _dtype(value).kind in "fc":
        return value
    return _to_dtype(value, np.float64)


def translation(prim):
    """The NumPy function of an elementwise primitive, from its declaration: the inputs
    promoted together as NumPy 2 does, and made float64 first (as NumPy does) where the
    primitive needs floating inputs."""
    def apply(*xs):
        xs = promote(*xs) if len(xs) > 1 else [lift(xs[0])]
        if prim.floats_only and _dtype(xs[0]).kind not in "fc":
            xs = [_floating(x) for x in xs]
        return prim(*xs)
    apply.__name__ = prim.name
    return apply


add = translation(P.add_p)
subtract = translation(P.sub_p)
multiply = translation(P.mul_p)
maximum = translation(P.max_p)
minimum = translation(P.min_p)
greater = translation(P.gt_p)
greater_equal = translation(P.ge_p)
less = translation(P.lt_p)
less_equal = translation(P.le_p)
equal = translation(P.eq_p)
not_equal = translation(P.ne_p)
exp = translation(P.exp_p)
log = translation(P.log_p)
tanh = translation(P.tanh_p)
sqrt = translation(P.sqrt_p)
sin = translation(P.sin_p)
cos = translation(P.cos_p)
logistic = translation(P.logistic_p)
relu = translation(P.relu_p)


def divide(x, y):
    x, y = promote(x, y)
    if x.dtype.kind not in "fc":
        x, y = _to_dtype(x, np.float64), _to_dtype(y, np.float64)
    return P.div_p(x, y)


def power(x, y):
    if _is_weak(y) and y == 2:
        x = lift(x)
        return multiply(x, x)
    return P.pow_p(*promote(x, y))


def negative(x):
    return P.neg_p(lift(x))


def absolute(x):
    return P.abs_p(lift(x))


def sign(x):
    return P.sign_p(lift(x))


def logical_and(x, y):
    return P.and_p(_to_dtype(lift(x), np.bool_), _to_dtype(lift(y), np.bool_))


def logical_or(x, y):
    return P.or_p(_to_dtype(lift(x), np.bool_), _to_dtype(lift(y), np.bool_))


def logical_not(x):
    return equal(_to_dtype(lift(x), np.bool_), False)


def square(x):
    x = lift(x)
    return multiply(x, x)


def reciprocal(x):
    return divide(1, x)


def log1p(x):
    return log(add(_floating(x), 1))


def expm1(x):
    return subtract(exp(x), 1)


def positive(x):
    return lift(x)
