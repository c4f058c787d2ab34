"""Matmul batching (`flux.backends.merge_matmuls`): products sharing an operand become one
product of concatenations, in forward graphs, gradient graphs and loop bodies (loop-invariant
concatenations hoisted out of the loop), with the same results to float rounding."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, net, unroll
from flux.backends import merge_matmuls, vjp
from flux.backends.numpy import plan
from flux.ir import primitives as P


def matmuls(graph) -> int:
    return sum(1 if e.prim is P.matmul_p else
               (matmuls(e.attrs["body"]) if e.prim is P.scan_p else 0) for e in graph.eqns)


def inputs_for(graph, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.aval.shape).astype(v.aval.dtype) for v in graph.inputs]


def same_results(graph, merged):
    args = inputs_for(graph)
    for got, want in zip(plan(merged)(*args), plan(graph)(*args)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer,per_step,merged_per_step", [
    (flux.LSTM, 8, 2),           # x @ [Wxf|Wxi|Wxo|Wxc], prev(y) @ [Wyf|…]
    (flux.GRU, 6, 3),            # the same for r and u, and x @ Wxh + (r ⊙ y) @ Wyh as one
    (flux.Recurrent, 2, 1)])     # x @ Wxy + y @ Wyy = [x | y] @ [Wxy ; Wyy]
def test_a_recurrent_cells_products_merge_in_its_loop_forward_and_backward(
        layer, per_step, merged_per_step):
    flux.seed(1)
    compiled = flux.compile(unroll(Chain(layer(3, 4), Affine(4, 2)), 5, stateful=False))
    graph = compiled.graph(np.zeros((2, 5, 3), np.float32))
    merged = merge_matmuls(graph)
    assert matmuls(graph) == per_step + 1
    assert matmuls(merged) == merged_per_step + 1
    same_results(graph, merged)
    grad = vjp(graph)
    merged_grad = merge_matmuls(grad)
    assert matmuls(merged_grad) <= 0.8 * matmuls(grad)
    same_results(grad, merged_grad)
    loops = [e for e in merged.eqns if e.prim is P.scan_p]
    body = loops[0].attrs["body"]
    consts = {id(v) for v in body.inputs[:loops[0].attrs["n_consts"]]}
    assert not any(e.prim is P.concatenate_p and all(id(a) in consts for a in e.inputs)
                   for e in body.eqns)           # (weights are joined once, outside the loop)
    assert merged is not graph and matmuls(graph) == per_step + 1  # (the graph is unchanged)


def test_products_of_one_operand_anywhere_merge_and_sums_of_products_too():
    @net
    class Heads:
        A: object
        B: object
        C: object

        def __call__(self, x):
            return np.tanh(x @ self.A) * (x @ self.B) + (x @ self.C)

    @net
    class Mix:
        A: object
        B: object

        def __call__(self, x, y):
            return x @ self.A + y @ self.B + x

    rng = np.random.default_rng(0)
    heads = Heads(*(rng.standard_normal((3, 4)).astype("f") for _ in range(3)))
    graph = flux.compile(heads).graph(np.zeros((2, 3), np.float32))
    merged = merge_matmuls(graph)
    assert matmuls(graph) == 3 and matmuls(merged) == 1
    same_results(graph, merged)
    mix = Mix(rng.standard_normal((3, 3)).astype("f"), rng.standard_normal((2, 3)).astype("f"))
    graph = flux.compile(mix).graph(np.zeros((5, 3), "f"), np.zeros((5, 2), "f"))
    merged = merge_matmuls(graph)
    assert matmuls(merged) == 1 and [e.prim.name for e in merged.eqns].count("concatenate") == 2
    same_results(graph, merged)


def test_products_that_share_nothing_are_left_alone():
    graph = flux.compile(Chain(Affine(3, 4), Affine(4, 2))).graph(np.zeros((2, 3), "f"))
    merged = merge_matmuls(graph)
    assert [e.prim.name for e in merged.eqns] == [e.prim.name for e in graph.eqns]
