"""Where an equation came from: the user's file and line, and the stack of enclosing models.

While a forward function is traced, every model call pushes a `ModelCall` holding the Python
frame of flux's call wrapper. When an equation is recorded, `capture()` walks the live Python
stack once: the innermost frame that is not flux machinery (or NumPy) is the equation's own
line, and for each model call the frame directly inside its wrapper is that model's forward
function, whose current line is the model frame's line.
"""
from __future__ import annotations

import functools
import os
import sys
import types
from dataclasses import dataclass

import numpy as np

from flux.errors import Frame

_FLUX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the flux package
_MODEL_CODE = tuple(os.path.join(_FLUX_DIR, d) + os.sep for d in ("layers", "testing"))
_NUMPY_DIR = os.path.dirname(os.path.abspath(np.__file__))


def _is_machinery(filename: str) -> bool:
    """Files whose lines are never shown to users: flux's own modules and NumPy.

    Built-in layers (``flux/layers``) and the conformance kit's models (``flux/testing``) are
    model code, so errors inside them point at their lines, as the seed's traces do.
    """
    if filename.startswith(_FLUX_DIR + os.sep):
        return not filename.startswith(_MODEL_CODE)
    # (pseudo-files: frozen modules, and the frame NumPy < 1.25 dispatches functions through)
    name = os.path.basename(filename)
    return filename.startswith(_NUMPY_DIR) or name.startswith(
        ("<frozen", "<__array_function__ internals>"))


_machinery_cache: dict[str, bool] = {}


def is_machinery(filename: str) -> bool:
    hit = _machinery_cache.get(filename)
    if hit is None:
        hit = _machinery_cache[filename] = _is_machinery(os.path.abspath(filename))
    return hit


@dataclass(frozen=True)
class Source:
    """An equation's origin: its own file and line, and its model frames, innermost first."""

    file: str
    line: int
    frames: tuple[Frame, ...] = ()

    def short(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


UNKNOWN = Source("<unknown>", 0, ())


class ModelCall:
    """A model being traced: its type name, its attribute path and the wrapper's Python frame."""

    __slots__ = ("name", "path", "wrapper")

    def __init__(self, name: str, path: str, wrapper):
        self.name = name
        self.path = path
        self.wrapper = wrapper


def capture(calls: list[ModelCall], skip: int = 1) -> Source:
    """The `Source` of the code running now, given the model calls in progress (outermost first)."""
    frame = sys._getframe(skip)
    own = None
    pending = {id(call.wrapper): call for call in calls}
    lines: dict[int, tuple[str, int]] = {}
    inner = None
    while frame is not None and (own is None or pending):
        code = frame.f_code
        if own is None and not is_machinery(code.co_filename):
            own = (code.co_filename, frame.f_lineno)
        call = pending.pop(id(frame), None)
        if call is not None and inner is not None:
            lines[id(call)] = (inner.f_code.co_filename, inner.f_lineno)
        inner = frame
        frame = frame.f_back
    frames = []
    for call in reversed(calls):
        file, line = lines.get(id(call), ("<unknown>", 0))
        frames.append(Frame(call.name, call.path, file, line))
    if own is None:
        own = (frames[0].file, frames[0].line) if frames else ("<unknown>", 0)
    return Source(own[0], own[1], tuple(frames))


# -- tracebacks users see ---------------------------------------------------------------------


def show_internal_frames() -> bool:
    """FLUX_TRACEBACK=full keeps flux's own frames in tracebacks (hidden by default)."""
    return os.environ.get("FLUX_TRACEBACK", "").strip().lower() in ("1", "full", "all")


def user_facing(error: BaseException) -> BaseException:
    """`error` with flux's internal frames (and NumPy's) removed from its traceback, so that
    the frames a user reads are their own code and their models' forward functions."""
    if show_internal_frames():
        return error
    kept = []
    tb = error.__traceback__
    while tb is not None:
        if not is_machinery(tb.tb_frame.f_code.co_filename):
            kept.append(tb)
        tb = tb.tb_next
    new = None
    for tb in reversed(kept):
        new = types.TracebackType(new, tb.tb_frame, tb.tb_lasti, tb.tb_lineno)
    return error.with_traceback(new)


def frames_from_traceback(calls: list[ModelCall], tb) -> tuple[Frame, ...]:
    """Model frames (innermost first) for an exception that unwound through the forward
    functions of `calls`: each forward's line is where the exception passed through it."""
    lines: dict[int, tuple[str, int]] = {}
    wrappers = {id(call.wrapper): call for call in calls}
    while tb is not None:
        frame = tb.tb_frame
        call = wrappers.get(id(frame.f_back)) if frame.f_back is not None else None
        if call is not None:
            lines[id(call)] = (frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    frame = sys._getframe(1)       # outer forward functions are still running: their lines
    while frame is not None and len(lines) < len(calls):
        call = wrappers.get(id(frame.f_back)) if frame.f_back is not None else None
        if call is not None and id(call) not in lines:
            lines[id(call)] = (frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return tuple(Frame(call.name, call.path, *lines.get(id(call), ("<unknown>", 0)))
                 for call in reversed(calls))


def user_errors(fn):
    """Public entry points re-raise errors with `user_facing` tracebacks (same exception)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            raise user_facing(error) from error.__cause__
    return wrapper
