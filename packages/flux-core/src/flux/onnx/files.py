"""Reading an ONNX file safely: every check made before anything in it is used.

`read(source)` takes a path (or a ``ModelProto`` or the bytes of one) and returns the parsed
model with its external data loaded, after checking, in this order, each failure a
`FluxValueError` that names the file:

1. the path is a regular, non-empty file no larger than the free memory
   (``os.sysconf("SC_AVPHYS_PAGES") * SC_PAGE_SIZE``); it parses as an ONNX ``ModelProto``
   with a graph, an IR version and an opset (truncated or foreign files fail here);
2. its default-domain opset is within ``MIN_OPSET..MAX_OPSET`` and every node is in the
   default domain (``""``/``"ai.onnx"``): other domains (``com.microsoft``, ``ai.onnx.ml``,
   model-local functions) are refused;
3. every tensor (initializers, ``Constant`` values, tensor attributes, in subgraphs too) has a
   dtype flux computes with (bool, integers, float16/32/64), non-negative dims, and holds
   exactly ``prod(dims)`` elements: ``prod(dims) × itemsize`` bytes of raw data, or as many
   entries of its typed field; so a "bomb" declaring huge dims over a few bytes is refused
   before anything is allocated;
4. external data (``data_location = EXTERNAL``): a ``location`` relative to the model's
   folder, without ``..``, that resolves (symlinks included) to a regular file inside it, with
   ``offset + length`` within that file's size; checked by path and ``stat`` alone, so no file
   outside the folder is ever opened. A model given as bytes has no folder: refused;
5. the file's size plus the decoded size of every tensor fits in the free memory;
6. the graph (and each subgraph, which also sees the names of the graphs around it) is in
   topological order: every value is defined (graph input, initializer, node output) once,
   before it is used; a value used before it is defined is reported as a cycle when it is
   one; every graph output is defined, and no output name is repeated;
7. an initializer's dims and dtype agree with any shape the graph declares for that name
   (``graph.input``, ``value_info``, ``graph.output``).

Only then are the external bytes read (into the tensors' raw data).
"""
from __future__ import annotations

import ntpath
import os
import posixpath
import stat

import numpy as np

from flux.errors import FluxTypeError, FluxValueError
from flux.onnx.files_graph import check_graph
from flux.onnx.proto import GRAPH, GRAPHS, MAX_OPSET, MIN_OPSET, TENSOR, TENSORS, require_onnx, \
    type_name

__all__ = ["read", "Source", "free_memory", "DEFAULT_DOMAINS", "tensor_dtype",
           "subgraphs", "tensors_of"]

DEFAULT_DOMAINS = ("", "ai.onnx")
"""The names of ONNX's default operator domain."""

EXTERNAL = 1            # TensorProto.EXTERNAL

COMPUTABLE = tuple(np.dtype(t) for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
    np.uint64, np.float16, np.float32, np.float64))
"""The dtypes flux computes with (bool, integers, float16/32/64: NumPy's own)."""


class Source:
    """A parsed model and where it came from: `name` (how errors name it: the path as given,
    or ``"the ONNX model given as bytes"``), `label` (how printouts name it: the file's name,
    or ``<bytes>``/``<ModelProto>``), `folder` (the model's folder, None without a path) and
    `opset` (its default-domain opset)."""

    def __init__(self, model, name: str, folder: str | None, opset: int, label: str):
        self.model = model
        self.name = name
        self.label = label
        self.folder = folder
        self.opset = opset


