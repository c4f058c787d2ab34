"""ONNX's normalisations and Dropout, imported as flux functions: BatchNormalization,
LayerNormalization, InstanceNormalization, GroupNormalization, MeanVarianceNormalization, LRN.

Each standardises over some axes and then scales and shifts:

    x̂ = (x − μ) / √(σ² + ε),   y = x̂ · scale + B

with μ and σ² the mean and (biased) variance over the axes: every axis but the channels
(BatchNormalization while training; in inference it uses the given running statistics), the
axes from `axis` on (LayerNormalization), the spatial axes (InstanceNormalization), or the
spatial axes and the channels of one group (GroupNormalization). ONNX is channels first:
per-channel values have shape ``(C,)`` and act on axis 1.

Dropout is the identity in inference (its mask all true). In training mode it would draw
random numbers, which a flux model gets from its `flux.Dropout` layers, not from a graph
operator: a Dropout known to train with a ratio above 0 is refused.
"""
from __future__ import annotations

import numpy as np

from flux.onnx.operators.nn import results
from flux.onnx.operators.registry import known, operator, static
from flux.ops import numpy_api as api

__all__ = ["standardise"]


def standardise(x, axes, epsilon):
    """``(x̂, μ, 1/√(σ² + ε))`` over `axes` (μ and the inverse deviation keep the axes)."""
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    inverse = 1.0 / np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True) + epsilon)
    return centred * inverse, mean, inverse


def per_channel(value, ndim):
    """A per-channel value ``(C,)`` shaped to act on axis 1 of a rank-`ndim` value; a value
    of another rank (BatchNormalization's old ``spatial=0``) broadcasts as it is."""
    value = api.lift(value)
    if np.ndim(value) == 1:
        return value.reshape((-1,) + (1,) * (ndim - 2))
    return value


def _stashed(node, x):
    """`x` in the precision `stash_type` asks for (1: at least float32), and its own dtype."""
    x = api._as_tracer_or_array(x)
    dtype = x.dtype
    if node.attr("stash_type", 1) == 1 and dtype.kind == "f" and dtype.itemsize < 4:
        return x.astype(np.float32), dtype
    return x, dtype


# -- BatchNormalization --------------------------------------------------------------------------


def _training(node) -> bool:
    """Whether a BatchNormalization computes batch statistics: ``training_mode`` from opset
    14 on; before, whether it is asked for more outputs than Y (ONNX's training form)."""
    if node.opset >= 14:
        return bool(node.attr("training_mode", 0))
    return any(node.outputs[1:])


@operator("BatchNormalization")
def import_batch_normalization(node, x, scale, b, mean, var):
    """Inference: ``y = (x − mean) / √(var + ε) · scale + B`` per channel. Training: with the
    batch's mean μ and biased variance σ² over every axis but 1, and the running statistics
    ``mean · momentum + μ · (1 − momentum)`` (likewise var) as the next outputs (opset 14
    on: Y, running_mean, running_var; before: Y, mean, var, saved_mean, saved_var)."""
    x = api._as_tracer_or_array(x)
    epsilon, momentum = node.attr("epsilon", 1e-5), node.attr("momentum", 0.9)
    shift = per_channel(b, x.ndim)
    gain = per_channel(scale, x.ndim)
    if not _training(node):
        inverse = 1.0 / np.sqrt(per_channel(var, x.ndim) + epsilon)
        return (x - per_channel(mean, x.ndim)) * (inverse * gain) + shift
    axes = (0,) + tuple(range(2, x.ndim))
    mu = np.mean(x, axis=axes, keepdims=True)                 # (1, C, 1, …)
    centred = x - mu
    sigma2 = np.mean(centred * centred, axis=axes, keepdims=True)
    y = centred / np.sqrt(sigma2 + epsilon) * gain + shift
    batch_mean, batch_var = mu.reshape(-1), sigma2.reshape(-1)             # (C,)
    running_mean = mean * momentum + batch_mean * (1 - momentum)
    running_var = var * momentum + batch_var * (1 - momentum)
    if node.opset >= 14:
        return results(node, y, running_mean, running_var)
    return results(node, y, running_mean, running_var, batch_mean, batch_var)


# -- LayerNormalization, InstanceNormalization, GroupNormalization, MVN ------------------------


@operator("LayerNormalization", since=17)
def import_layer_normalization(node, x, scale, b=None):
    """Standardised over the axes from `axis` (default −1) on, then ``· scale + B``
    (broadcast); the outputs Mean and InvStdDev keep the normalised axes as 1s."""
    x, dtype = _stashed(node, x)
    axis = node.attr("axis", -1) % x.ndim
    normal, mean, inverse = standardise(x, tuple(range(axis, x.ndim)),
                                        node.attr("epsilon", 1e-5))
    y = normal.astype(dtype) * scale
    if b is not None:
        y = y + b
    return results(node, y, mean, inverse)


