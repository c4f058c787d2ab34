"""Labels and scoring: `onehot`, `onecold`, `accuracy`."""
from __future__ import annotations

import numpy as np

from flux.errors import FluxValueError

__all__ = ["onehot", "onecold", "accuracy"]


def onehot(label, labels):
    """A float32 vector with a 1 at the position of `label` in `labels`; a list (or array) of
    labels gives a batch, one row per label.

    >>> onehot("b", ["a", "b", "c"])
    array([0., 1., 0.], dtype=float32)
    """
    labels = list(labels)
    if isinstance(label, (list, tuple, np.ndarray)):
        return np.stack([onehot(one, labels) for one in label]) if len(label) else \
            np.zeros((0, len(labels)), np.float32)
    try:
        index = labels.index(label)
    except ValueError:
        raise FluxValueError(f"onehot: {label!r} is not one of the labels {labels}") from None
    out = np.zeros(len(labels), np.float32)
    out[index] = 1
    return out


def onecold(v, labels=None):
    """The label at the largest entry of `v` (its index if `labels` is None); along the last
    axis for a batch.

    >>> onecold(np.array([0.1, 0.7, 0.2]), ["a", "b", "c"])
    'b'
    """
    v = np.asarray(v)
    index = np.argmax(v, axis=-1)
    if labels is None:
        return index if v.ndim > 1 else int(index)
    labels = list(labels)
    if len(labels) != v.shape[-1]:
        raise FluxValueError(f"onecold: {len(labels)} labels for vectors of length {v.shape[-1]}")
    if v.ndim == 1:
        return labels[int(index)]
    return np.array([labels[i] for i in np.ravel(index)]).reshape(index.shape)


def accuracy(model, data) -> float:
    """The fraction of points whose predicted class (`onecold` of the model's output) equals
    the target's: `data` is an iterable of ``(x, y)`` pairs as for `train`, with one-hot or
    integer-label targets."""
    right = total = 0
    for x, y in data:
        predicted = onecold(model(x))
        y = np.asarray(y)
        wanted = onecold(y) if y.ndim == np.ndim(predicted) + 1 else y
        right += int(np.sum(np.asarray(predicted) == wanted))
        total += int(np.size(predicted))
    if total == 0:
        raise FluxValueError("accuracy: the data has no points")
    return right / total