def free_memory() -> int:
    """The bytes of physical memory free now (``SC_AVPHYS_PAGES × SC_PAGE_SIZE``)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):      # (a system without these names)
        return 1 << 62


def read(source) -> Source:
    """The model of `source` (a path, a ``ModelProto`` or its bytes), checked and with its
    external data loaded (see the module docstring); a `FluxValueError` naming it otherwise."""
    onnx = require_onnx()
    folder, label = None, "<ModelProto>"
    if isinstance(source, onnx.ModelProto):
        name, model = "the ONNX model given as a ModelProto", onnx.ModelProto()
        model.CopyFrom(source)                      # (never change the caller's object)
        size = model.ByteSize()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name, data, label = "the ONNX model given as bytes", bytes(source), "<bytes>"
        size = len(data)
        model = _parse(onnx, data, name)
    elif isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        label = os.path.basename(name)
        data = _read_file(name)
        size = len(data)
        folder = os.path.dirname(os.path.abspath(name))
        model = _parse(onnx, data, name)
        del data
    else:
        raise FluxTypeError(f"flux.onnx.load takes a path (str or os.PathLike), an "
                            f"onnx.ModelProto or bytes, found {type(source).__name__}")
    opset = _check_opsets(model, name)
    if any(len(g.sparse_initializer) for g in subgraphs(model.graph)):
        raise FluxValueError(f"{name} has sparse initializers, which flux does not import "
                             f"(store them dense: onnx.numpy_helper.from_array)")
    tensors = [t for g in subgraphs(model.graph) for t in tensors_of(g)]
    external = [_external(t, name, folder) for t in tensors]     # checks 3 and 4
    decoded = sum(_nbytes(t) for t in tensors)
    if size + decoded > free_memory():
        raise FluxValueError(
            f"{name} is too large for the free memory: the file ({size:,} bytes) and its "
            f"tensors ({decoded:,} bytes) need {size + decoded:,} bytes, and "
            f"{free_memory():,} are free")
    check_graph(model.graph, name, outer=frozenset())
    for tensor, place in zip(tensors, external):
        if place is not None:
            _load_external(tensor, place, name)
    return Source(model, name, folder, opset, label)


# -- 1. the file ---------------------------------------------------------------------------------


def _read_file(path: str) -> bytes:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FluxValueError(f"{path}: no such file") from None
    except (OSError, ValueError) as error:         # (ValueError: a NUL in the path)
        why = getattr(error, "strerror", None) or error
        raise FluxValueError(f"{path}: cannot be read ({why})") from None
    if not stat.S_ISREG(info.st_mode):
        raise FluxValueError(f"{path} is not a file (an ONNX model is one .onnx file)")
    if info.st_size == 0:
        raise FluxValueError(f"{path} is empty, not an ONNX model")
    if info.st_size > free_memory():
        raise FluxValueError(f"{path} is too large for the free memory: {info.st_size:,} bytes, "
                             f"and {free_memory():,} are free")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise FluxValueError(f"{path}: cannot be read ({error.strerror or error})") from None


NOT_ONNX = ("{name} is not an ONNX model ({why}); it may be truncated, or another kind of "
            "file. An ONNX model is a protobuf ModelProto, as torch.onnx.export or "
            "onnx.save write it")


def _parse(onnx, data: bytes, name: str):
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:          # protobuf's DecodeError (its class differs by build)
        raise FluxValueError(NOT_ONNX.format(name=name, why=f"protobuf: {error}")) from None
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FluxValueError(NOT_ONNX.format(name=name, why="it has no IR version or no graph"))
    if not model.opset_import:
        raise FluxValueError(NOT_ONNX.format(name=name, why="it imports no opset"))
    return model


# -- 2. opsets and domains -----------------------------------------------------------------------


def _check_opsets(model, name: str) -> int:
    versions = {o.domain: o.version for o in model.opset_import}
    opset = next((versions[d] for d in DEFAULT_DOMAINS if d in versions), None)
    if opset is None:
        raise FluxValueError(f"{name} imports no default-domain ONNX opset (it imports "
                             f"{sorted(versions)}); flux reads opsets {MIN_OPSET} to "
                             f"{MAX_OPSET} of the default domain")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise FluxValueError(f"{name} uses ONNX opset {opset}; flux reads opsets {MIN_OPSET} "
                             f"to {MAX_OPSET} (convert it with onnx.version_converter)")
    for graph in subgraphs(model.graph):
        for node in graph.node:
            if node.domain not in DEFAULT_DOMAINS:
                local = any(f.name == node.op_type and f.domain == node.domain
                            for f in model.functions)
                what = "the model's own function" if local else "an operator of the domain"
                raise FluxValueError(
                    f"{name}: node {node.name or node.op_type!r} is {node.op_type}, "
                    f"{what} {node.domain!r}; flux imports only ONNX's default domain")
    return opset


def subgraphs(graph) -> list:
    """`graph` and every graph nested in its nodes' attributes, outermost first."""
    found, pending = [], [graph]
    while pending:
        g = pending.pop(0)
        found.append(g)
        for node in g.node:
            for attribute in node.attribute:
                if attribute.type == GRAPH:
                    pending.append(attribute.g)
                elif attribute.type == GRAPHS:
                    pending.extend(attribute.graphs)
    return found


# -- 3, 4, 5. tensors and their bytes ------------------------------------------------------------


