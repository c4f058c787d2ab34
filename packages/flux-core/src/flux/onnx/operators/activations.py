"""ONNX's activations and normalised exponentials, imported as flux functions of flux's
primitives: the elementwise activations (Relu … Swish, Gelu and Erf) and Softmax, LogSoftmax
and Hardmax.

Attributes have the defaults of ONNX's operator pages. Every branchy formula is written so
that the branch `np.where` does not take stays finite (``exp(min(x, 0))`` rather than
``exp(x)``), so gradients never meet ``0 · inf``. ONNX has no erf primitive for flux to map
to and flux has none either: `erf` is a composite of flux's primitives accurate to float32
rounding (|error| < 1e-7), and differentiable.
"""
from __future__ import annotations

import math

import numpy as np

from flux.onnx.operators.registry import operator
from flux.ops import numpy_api as api
from flux.ops.functions import logsoftmax, relu, softmax, tanh, σ

__all__ = ["erf", "gelu", "ACTIVATIONS"]

# -- erf ----------------------------------------------------------------------------------------

ERF_SMALL = (1.1283791670634211, -0.37612638486531663, 0.11283782793357423,
             -0.026865448735631278, 0.00522108358549704, -0.000848484431163427,
             0.00011271545452680994, -9.683088350553295e-06)
"""``erf(x) ≈ x · Σₖ cₖ x²ᵏ`` for ``|x| ≤ 1`` (a least-squares fit made for flux; the series
starts at 2/√π)."""

ERFC_P = (0.999779763249701, 1.060245308609458, 0.5130967169862024, 0.11319278738549306)
ERFC_Q = (1.0, 2.1871015825650577, 1.9859695739757324, 0.9088214474595052, 0.2006559473088379)
"""``erfc(x) · exp(x²) ≈ P(x) / Q(x)`` for ``1 ≤ x ≤ 4`` (relative error < 1e-9); beyond 4,
``erfc(x) < 1.6e-8`` and erf is 1 in float32."""


def _horner(coefficients, u):
    """``Σₖ cₖ uᵏ``, by Horner's rule."""
    result = coefficients[-1]
    for c in coefficients[-2::-1]:
        result = result * u + c
    return result


def erf(x):
    """The error function, ``erf(x) = 2/√π ∫₀ˣ exp(−t²) dt``, in flux's primitives:

        |x| ≤ 1:   erf(x) = x + x · (P(x²) − 1)          (P: `ERF_SMALL`)
        |x| > 1:   erf(x) = sign(x) · (1 − exp(−x²) · P(|x|) / Q(|x|))   (|x| clipped at 4)

    Each branch reads its input clipped to its own range, so the branch not taken is finite
    and gradients are exact zeros there. |error| < 1e-7 in float32 (about one unit in the last
    place); the gradient is the formula's, within 1e-6 of ``2/√π · exp(−x²)``.

    >>> round(float(erf(np.float32(0.5))), 6)
    0.5205
    """
    x = api._as_tracer_or_array(x)
    small = np.clip(x, -1.0, 1.0)
    u = small * small
    inner = small + small * _horner((ERF_SMALL[0] - 1.0,) + ERF_SMALL[1:], u)
    a = np.clip(np.abs(x), 1.0, 4.0)
    tail = np.exp(-(a * a)) * (_horner(ERFC_P, a) / _horner(ERFC_Q, a))
    outer = np.sign(x) * (1.0 - tail)
    return np.where(np.abs(x) <= 1.0, inner, outer)


def gelu(x, approximate: str = "none"):
    """``x · Φ(x) = 0.5 x (1 + erf(x / √2))``; with ``approximate="tanh"``,
    ``0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))``."""
    if approximate == "tanh":
        return 0.5 * x * (1.0 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x))))
    return 0.5 * x * (1.0 + erf(x * (1 / math.sqrt(2))))


# -- the activations ----------------------------------------------------------------------------


def leaky_relu(x, alpha=0.01):
    """``x`` where ``x ≥ 0``, else ``α x``."""
    return np.where(x >= 0, x, x * alpha)


