"""Patterns in graphs that backends with one operator for them fuse."""
from __future__ import annotations

from flux.ir import primitives as P
from flux.ir.graph import Graph, Literal

__all__ = ["affine_adds"]


def affine_adds(graph: Graph) -> dict:
    """Where `graph` computes ``x @ W + b`` (2-D operands, a bias vector, floating): add
    equation index -> (index of the matmul it adds the bias to, the bias atom), for products
    used nowhere else. Backends with one operator for it use this: MXNet's FullyConnected
    (one MKL-DNN inner product forward and backward, where `dot` plus a broadcast add takes
    2.3x as long on the MLP benchmark), ONNX's Gemm."""
    uses: dict[int, int] = {}
    for atom in [a for eqn in graph.eqns for a in eqn.inputs] + graph.outputs * 2:
        uses[id(atom)] = uses.get(id(atom), 0) + 1       # (an output counts as two uses)
    producer = {id(eqn.outputs[0]): i for i, eqn in enumerate(graph.eqns)}
    found = {}
    for index, eqn in enumerate(graph.eqns):
        if eqn.prim is not P.add_p or any(isinstance(a, Literal) for a in eqn.inputs):
            continue
        for product, bias in (eqn.inputs, eqn.inputs[::-1]):
            m = producer.get(id(product))
            if m is None or graph.eqns[m].prim is not P.matmul_p or uses[id(product)] != 1:
                continue
            x, w = graph.eqns[m].inputs
            shape = product.aval.shape
            if (x.aval.ndim == w.aval.ndim == 2 and bias.aval.shape == shape[-1:]
                    and bias.aval.dtype == product.aval.dtype and product.aval.dtype.kind == "f"
                    and not isinstance(x, Literal) and not isinstance(w, Literal)):
                found[index] = (m, bias)
                break
    return found
