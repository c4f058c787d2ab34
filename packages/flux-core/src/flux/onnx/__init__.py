"""ONNX both ways: `export` writes any flux model as an ONNX file, `load` reads an ONNX file as
a flux model whose initializers are Params (it runs on every backend, trains, prints with
`flux.shapes` and exports again).

Needs the ``onnx`` package (``pip install onnx``, or flux-core's ``onnx`` extra from this
repository); ``import flux`` does not import it. See docs/onnx.md.
"""
from flux.onnx.export import export
from flux.onnx.load import OnnxModel, load

__all__ = ["export", "load", "OnnxModel"]
