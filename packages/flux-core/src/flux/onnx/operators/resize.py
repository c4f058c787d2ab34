"""ONNX's Resize (and the older Upsample): separable interpolation with static sizes.

The scales or sizes must be known while tracing. Each resized axis is interpolated on its
own: output position y (0 … m−1) reads the input at the coordinate x(y) of the
`coordinate_transformation_mode` (with s = m_float/n the scale, n the input length)::

    half_pixel            x = (y + ½)/s − ½          asymmetric     x = y/s
    pytorch_half_pixel    x = (y + ½)/s − ½ (0 … −½ when m = 1)
    align_corners         x = y (n − 1)/(m − 1)      (0 when m = 1)
    half_pixel_symmetric  x = c(1 − m/m_float) + (y + ½)/s − ½,  c = n/2
    tf_crop_and_resize    x = r₀(n − 1) + y (r₁ − r₀)(n − 1)/(m − 1), outside [0, n−1]:
                          the extrapolation_value

and combines the input at the k integer positions nearest x (ties to the smaller one),
clamped to the axis (the edge repeats): ``Σⱼ K(x − iⱼ) · in[iⱼ]`` with the kernel K of the
mode: nearest takes one position (rounded as `nearest_mode` says), linear
``K(d) = max(1 − |d|, 0)`` (k = 2), cubic ``K(d) = (A+2)|d|³ − (A+3)|d|² + 1`` for |d| ≤ 1,
``A|d|³ − 5A|d|² + 8A|d| − 4A`` for 1 < |d| < 2 (k = 4, A = `cubic_coeff_a`). With
`antialias` and s < 1 the kernel is stretched, ``K(s·d)``, over ``k = 2⌈1/s⌉``-ish positions
and normalised; `exclude_outside` drops (and renormalises away) positions outside the axis.

The positions and weights are computed in NumPy (float64) while tracing; the traced part is
one gather per kernel position and a weighted sum (nearest: a single gather, exact).
"""
from __future__ import annotations

import math

import numpy as np

from flux.onnx.operators.arguments import axis_of
from flux.onnx.operators.registry import known, operator, static

_MODES = ("nearest", "linear", "cubic")


def _coordinates(mode: str, m: int, n: int, scale: float, roi) -> np.ndarray:
    """x(y) for y = 0 … m−1 (see the module docstring)."""
    y = np.arange(m, dtype=np.float64)
    length = scale * n                                  # the output length, unrounded
    if mode == "asymmetric":
        return y / scale
    if mode == "align_corners":
        return np.zeros(m) if length == 1 else y * (n - 1) / (length - 1)
    if mode == "pytorch_half_pixel":
        return np.full(m, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        return (n / 2) * (1 - m / length) + (y + 0.5) / scale - 0.5
    start, end = roi
    if length == 1:
        return np.full(m, (end - start) * (n - 1) / 2 + start * (n - 1))
    return start * (n - 1) + y * (end - start) * (n - 1) / (length - 1)


def _nearest(node, x: np.ndarray) -> np.ndarray:
    rule = node.attr("nearest_mode", "round_prefer_floor")
    if rule == "round_prefer_floor":
        return np.ceil(x - 0.5)
    if rule == "round_prefer_ceil":
        return np.floor(x + 0.5)
    if rule == "floor":
        return np.floor(x)
    if rule == "ceil":
        return np.ceil(x)
    raise node.error(f"nearest_mode {rule!r} is not one flux knows")


def _kernel(mode: str, a: float):
    if mode == "linear":
        return lambda d: np.maximum(1 - np.abs(d), 0)

    def cubic(d):
        d = np.abs(d)
        near = ((a + 2) * d - (a + 3)) * d * d + 1
        far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    return cubic


def _taps(node, mode: str, x: np.ndarray, n: int, scale: float):
    """``(positions (m, k), weights (m, k))`` of one axis' interpolation."""
    if mode == "nearest":
        nearest = np.clip(_nearest(node, x), 0, n - 1).astype(np.int64)
        return nearest[:, None], np.ones((len(x), 1))
    stretch = min(scale, 1.0) if node.attr("antialias", 0) else 1.0
    support = 1 if mode == "linear" else 2
    k = 2 * support if stretch == 1.0 else 2 - 2 * (math.floor(-support / stretch) + 1)
    first = np.ceil(x) - k // 2                        # the k nearest, ties to the smaller
    positions = first[:, None] + np.arange(k)[None, :]
    kernel = _kernel(mode, node.attr("cubic_coeff_a", -0.75))
    weights = kernel(stretch * (x[:, None] - positions))
    if node.attr("exclude_outside", 0):
        weights = np.where((positions < 0) | (positions > n - 1), 0.0, weights)
    if stretch != 1.0 or node.attr("exclude_outside", 0):
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1, total)
    return np.clip(positions, 0, n - 1).astype(np.int64), weights


