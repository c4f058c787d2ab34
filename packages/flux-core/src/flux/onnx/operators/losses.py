"""ONNX's loss operators: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

For scores x of shape (N, C, d₁ … dₖ) and integer labels t of shape (N, d₁ … dₖ), with
optional class weights w (C,) and an `ignore_index` i:

    lossₙ = −x[n, tₙ] · w[tₙ] · [tₙ ≠ i]
    reduction "none": loss;  "sum": Σ loss;  "mean" (the default): Σ loss / Σ w[tₙ]·[tₙ ≠ i]

(w ≡ 1 without weights, so the mean is over the labels not ignored). The labels may be
traced: x[n, tₙ] is a gather along the class axis. SoftmaxCrossEntropyLoss is this on
log-probabilities ``logsoftmax(x, axis=1)``, which it also returns as its second output.
"""
from __future__ import annotations

import numpy as np

from flux.ops.functions import logsoftmax
from flux.onnx.operators.registry import operator


def _nll(node, x, labels, weights):
    reduction = node.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise node.error(f"reduction {reduction!r} is not none, sum or mean")
    ignore = node.attr("ignore_index")
    labels = labels.astype(np.int64)
    kept = None if ignore is None else np.not_equal(labels, ignore)
    safe = labels if kept is None else np.where(kept, labels, np.zeros((), np.int64))
    picked = np.take_along_axis(x, np.expand_dims(safe, 1), axis=1)     # (N, 1, d...)
    loss = -np.reshape(picked, tuple(safe.shape))                      # (N, d...)
    scale = None if weights is None else np.take(weights, safe)
    if kept is not None:
        mask = kept.astype(x.dtype)
        scale = mask if scale is None else scale * mask
    if scale is not None:
        loss = loss * scale
    if reduction == "none":
        return loss
    total = np.sum(loss)
    if reduction == "sum":
        return total
    count = np.sum(scale) if scale is not None else np.asarray(
        int(np.prod(safe.shape, dtype=np.int64)), x.dtype)
    return total / count


@operator("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(node, x, labels, weights=None):
    """−x[n, tₙ], weighted, reduced (see the module docstring)."""
    return _nll(node, x, labels, weights)


@operator("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(node, x, labels, weights=None):
    """The negative log-likelihood of logsoftmax(x) over the classes (axis 1), and those
    log-probabilities."""
    log_p = logsoftmax(x, axis=1)
    return _nll(node, log_p, labels, weights), log_p