@operator("InstanceNormalization")
def import_instance_normalization(node, x, scale, b):
    """Standardised over the spatial axes of each sample and channel, then
    ``· scale + B`` per channel."""
    x = api._as_tracer_or_array(x)
    normal, _, _ = standardise(x, tuple(range(2, x.ndim)), node.attr("epsilon", 1e-5))
    return normal * per_channel(scale, x.ndim) + per_channel(b, x.ndim)


def _grouped(node, x):
    """`x` ``(N, C, *spatial)`` standardised per sample over each of `num_groups` groups of
    channels (and the spatial axes), as ``(N, G, C/G, *spatial)``."""
    groups = node.attr("num_groups", None)
    channels = x.shape[1]
    if groups is None or groups < 1 or channels % groups:
        raise node.error(f"num_groups must divide the input's {channels} channels, found "
                         f"{groups!r}")
    grouped = x.reshape((x.shape[0], groups, channels // groups) + tuple(x.shape[2:]))
    normal, _, _ = standardise(grouped, tuple(range(2, grouped.ndim)),
                               node.attr("epsilon", 1e-5))
    return normal


@operator("GroupNormalization", since=18)
def import_group_normalization_18(node, x, scale, b):
    """Standardised per group of channels, then ``· scale + B`` per group (opset 18:
    scale and B have one value per group)."""
    x = api._as_tracer_or_array(x)
    normal = _grouped(node, x)                               # (N, G, C/G, *spatial)
    shape = (-1,) + (1,) * (normal.ndim - 2)
    y = normal * api.lift(scale).reshape(shape) + api.lift(b).reshape(shape)
    return y.reshape(x.shape)


@operator("GroupNormalization", since=21)
def import_group_normalization(node, x, scale, b):
    """Standardised per group of channels (in at least float32 with ``stash_type=1``), then
    ``· scale + B`` per channel."""
    x, dtype = _stashed(node, x)
    normal = _grouped(node, x).reshape(x.shape).astype(dtype)
    return normal * per_channel(scale, x.ndim) + per_channel(b, x.ndim)


@operator("MeanVarianceNormalization")
def import_mean_variance_normalization(node, x):
    """``(x − μ) / (σ + 1e-9)`` over `axes` (default ``[0, 2, 3]``), σ the standard
    deviation."""
    x = api._as_tracer_or_array(x)
    axes = tuple(int(a) % x.ndim for a in node.attr("axes", [0, 2, 3]))
    mean = np.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    deviation = np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True))
    return centred / (deviation + 1e-9)


@operator("LRN")
def import_lrn(node, x):
    """Local response normalisation across channels:
    ``y = x / (bias + α/size · Σ_{c' near c} x[c']²)^β``, the sum over the `size` channels
    from ``c − ⌊(size − 1)/2⌋`` to ``c + ⌈(size − 1)/2⌉``."""
    x = api._as_tracer_or_array(x)
    size = node.attr("size", None)
    if size is None or size < 1:
        raise node.error(f"size must be an int ≥ 1, found {size!r}")
    alpha, beta, bias = node.attr("alpha", 1e-4), node.attr("beta", 0.75), node.attr("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.pad(x * x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))
    channels = x.shape[1]
    total = squares[:, 0:channels]
    for j in range(1, size):
        total = total + squares[:, j:j + channels]
    return x / (bias + total * (alpha / size)) ** beta


# -- Dropout --------------------------------------------------------------------------------------

TRAINING_DROPOUT = (
    "it is in training mode (training_mode is true) with ratio {ratio}, which draws random "
    "numbers at every call; an imported model gets its randomness from flux.Dropout layers, "
    "not from graph operators. Export the model for inference (training_mode false), or "
    "replace this node with a flux.Dropout layer")


@operator("Dropout")
def import_dropout(node, x, ratio=None, training_mode=None):
    """Inference: ``output = x`` and the mask all true (1s before opset 10). Training
    (``training_mode`` known true, opset 12 on) is refused unless the ratio is 0."""
    training = False
    if training_mode is not None:
        training = bool(static(node, training_mode, "training_mode"))
    if training:
        rate = 0.5 if ratio is None else float(ratio) if known(ratio) else None
        if rate != 0.0:
            raise node.error(TRAINING_DROPOUT.format(
                ratio=rate if rate is not None else "given by the model"))
    if len(node.outputs) < 2 or not node.outputs[1]:
        return results(node, x, None)
    x = api._as_tracer_or_array(x)
    return x, np.ones_like(x, dtype=x.dtype if node.opset < 10 else bool)
