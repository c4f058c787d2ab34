"""Loss functions; usable inside traced training steps and on plain arrays."""
from __future__ import annotations

import numpy as np

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


def _targets(ŷ, y):
    """`y` as per-class targets for predictions `ŷ`: class indices (one axis fewer than `ŷ`,
    as PyTorch's cross_entropy takes them: ``(batch,)`` labels for ``(batch, classes)``
    predictions) become one-hot rows; per-class targets are used as they are."""
    ŷ, y = api._as_tracer_or_array(ŷ), api._as_tracer_or_array(y)
    if y.ndim == ŷ.ndim - 1:
        classes = np.arange(ŷ.shape[-1])
        return api.astype(api.equal(api.expand_dims(y, -1), classes), ŷ.dtype)
    return y


def _batch_mean(per_class):
    """−Σ over the last axis, then the mean over the batch (if there is one)."""
    total = api.negative(api.sum(per_class, axis=-1))
    return total if total.ndim == 0 else api.mean(total)


@named
def crossentropy(ŷ, y):
    """Cross-entropy of probabilities ŷ against targets y: −Σ y log ŷ for one point, its mean
    over the batch for a batch. `y` is per-class (one-hot or probabilities, ŷ's shape) or
    class indices (one axis fewer: ``(batch,)`` for ``(batch, classes)``).

    >>> import numpy as np
    >>> p = np.array([[0.25, 0.75], [0.5, 0.5]])
    >>> float(crossentropy(p, np.array([1, 0]))) == float(crossentropy(p, np.eye(2)[[1, 0]]))
    True
    """
    return _batch_mean(api.multiply(_targets(ŷ, y), api.log(ŷ)))


@named
def logitcrossentropy(z, y):
    """``crossentropy(softmax(z), y)`` computed stably from the logits z (`y` per-class or
    class indices, as for `crossentropy`)."""
    return _batch_mean(api.multiply(_targets(z, y), logsoftmax(z)))
