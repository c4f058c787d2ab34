"""The error classes users see, and the model frames (`.trace`) every error carries.

The bottom layer of flux: it imports nothing of flux's own."""
from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = [
    "Frame",
    "FluxError",
    "ShapeError",
    "TraceError",
    "FluxValueError",
    "FluxTypeError",
    "BackendError",
    "BackendNotInstalled",
]


@dataclass(frozen=True)
class Frame:
    """One enclosing model of the equation where an error happened.

    `model` is the layer's type name (``"Affine"``), `path` its attribute path in the
    outermost model (``"second"``; ``""`` for the outermost model itself), and `file`/`line`
    the statement inside that model's forward function that was running.
    """

    model: str
    path: str
    file: str
    line: int

    def __str__(self) -> str:
        where = f"{self.model} ({self.path})" if self.path else self.model
        return f"in {where} at {self.file}:{self.line}"


class FluxError(Exception):
    """Base class of every error flux raises for bad user input.

    ``.trace`` is a list of `Frame`s, innermost first; ``str(error)`` is the cause followed by
    one ``in Model (path) at file:line`` line per frame.
    """

    def __init__(self, message: str = "", trace=None):
        super().__init__(message)
        self.message = message
        self.trace = list(trace) if trace is not None else _frames_now()

    def with_trace(self, trace) -> "FluxError":
        """Attach `trace` unless the error already has one; return the error."""
        if not self.trace:
            self.trace = list(trace)
        return self

    def __str__(self) -> str:
        lines = [self.message]
        lines.extend(f"  {frame}" for frame in self.trace)
        return "\n".join(lines)


class ShapeError(FluxError, ValueError):
    """Shapes that cannot combine, found by flux's own shape inference before any work is done."""


class FluxValueError(FluxError, ValueError):
    """A value flux cannot use (an unknown label, a wrong-sized gradient, ...)."""


class FluxTypeError(FluxError, TypeError):
    """An argument of the wrong kind (a string where numbers are expected, ...)."""


class TraceError(FluxError, TypeError):
    """The forward function did something a dataflow graph cannot record.

    For example a Python ``if`` on a traced value, or a NumPy function with no IR translation.
    """


class BackendError(FluxError):
    """An error raised inside a backend, mapped back to the model frames; the backend's own
    exception is its ``__cause__``."""


class BackendNotInstalled(FluxError, ImportError):
    """A backend was asked for whose plugin is not installed; says what to ``pip install``."""


class _Tracing(threading.local):
    """The `flux.ir.Trace` being recorded in this thread, if any. It lives here, at the bottom
    of the layers, because every error reads it: an error created while a forward function is
    traced takes that trace's model frames."""

    trace = None


tracing = _Tracing()


def _frames_now() -> list:
    """The model frames of the code being traced right now (empty outside a trace), so an
    error raised anywhere inside a forward function points at the model and the line."""
    trace = tracing.trace
    return list(trace.source().frames) if trace is not None else []


for _public in (Frame, FluxError, ShapeError, TraceError, FluxValueError, FluxTypeError,
                BackendError, BackendNotInstalled):
    _public.__module__ = "flux"   # tracebacks read `flux.ShapeError`, as users import it