def tensors_of(graph) -> list:
    """The TensorProtos `graph` holds itself (not its subgraphs'): initializers and tensor
    attributes (``Constant``'s value, ``ConstantOfShape``'s ...)."""
    found = list(graph.initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == TENSOR:
                found.append(attribute.t)
            elif attribute.type == TENSORS:
                found.extend(attribute.tensors)
    return found


def tensor_dtype(elem_type: int) -> np.dtype | None:
    """The NumPy dtype of an ONNX element type flux computes with, else None."""
    onnx = require_onnx()
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None
    return dtype if dtype in COMPUTABLE else None


def _count(tensor) -> int:
    n = 1
    for d in tensor.dims:
        n *= int(d)
    return n


def _nbytes(tensor) -> int:
    return _count(tensor) * tensor_dtype(tensor.data_type).itemsize


def _describe(tensor) -> str:
    return f"tensor {tensor.name!r}" if tensor.name else "a tensor attribute"


def _external(tensor, name: str, folder: str | None):
    """Check one tensor's dtype, dims and bytes (checks 3, 4); where its bytes are
    (``(path, offset, length)``) when they are external data, else None."""
    what = _describe(tensor)
    if tensor_dtype(tensor.data_type) is None:
        raise FluxValueError(f"{name}: {what} has type {type_name(tensor.data_type)}; flux "
                             f"computes with bool, integer and float16/32/64 tensors")
    if any(d < 0 for d in tensor.dims):
        raise FluxValueError(f"{name}: {what} has negative dims {list(tensor.dims)}")
    count, nbytes = _count(tensor), _nbytes(tensor)
    declared = f"declares shape {tuple(tensor.dims)} ({count:,} values, {nbytes:,} bytes)"
    if tensor.data_location == EXTERNAL:
        return _external_place(tensor, name, folder, what, nbytes, declared)
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise FluxValueError(f"{name}: {what} {declared} but holds "
                                 f"{len(tensor.raw_data):,} bytes")
        return None
    onnx = require_onnx()
    field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    held = len(getattr(tensor, field))
    if held != count:
        raise FluxValueError(f"{name}: {what} {declared} but holds {held:,} values")
    return None


OUTSIDE = ("{name}: {what} keeps its data in {location!r}, {why}; flux reads external data "
           "only from files inside the model's folder ({folder})")


def _external_place(tensor, name, folder, what, nbytes, declared):
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    if folder is None:
        raise FluxValueError(f"{name}: {what} keeps its data in an external file "
                             f"({location!r}), which needs the model's folder: load the "
                             f"model from its path")
    if not location:
        raise FluxValueError(f"{name}: {what} is marked as external data without a location")
    why = None
    parts = location.replace("\\", "/").split("/")
    if "\0" in location:
        why = "a path with a NUL character"
    elif posixpath.isabs(location) or ntpath.isabs(location) or ntpath.splitdrive(location)[0]:
        why = "an absolute path"
    elif ".." in parts:
        why = "a path that climbs out with '..'"
    if why is None:
        full = os.path.realpath(os.path.join(folder, location))
        real_folder = os.path.realpath(folder)
        if os.path.commonpath([full, real_folder]) != real_folder:
            why = f"which resolves to {full}, outside it"
    if why is not None:
        raise FluxValueError(OUTSIDE.format(name=name, what=what, location=location, why=why,
                                            folder=folder))
    try:
        info_stat = os.stat(full)
    except OSError:
        raise FluxValueError(f"{name}: {what} keeps its data in {location!r}, which does not "
                             f"exist in {folder}") from None
    if not stat.S_ISREG(info_stat.st_mode):
        raise FluxValueError(f"{name}: {what} keeps its data in {location!r}, which is not a "
                             f"regular file")
    try:
        offset = int(info.get("offset", "0"))
        length = int(info.get("length", str(info_stat.st_size - offset)))
    except ValueError:
        raise FluxValueError(f"{name}: {what} has an external offset or length that is not a "
                             f"number ({info.get('offset')!r}, {info.get('length')!r})") from None
    if offset < 0 or length < 0 or offset + length > info_stat.st_size:
        raise FluxValueError(f"{name}: {what} reads bytes {offset:,} to {offset + length:,} of "
                             f"{location!r}, which has {info_stat.st_size:,}")
    if length != nbytes:
        raise FluxValueError(f"{name}: {what} {declared} but its external data holds "
                             f"{length:,} bytes")
    return full, offset, length


def _load_external(tensor, place, name: str) -> None:
    """Read a checked external tensor's bytes into its raw data."""
    path, offset, length = place
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        raise FluxValueError(f"{name}: cannot read the external data {path} "
                             f"({error.strerror or error})") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise FluxValueError(f"{name}: the external data {path} is not a regular file")
        f.seek(offset)
        data = f.read(length)
    if len(data) != length:
        raise FluxValueError(f"{name}: the external data {path} ended after {len(data):,} of "
                             f"{length:,} bytes")
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = 0