def _along(node, value, axis: int, m: int, scale: float, roi, mode: str):
    """`value` resized along `axis` to length m."""
    n = value.shape[axis]
    transform = node.attr("coordinate_transformation_mode", "half_pixel")
    x = _coordinates(transform, m, n, scale, roi)
    positions, weights = _taps(node, mode, x, n, scale)
    shape = [1] * len(value.shape)
    shape[axis] = m
    out = None
    for j in range(positions.shape[1]):
        picked = np.take(value, positions[:, j], axis=axis)
        if mode != "nearest":
            picked = picked * weights[:, j].reshape(shape).astype(value.dtype)
        out = picked if out is None else out + picked
    if transform == "tf_crop_and_resize":
        outside = ((x < 0) | (x > n - 1)).reshape(shape)
        if outside.any():
            fill = np.asarray(node.attr("extrapolation_value", 0.0), value.dtype)
            out = np.where(outside, fill, out)
    return out


def _resize(node, x, roi, scales, sizes, mode: str):
    if mode not in _MODES:
        raise node.error(f"mode {mode!r} is not one of {', '.join(_MODES)}")
    ndim = len(x.shape)
    axes = node.attr("axes")
    axes = list(range(ndim)) if axes is None else [axis_of(node, a, ndim) for a in axes]
    shape = [int(d) for d in x.shape]
    if sizes is not None and np.size(sizes):
        sizes = [int(v) for v in static(node, sizes, "sizes").reshape(-1)]
        ratios = [s / shape[a] for s, a in zip(sizes, axes)]
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        if policy in ("not_larger", "not_smaller"):
            pick = min if policy == "not_larger" else max
            ratios = [pick(ratios)] * len(axes)
            sizes = [int(math.floor(r * shape[a] + 0.5)) for r, a in zip(ratios, axes)]
    elif scales is not None and np.size(scales):
        ratios = [float(v) for v in static(node, scales, "scales").reshape(-1)]
        sizes = [int(r * shape[a]) for r, a in zip(ratios, axes)]
    else:
        raise node.error("needs scales or sizes")
    if len(ratios) != len(axes):
        raise node.error(f"has {len(ratios)} scales or sizes for {len(axes)} axes")
    if roi is not None and np.size(roi) and not known(roi):
        raise node.error("its roi must be known when the model is traced")
    boxes = None if roi is None or not np.size(roi) else np.asarray(roi, np.float64).reshape(-1)
    for k, (axis, m, ratio) in enumerate(zip(axes, sizes, ratios)):
        if m == shape[axis] and math.isclose(ratio, 1.0):
            continue
        if m <= 0:
            raise node.error(f"gives axis {axis} the size {m}")
        box = None
        if boxes is not None:
            half = len(boxes) // 2
            box = (boxes[k], boxes[half + k]) if half == len(axes) else (boxes[axis],
                                                                        boxes[ndim + axis])
        x = _along(node, x, axis, m, ratio, box or (0.0, 1.0), mode)
    return x


@operator("Resize", since=10)
def resize_10(node, x, scales):
    """Opset 10: X resized by `scales`, as Upsample (asymmetric coordinates)."""
    return _resize(_Asymmetric(node), x, None, scales, None, node.attr("mode", "nearest"))


@operator("Resize", since=11)
def resize(node, x, roi=None, scales=None, sizes=None):
    """X resized to `sizes` or by `scales` (see the module docstring)."""
    return _resize(node, x, roi, scales, sizes, node.attr("mode", "nearest"))


@operator("Upsample", since=7)
def upsample_attribute(node, x):
    """Opset 7-8: X scaled by the `scales` attribute (nearest or linear, asymmetric)."""
    return _upsample(node, x, np.asarray(node.attr("scales"), np.float32))


@operator("Upsample", since=9)
def upsample(node, x, scales):
    """Opset 9: X scaled by `scales` (nearest or linear, asymmetric coordinates)."""
    return _upsample(node, x, scales)


def _upsample(node, x, scales):
    mode = node.attr("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    return _resize(_Asymmetric(node), x, None, scales, None, mode)


class _Asymmetric:
    """A node seen with coordinate_transformation_mode="asymmetric" and floor rounding (the
    fixed behaviour of Upsample and opset 10's Resize)."""

    def __init__(self, node):
        self.node = node

    def attr(self, name, default=None):
        fixed = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}
        return fixed.get(name) or self.node.attr(name, default)

    def __getattr__(self, name):
        return getattr(self.node, name)
