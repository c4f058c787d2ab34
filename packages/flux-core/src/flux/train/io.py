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
from flux.model.walk import is_model, stored
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
    ps = stored(_target(model))          # Params and Buffers
    meta = {"format": "flux-params", "version": FORMAT_VERSION,
            "params": {name: {"dtype": p.dtype.str, "shape": list(p.shape)}
                       for name, p in ps.items()}}
    arrays = {name: p.peek() for name, p in ps.items()}
    arrays[META] = np.array(json.dumps(meta))
    write_atomically(path, arrays)


def write_atomically(path, arrays: dict) -> None:
    """An ``.npz`` of `arrays` at exactly `path`, via a flushed temporary file in the same
    folder renamed over it: a crash leaves the old file (or none), never half of one.

    The temporary file is named after `path` and the writing process
    (``.<name>.flux-<pid>-<random>.tmp``); one left by a process that no longer runs (a killed
    save) is removed by the next save to the same path. The file gets the mode of the file it
    replaces, or the one the umask gives new files. Failures name `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FluxValueError(f"cannot write {path}: the folder {folder} does not exist")
    base = os.path.basename(path)
    _remove_stale(folder, base)
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_umask()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{base}.flux-{os.getpid()}-",
                                             suffix=".tmp", dir=folder)
    except OSError as error:
        raise FluxValueError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(handle, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise FluxValueError(f"cannot write {path}: {error.strerror or error}") from error
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _remove_stale(folder: str, base: str) -> None:
    """Remove temporary files of earlier saves to `base` whose process has ended."""
    prefix = f".{base}.flux-"
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass                              # (another save removed it first)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True                               # it exists, but is not ours to signal
    return True


@user_errors
def load(model, path) -> None:
    """Set the model's parameters from a file written by `save`.

    Every entry is checked first (a missing, extra, mis-shaped, mistyped or unreadable entry
    raises a `FluxError` naming it); only then are the parameters changed, so a failed load
    leaves the model as it was.
    """
    ps = stored(_target(model))
    values, _ = read_checked(path, ps, "flux-params")
    for name, p in ps.items():
        p.value[...] = values[name]


MAX_META = 1 << 24
"""The largest metadata entry a flux file may have (16 MiB of JSON text)."""


def read_checked(path, ps: dict, kind: str, prefix: str = "", extra_prefixes=()):
    """The arrays of a flux file for the Params `ps` (by path, stored under `prefix`), checked
    completely, and the file's metadata; other entries must start with `extra_prefixes`.

    Nothing is read before its header is checked: each entry's shape and dtype come from its
    ``.npy`` header and its size from the archive's directory, so a file that claims more
    than the model needs (a zip bomb, a header declaring 10¹² floats) is refused before any
    memory is spent; extra entries (a checkpoint's optimiser state) may total at most four
    times the model's size. Anything wrong with the file is a FluxValueError naming `path`.
    """
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return _read(archive, path, ps, kind, prefix, extra_prefixes)
    except FluxValueError:
        raise
    except Exception as error:      # noqa: BLE001 (damaged or foreign: any error means that)
        raise FluxValueError(f"{path} cannot be read as a flux parameter file (truncated, "
                             f"damaged or not written by flux?): {type(error).__name__}: "
                             f"{error}") from error


_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}


def _headers(archive, path) -> dict:
    """Entry name -> (ZipInfo, shape, dtype, offset of the data), from the headers alone."""
    found = {}
    for info in archive.infolist():
        if not info.filename.endswith(".npy"):
            raise FluxValueError(f"{path}: unexpected entry {info.filename!r} (a flux file "
                                 f"holds .npy arrays only)")
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise FluxValueError(f"{path}: entry {info.filename} has .npy version "
                                     f"{version}, which flux does not write")
            shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise FluxValueError(f"{path}: entry {info.filename} holds Python objects, which "
                                 f"a flux file never does (and which could run code)")
        found[info.filename[:-len(".npy")]] = (info, tuple(shape), dtype, fortran)
    return found


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.float64)) * dtype.itemsize


def _array(archive, entry, path, name) -> np.ndarray:
    info, shape, dtype, _ = entry
    if info.file_size > _nbytes(shape, dtype) + 65536:      # (header room)
        raise FluxValueError(f"{path}: entry {name} claims {info.file_size:,} bytes, more "
                             f"than its shape {shape} and dtype {dtype} need")
    with archive.open(info) as f:
        array = np.lib.format.read_array(f, allow_pickle=False)
    if array.shape != shape or array.dtype != dtype:
        raise FluxValueError(f"{path}: entry {name} is not what its header says")
    return array


def _read(archive, path, ps, kind, prefix, extra_prefixes):
    headers = _headers(archive, path)
    if META not in headers:
        raise FluxValueError(f"{path} is not a flux parameter file (no {META} entry)")
    info, shape, dtype, _ = headers[META]
    if shape != () or dtype.kind != "U" or info.file_size > MAX_META:
        raise FluxValueError(f"{path}: its {META} entry is not flux's metadata text")
    meta = json.loads(str(_array(archive, headers[META], path, META)))
    if not isinstance(meta, dict):
        raise FluxValueError(f"{path}: its {META} entry is not flux's metadata (a JSON object)")
    if meta.get("format") != kind or meta.get("version") != FORMAT_VERSION:
        raise FluxValueError(f"{path}: unsupported format {meta.get('format')!r} "
                             f"version {meta.get('version')!r}; expected {kind} "
                             f"version {FORMAT_VERSION}")
    names = set(headers) - {META}
    other_names = {n for n in names if any(n.startswith(e) for e in extra_prefixes)}
    stored = {n[len(prefix):] if n.startswith(prefix) else n for n in names - other_names}
    missing = sorted(set(ps) - stored)
    extra = sorted(stored - set(ps))
    if missing:
        raise FluxValueError(f"{path} has no entry for the model's parameter(s) "
                             f"{', '.join(missing)}")
    if extra:
        raise FluxValueError(f"{path} has entries the model does not have: "
                             f"{', '.join(extra)}")
    for name, p in ps.items():
        _, shape, dtype, _ = headers[prefix + name]
        if shape != p.shape:
            raise FluxValueError(f"{path}: entry {name} has shape {shape}, the model's "
                                 f"parameter has shape {p.shape}")
        if dtype != p.dtype:
            raise FluxValueError(f"{path}: entry {name} has dtype {dtype}, the model's "
                                 f"parameter has dtype {p.dtype}")
    budget = 4 * sum(p.size * p.dtype.itemsize for p in ps.values()) + (1 << 20)
    claimed = sum(_nbytes(headers[n][1], headers[n][2]) for n in other_names)
    if claimed > budget:
        raise FluxValueError(f"{path}: its other entries claim {claimed:,} bytes, more than "
                             f"the model's state could need ({budget:,})")
    values = {name: _array(archive, headers[prefix + name], path, name) for name in ps}
    values.update((n, _array(archive, headers[n], path, n)) for n in sorted(other_names))
    return values, meta