def elu(x, alpha=1.0):
    """``x`` where ``x > 0``, else ``α (exp(x) − 1)``."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def celu(x, alpha=1.0):
    """``max(0, x) + min(0, α (exp(x / α) − 1))``."""
    return relu(x) + alpha * np.expm1(np.minimum(x, 0) / alpha)


def selu(x, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """``γ x`` where ``x > 0``, else ``γ α (exp(x) − 1)``."""
    return gamma * elu(x, alpha)


def hard_sigmoid(x, alpha=0.2, beta=0.5):
    """``max(0, min(1, α x + β))``."""
    return np.clip(x * alpha + beta, 0.0, 1.0)


def thresholded_relu(x, alpha=1.0):
    """``x`` where ``x > α``, else 0."""
    return np.where(x > alpha, x, 0.0)


def softplus(x):
    """``log(1 + exp(x))``, computed stably as ``logaddexp(x, 0)``."""
    return np.logaddexp(x, 0.0)


def softsign(x):
    """``x / (1 + |x|)``."""
    return x / (1.0 + np.abs(x))


def affine(x, alpha=1.0, beta=0.0):
    """``α x + β`` (an activation of ONNX's recurrent operators only)."""
    return x * alpha + beta


def scaled_tanh(x, alpha=1.0, beta=1.0):
    """``α tanh(β x)`` (an activation of ONNX's recurrent operators only)."""
    return alpha * tanh(x * beta)


ACTIVATIONS = {
    "Relu": (relu, ()), "Tanh": (tanh, ()), "Sigmoid": (σ, ()),
    "Affine": (affine, (1.0, 0.0)), "LeakyRelu": (leaky_relu, (0.01,)),
    "ThresholdedRelu": (thresholded_relu, (1.0,)), "ScaledTanh": (scaled_tanh, (1.0, 1.0)),
    "HardSigmoid": (hard_sigmoid, (0.2, 0.5)), "Elu": (elu, (1.0,)),
    "Softsign": (softsign, ()), "Softplus": (softplus, ()),
}
"""The activations ONNX's recurrent operators name (their ``activations`` attribute), each
``(function, default (α, β) …)``: a function takes as many of ``activation_alpha`` then
``activation_beta`` as it has defaults."""


@operator("Relu")
def import_relu(node, x):
    return relu(x)


@operator("Sigmoid")
def import_sigmoid(node, x):
    return σ(x)


@operator("Tanh")
def import_tanh(node, x):
    return tanh(x)


@operator("LeakyRelu")
def import_leaky_relu(node, x):
    return leaky_relu(x, node.attr("alpha", 0.01))


@operator("PRelu")
def import_prelu(node, x, slope):
    """``x`` where ``x ≥ 0``, else ``slope · x`` (the slope broadcasts to x)."""
    return np.where(x >= 0, x, x * slope)


@operator("Elu")
def import_elu(node, x):
    return elu(x, node.attr("alpha", 1.0))


@operator("Selu")
def import_selu(node, x):
    return selu(x, node.attr("alpha", 1.67326319217681884765625),
                node.attr("gamma", 1.05070102214813232421875))


@operator("Celu")
def import_celu(node, x):
    return celu(x, node.attr("alpha", 1.0))


@operator("HardSigmoid")
def import_hard_sigmoid(node, x):
    return hard_sigmoid(x, node.attr("alpha", 0.2), node.attr("beta", 0.5))


@operator("HardSwish")
def import_hard_swish(node, x):
    """``x · max(0, min(1, x / 6 + 1/2))``."""
    return x * hard_sigmoid(x, 1 / 6, 0.5)


@operator("Softplus")
def import_softplus(node, x):
    return softplus(x)


@operator("Softsign")
def import_softsign(node, x):
    return softsign(x)


@operator("Mish")
def import_mish(node, x):
    """``x · tanh(softplus(x))``."""
    return x * tanh(softplus(x))


@operator("ThresholdedRelu")
def import_thresholded_relu(node, x):
    return thresholded_relu(x, node.attr("alpha", 1.0))


@operator("Shrink")
def import_shrink(node, x):
    """``x + bias`` where ``x < −λ``, ``x − bias`` where ``x > λ``, else 0."""
    lambd, bias = node.attr("lambd", 0.5), node.attr("bias", 0.0)
    return np.where(x < -lambd, x + bias, np.where(x > lambd, x - bias, 0.0)).astype(x.dtype)


@operator("Swish", since=24)
def import_swish(node, x):
    """``x · σ(α x)``."""
    return x * σ(x * node.attr("alpha", 1.0))


@operator("Erf")
def import_erf(node, x):
    return erf(x)


@operator("Gelu", since=20)
def import_gelu(node, x):
    approximate = node.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise node.error(f"approximate is 'none' or 'tanh', found {approximate!r}")
    return gelu(x, approximate)


# -- softmax, logsoftmax, hardmax ---------------------------------------------------------------


def _hardmax(x, axis):
    """1 at the first maximum along `axis`, 0 elsewhere."""
    x = api._as_tracer_or_array(x)
    axis = axis % x.ndim
    where = np.arange(x.shape[axis]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return (where == np.argmax(x, axis=axis, keepdims=True)).astype(x.dtype)


def _coerced(fn):
    """Opsets before 13: the input is seen as a matrix ``(prod(shape[:axis]),
    prod(shape[axis:]))`` and `fn` runs along its rows."""
    def run(node, x):
        x = api._as_tracer_or_array(x)
        axis = node.attr("axis", 1) % max(x.ndim, 1)
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        return fn(x.reshape(rows, -1), -1).reshape(x.shape)
    run.__doc__ = f"{fn.__name__} of the rows of the input seen as a matrix (before opset 13)"
    return run


def _along_axis(fn):
    def run(node, x):
        return fn(x, node.attr("axis", -1))
    run.__doc__ = f"{fn.__name__} along one axis (`axis`, default −1; opset 13 on)"
    return run


operator("Softmax")(_coerced(softmax))
operator("Softmax", since=13)(_along_axis(softmax))
operator("LogSoftmax")(_coerced(logsoftmax))
operator("LogSoftmax", since=13)(_along_axis(logsoftmax))
operator("Hardmax")(_coerced(_hardmax))
operator("Hardmax", since=13)(_along_axis(_hardmax))
