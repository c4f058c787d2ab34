"""Numerical helpers of the conformance kit: tolerances, `assert_close`, `assert_grads_close`
and `finite_differences`. They use only NumPy, so a backend's own tests can reuse them."""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["RTOL", "ATOL", "GRAD_RTOL", "FD_EPS", "assert_close", "assert_grads_close",
           "finite_differences", "leaves"]

RTOL = 1e-4
"""Relative tolerance of a float32 result against a float64 reference."""

ATOL = 1e-5
"""Absolute tolerance of a float32 result against a float64 reference (for values near 0)."""

GRAD_RTOL = 2e-3
"""Tolerance of a float32 gradient against float64 central differences, relative to the
largest entry of the expected gradient (see `assert_grads_close`)."""

FD_EPS = 1e-6
"""Step of the central differences (taken in float64)."""


def leaves(value) -> list:
    """The arrays in a value nested in tuples and lists, in order (a bare array is one leaf)."""
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


def _where_worst(diff: np.ndarray) -> str:
    if diff.ndim == 0:
        return ""
    return f" at index {np.unravel_index(int(np.nanargmax(diff)), diff.shape)}"


def assert_close(actual, expected, *, rtol: float = RTOL, atol: float = ATOL,
                 what: str = "value") -> None:
    """Assert that `actual` has `expected`'s shape and ``|actual - expected| <= atol + rtol *
    |expected|`` elementwise (NaNs must match). Nested tuples and lists are compared leaf by
    leaf, dicts key by key. The message names `what`, the worst element and both values there.

    >>> assert_close(np.float32([1.0, 2.0]), np.array([1.0, 2.0 + 1e-7]))
    """
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and list(actual) == list(expected), (
            f"{what}: expected a dict with keys {list(expected)}, found {actual!r:.80}")
        for key in expected:
            assert_close(actual[key], expected[key], rtol=rtol, atol=atol, what=f"{what}[{key!r}]")
        return
    if isinstance(expected, (tuple, list)):
        assert isinstance(actual, (tuple, list)) and len(actual) == len(expected), (
            f"{what}: expected a {type(expected).__name__} of {len(expected)} items, "
            f"found {type(actual).__name__}"
            + (f" of {len(actual)} items" if isinstance(actual, (tuple, list)) else ""))
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, rtol=rtol, atol=atol, what=f"{what}[{i}]")
        return
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: expected shape {e.shape}, found {a.shape}"
    if e.dtype == np.bool_ or a.dtype == np.bool_:
        wrong = np.argwhere(a != e)
        assert not wrong.size, (f"{what}: {len(wrong)} of {e.size} elements differ, first at "
                                f"index {tuple(wrong[0])}: {a[tuple(wrong[0])]} != "
                                f"{e[tuple(wrong[0])]}")
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaNs differ: found {a}, expected {e}"
    diff = np.where(nan_e, 0.0, np.abs(a64 - e64))
    allowed = atol + rtol * np.abs(np.where(nan_e, 0.0, e64))
    if np.all(diff <= allowed):
        return
    excess = np.where(diff > allowed, diff / np.maximum(allowed, 1e-300), 0.0)
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.ndim else ()
    raise AssertionError(
        f"{what}: {int(np.sum(diff > allowed))} of {e.size} elements differ beyond "
        f"rtol={rtol:g}, atol={atol:g}; worst{_where_worst(excess)}: found {a64[worst]!r}, "
        f"expected {e64[worst]!r} (max abs difference {float(diff.max()):.3g})")


def assert_grads_close(actual, expected, *, rtol: float = GRAD_RTOL, what: str = "gradient"
                       ) -> None:
    """Assert a computed gradient matches an expected (finite-difference) one: same shape,
    and every element within ``rtol * (|expected| + max|expected|) + 1e-7``.

    Scaling by the largest entry keeps the check meaningful for entries that are small only
    because of cancellation, where float32 rounding dominates (errors there are measured
    against the gradient's size, not against the tiny entry).
    """
    e = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(e))) if e.size else 0.0
    assert_close(actual, e, rtol=rtol, atol=rtol * scale + 1e-7, what=what)


def finite_differences(f: Callable[..., float], *xs, eps: float = FD_EPS) -> list[np.ndarray]:
    """Central differences ``(f(x + eps) - f(x - eps)) / 2 eps`` of the scalar function
    `f(*xs)` with respect to every element of every array in `xs`, in float64.

    The arrays are copied to float64 first, and `f` always receives those copies, so write `f`
    with plain NumPy operations that keep float64. Returns one gradient array per `x`.

    >>> [g] = finite_differences(lambda x: float(np.sum(x ** 2)), np.array([1.0, -2.0]))
    >>> np.round(g, 6)
    array([ 2., -4.])
    """
    xs = [np.array(x, dtype=np.float64) for x in xs]
    grads = []
    for x in xs:
        grad = np.zeros_like(x)
        flat, flat_grad = x.reshape(-1), grad.reshape(-1)   # views: writes reach `x`
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + eps
            up = float(f(*xs))
            flat[i] = saved - eps
            down = float(f(*xs))
            flat[i] = saved
            flat_grad[i] = (up - down) / (2 * eps)
        grads.append(grad)
    return grads
