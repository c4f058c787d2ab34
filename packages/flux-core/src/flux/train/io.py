"""`save` and `load`: a model's parameters in a file that cannot execute code when read.

The file is a NumPy ``.npz`` archive (read back with ``allow_pickle=False``): one array per
Param, keyed by its attribute path (`flux.params`), plus a ``__flux__`` entry holding the
format version and each parameter's dtype and shape as JSON text. It is written to a temporary
file in the same folder, flushed to disk and renamed over `path`, so a crash mid-write leaves
the old file intact. `load` checks every name, shape and dtype against the model before it
changes any parameter.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from flux.errors import FluxTypeError, FluxValueError
from flux.backends.compiled import Compiled
from flux.model.walk import is_model, params
from flux.ir.source import user_errors

__all__ = ["save", "load", "FORMAT_VERSION", "write_atomically", "read_checked"]

FORMAT_VERSION = 1
META = "__flux__"


def _target(model):
    model = model.model if isinstance(model, Compiled) else model
    if not is_model(model):
        raise FluxTypeError(f"expected a flux model, found {type(model).__name__}")
    return model


@user_errors
def save(model, path) -> None:
    """Write the model's parameters to `path` (exactly that path; no suffix is added).

    >>> import tempfile, os, flux
    >>> m = flux.Affine(2, 3)
    >>> path = os.path.join(tempfile.mkdtemp(), "affine.flux")
    >>> flux.save(m, path); flux.load(flux.Affine(2, 3), path) is None
    True
    """
    ps = params(_target(model))
    meta = {"format": "flux-params", "version": FORMAT_VERSION,
            "params": {name: {"dtype": p.dtype.str, "shape": list(p.shape)}
                       for name, p in ps.items()}}
    arrays = {name: p.peek() for name, p in ps.items()}
    arrays[META] = np.array(json.dumps(meta))
    write_atomically(path, arrays)


def write_atomically(path, arrays: dict) -> None:
    """An ``.npz`` of `arrays` at exactly `path`, via a flushed temporary file in the same
    folder renamed over it: a crash leaves the old file (or none), never half of one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".flux-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


@user_errors
def load(model, path) -> None:
    """Set the model's parameters from a file written by `save`.

    Every entry is checked first (a missing, extra, mis-shaped, mistyped or unreadable entry
    raises a `FluxError` naming it); only then are the parameters changed, so a failed load
    leaves the model as it was.
    """
    ps = params(_target(model))
    values, _ = read_checked(path, ps, "flux-params")
    for name, p in ps.items():
        p.value[...] = values[name]


def read_checked(path, ps: dict, kind: str, prefix: str = "", extra_prefixes=()):
    """The arrays of a flux file for the Params `ps` (by path, stored under `prefix`), checked
    completely, and the file's metadata; other entries must start with `extra_prefixes`."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if META not in names:
                raise FluxValueError(f"{path} is not a flux parameter file (no {META} entry)")
            meta = json.loads(str(archive[META]))
            if meta.get("format") != kind or meta.get("version") != FORMAT_VERSION:
                raise FluxValueError(f"{path}: unsupported format {meta.get('format')!r} "
                                     f"version {meta.get('version')!r}; expected {kind} "
                                     f"version {FORMAT_VERSION}")
            others = {n: archive[n] for n in names
                      if n != META and any(n.startswith(e) for e in extra_prefixes)}
            rest = names - {META} - set(others)
            stored = {n[len(prefix):] if n.startswith(prefix) else n for n in rest}
            missing = sorted(set(ps) - stored)
            extra = sorted(stored - set(ps))
            if missing:
                raise FluxValueError(f"{path} has no entry for the model's parameter(s) "
                                     f"{', '.join(missing)}")
            if extra:
                raise FluxValueError(f"{path} has entries the model does not have: "
                                     f"{', '.join(extra)}")
            values = {}
            for name, p in ps.items():
                value = archive[prefix + name]
                if value.shape != p.shape:
                    raise FluxValueError(f"{path}: entry {name} has shape {value.shape}, the "
                                         f"model's parameter has shape {p.shape}")
                if value.dtype != p.dtype:
                    raise FluxValueError(f"{path}: entry {name} has dtype {value.dtype}, the "
                                         f"model's parameter has dtype {p.dtype}")
                values[name] = value
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
        if isinstance(error, FluxValueError):
            raise
        raise FluxValueError(f"{path} cannot be read as a flux parameter file "
                             f"(truncated or damaged?): {type(error).__name__}: {error}") from error
    values.update(others)
    return values, meta
