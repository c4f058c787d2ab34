"""The ONNX operators flux imports, one module per family, all registered in
`flux.onnx.operators.registry.OPERATORS` when this package is imported."""
from flux.onnx.operators.registry import OPERATORS, Node, known, lookup, operator, static
from flux.onnx.operators import activations  # noqa: F401  (each family registers its operators)
from flux.onnx.operators import control  # noqa: F401
from flux.onnx.operators import elementwise  # noqa: F401
from flux.onnx.operators import indexing  # noqa: F401
from flux.onnx.operators import logic  # noqa: F401
from flux.onnx.operators import losses  # noqa: F401
from flux.onnx.operators import nn  # noqa: F401
from flux.onnx.operators import pools  # noqa: F401
from flux.onnx.operators import normalization  # noqa: F401
from flux.onnx.operators import quantize  # noqa: F401
from flux.onnx.operators import recurrent  # noqa: F401
from flux.onnx.operators import reduce  # noqa: F401
from flux.onnx.operators import resize  # noqa: F401
from flux.onnx.operators import select  # noqa: F401
from flux.onnx.operators import shape  # noqa: F401
from flux.onnx.operators import tensor  # noqa: F401

__all__ = ["OPERATORS", "Node", "known", "lookup", "operator", "static"]
