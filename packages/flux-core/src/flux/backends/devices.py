"""Device strings as users write them for a backend's ``device=`` option."""
from __future__ import annotations

import re
from typing import NamedTuple

from flux.errors import FluxValueError

__all__ = ["Device", "parse_device"]

_DEVICE = re.compile(r"/?(?:device:)?(cpu|gpu|cuda|tpu)(?::(\d+))?", re.IGNORECASE)


class Device(NamedTuple):
    """A device: its `kind` (``"cpu"``, ``"gpu"``, ``"tpu"``) and `index` (0 unless given)."""

    kind: str
    index: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}"


def parse_device(text, backend: str) -> Device:
    """``"cpu"``, ``"gpu"``, ``"gpu:1"``, ``"GPU:0"``, ``"cuda:0"`` (a GPU too), TensorFlow's
    ``"/GPU:0"`` or ``"/device:GPU:0"``, or a bare GPU number (``0``) as a `Device`; anything
    else is a FluxValueError naming `backend` and what it takes.

    >>> parse_device("gpu:1", "tf"), parse_device("/CPU:0", "tf"), parse_device(0, "cupy")
    (Device(kind='gpu', index=1), Device(kind='cpu', index=0), Device(kind='gpu', index=0))
    """
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return Device("gpu", text)
    match = _DEVICE.fullmatch(str(text).strip()) if isinstance(text, str) else None
    if match is None:
        raise FluxValueError(f"{backend} backend: device= takes 'cpu', 'gpu', 'gpu:1' or a "
                             f"device name such as '/GPU:0'; found {text!r}")
    kind = match.group(1).lower()
    return Device("gpu" if kind == "cuda" else kind, int(match.group(2) or 0))
