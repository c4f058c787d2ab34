"""Loss functions; usable inside traced training steps and on plain arrays."""
from __future__ import annotations

from flux.ops import numpy_api as api
from flux.ops.functions import logsoftmax
from flux.ir.recording import named

__all__ = ["mse", "crossentropy", "logitcrossentropy"]


@named
def mse(ŷ, y):
    """Mean squared error: the mean over all elements of (ŷ − y)².

    >>> import numpy as np
    >>> round(float(mse(np.array([.46, .54]), np.array([1, 0]))), 4)
    0.2916
    """
    d = api.subtract(ŷ, y)
    return api.mean(api.multiply(d, d))


def _batch_mean(per_class):
    """−Σ over the last axis, then the mean over the batch (if there is one)."""
    total = api.negative(api.sum(per_class, axis=-1))
    return total if total.ndim == 0 else api.mean(total)


@named
def crossentropy(ŷ, y):
    """Cross-entropy of probabilities ŷ against targets y: −Σ y log ŷ for one point, its mean
    over the batch for a batch."""
    return _batch_mean(api.multiply(y, api.log(ŷ)))


@named
def logitcrossentropy(z, y):
    """``crossentropy(softmax(z), y)`` computed stably from the logits z."""
    return _batch_mean(api.multiply(y, logsoftmax(z)))
