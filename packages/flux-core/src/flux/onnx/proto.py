"""What export and import share: the optional `onnx` package (imported when first needed, so
``import flux`` stays fast and works without it), the opsets flux reads and writes, and the
names of the domain and producer written into files."""
from __future__ import annotations

import importlib

from flux.errors import BackendNotInstalled

__all__ = ["require_onnx", "type_name", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET",
           "MAX_EXPORT_OPSET", "PRODUCER", "GRAPH", "GRAPHS", "TENSOR", "TENSORS"]

DEFAULT_OPSET = 18
"""The opset `flux.onnx.export` writes unless told otherwise (ReduceMax/ReduceSum take their
axes as inputs from 18 on, as every reduction does)."""

MIN_OPSET, MAX_OPSET = 7, 28
"""The default-domain opsets `flux.onnx.load` reads (28: the newest the onnx 1.23 package
defines, and the node tests use); a file importing another is refused."""

MAX_EXPORT_OPSET = 23
"""The newest opset `flux.onnx.export` writes (onnxruntime 1.32 runs 13 to 23)."""

PRODUCER = "flux"

GRAPH, GRAPHS, TENSOR, TENSORS = 5, 10, 4, 9
"""``onnx.AttributeProto``'s attribute types that hold graphs and tensors (fixed by the
format; here so that checks can read them before `onnx` is imported)."""

INSTALL_HINT = (
    "flux.onnx needs the onnx package: pip install onnx (or install flux-core with its onnx "
    "extra from this repository: pip install './packages/flux-core[onnx]'; never flux-core by "
    "bare name from the index, which is an unrelated project)")


def require_onnx():
    """The `onnx` module; a `BackendNotInstalled` error saying what to install without it.

    (The one import made on first use rather than at the top of a module: `onnx` is an
    optional extra, and importing it costs a third of a second.)"""
    try:
        return importlib.import_module("onnx")
    except ImportError as error:
        raise BackendNotInstalled(INSTALL_HINT) from error


def type_name(elem_type: int) -> str:
    """The name of an ONNX tensor element type (``FLOAT``, ``BFLOAT16`` ...)."""
    onnx = require_onnx()
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"type {elem_type}"
