"""Step sums after the loop (`flux.backends.sum_after_loops`): a carried accumulator that adds
one product or sum of step values per step becomes one long product or sum after the loop,
with the same results to float rounding; anything else stays in the loop."""
import numpy as np
import pytest

import flux
import flux.backends.numpy as numpy_backend
from flux import Affine, Chain, unroll
from flux.backends import merge_matmuls, sum_after_loops, vjp
from flux.backends.numpy import plan
from flux.ir import Eqn, Graph, Var
from flux.ir import primitives as P
from flux.ir.graph import Aval


def loops(graph) -> list:
    return [e for e in graph.eqns if e.prim is P.scan_p]


def inputs_for(graph, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(v.aval.shape).astype(v.aval.dtype) for v in graph.inputs]


def same_results(graph, rewritten, rtol=1e-5):
    args = inputs_for(graph)
    for got, want in zip(plan(rewritten)(*args), plan(graph)(*args)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("layer", [flux.LSTM, flux.GRU, flux.Recurrent])
@pytest.mark.parametrize("merge", [False, True])
def test_a_recurrent_gradients_weight_and_bias_sums_leave_its_backward_loop(layer, merge):
    flux.seed(2)
    compiled = flux.compile(unroll(Chain(layer(3, 4), Affine(4, 2)), 6, stateful=False))
    grad = vjp(compiled.graph(np.zeros((2, 6, 3), np.float32)))
    if merge:
        grad = merge_matmuls(grad)
    summed = sum_after_loops(grad)
    [forward, backward] = loops(grad)
    [_, backward_after] = loops(summed)
    n_params = len(flux.params(Chain(layer(3, 4), Affine(4, 2))))
    # every weight and bias gradient (the cell's, and the Affine's, applied at every step) was
    # an accumulator; now only the state's gradients are carried (h, and c for the LSTM)
    assert backward.attrs["n_carry"] - backward_after.attrs["n_carry"] == n_params
    assert backward_after.attrs["n_carry"] == (2 if layer is flux.LSTM else 1)
    same_results(grad, summed)
    assert loops(grad)[1].attrs["n_carry"] == backward.attrs["n_carry"]   # (grad unchanged)


def test_training_with_and_without_the_rewrite_gives_the_same_parameters():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 7, 5)).astype(np.float32)
    y = rng.standard_normal((8, 7, 6)).astype(np.float32)
    trained = []
    for on in (True, False):
        numpy_backend.SUM_AFTER_LOOPS = on
        try:
            flux.seed(0)
            model = flux.compile(unroll(flux.LSTM(5, 6), 7, stateful=False))
            flux.train(model, [(x, y)] * 3, loss=flux.mse, opt=flux.Momentum(0.1, 0.9))
            trained.append([p.value.copy() for p in flux.params(model).values()])
        finally:
            numpy_backend.SUM_AFTER_LOOPS = True
    for got, want in zip(*trained):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


# -- hand-built loops ---------------------------------------------------------------------------


def eqn(prim, ins, **attrs):
    out = Var(prim.shape_rule(*[x.aval for x in ins], **attrs))
    return Eqn(prim, ins, [out], attrs), out


def scan_graph(body_inputs, body_eqns, body_outputs, outer_inputs, n_consts, n_carry,
               x_axes, reverse=False, length=5):
    body = Graph(body_inputs, [], [], [], [], body_eqns, body_outputs)
    shapes = P.scan_p.shape_rule(*[v.aval for v in outer_inputs], body=body, length=length,
                                 n_consts=n_consts, n_carry=n_carry, x_axes=x_axes,
                                 y_axes=(0,) * (len(body_outputs) - n_carry), reverse=reverse)
    outs = [Var(s) for s in shapes]
    attrs = dict(body=body, length=length, n_consts=n_consts, n_carry=n_carry, x_axes=x_axes,
                 y_axes=(0,) * (len(body_outputs) - n_carry), reverse=reverse)
    return Graph(outer_inputs, [], [], [], [], [Eqn(P.scan_p, outer_inputs, outs, attrs)], outs)


def product_loop(extra=None, x_axes=(0, 0), reverse=False):
    """acc ← acc + a_tᵀ b_t over a: (5, 2, 3), b: (5, 2, 4) (time along `x_axes`)."""
    acc, a, b = Var(Aval((3, 4), "float64")), Var(Aval((2, 3), "float64")), \
        Var(Aval((2, 4), "float64"))
    e1, at = eqn(P.transpose_p, [a], perm=(1, 0))
    e2, d = eqn(P.matmul_p, [at, b])
    e3, new = eqn(P.add_p, [acc, d])
    eqns, outputs = [e1, e2, e3], [new]
    if extra == "term read in the step":
        outputs.append(d)
    elif extra == "accumulator read in the step":
        e4, twice = eqn(P.add_p, [acc, acc])
        eqns.append(e4)
        outputs.append(twice)
    shape = lambda step, axis: step[:axis] + (5,) + step[axis:]   # noqa: E731
    outer = [Var(Aval((3, 4), "float64")), Var(Aval(shape((2, 3), x_axes[0]), "float64")),
             Var(Aval(shape((2, 4), x_axes[1]), "float64"))]
    return scan_graph([acc, a, b], eqns, outputs, outer, 0, 1, x_axes, reverse)


@pytest.mark.parametrize("x_axes,reverse", [((0, 0), False), ((1, 0), True), ((0, 1), False)])
def test_a_sum_of_products_over_the_steps_is_one_long_product(x_axes, reverse):
    graph = product_loop(x_axes=x_axes, reverse=reverse)
    summed = sum_after_loops(graph)
    assert not loops(summed)         # (nothing left in the loop: it is gone)
    acc0, a, b = inputs_for(graph)
    a, b = np.moveaxis(a, x_axes[0], 0), np.moveaxis(b, x_axes[1], 0)
    [got] = plan(summed)(*inputs_for(graph))[:1]
    np.testing.assert_allclose(got, acc0 + np.einsum("tbi,tbj->ij", a, b), rtol=1e-12)
    same_results(graph, summed, rtol=1e-12)


@pytest.mark.parametrize("extra", ["term read in the step", "accumulator read in the step"])
def test_an_accumulator_whose_term_or_value_the_step_also_reads_stays_in_the_loop(extra):
    graph = product_loop(extra)
    summed = sum_after_loops(graph)
    assert loops(summed)[0].attrs["n_carry"] == 1
    same_results(graph, summed, rtol=1e-12)


def test_a_product_with_a_loop_invariant_stays_in_the_loop():
    w, acc, b = Var(Aval((3, 2), "float64")), Var(Aval((3, 4), "float64")), \
        Var(Aval((2, 4), "float64"))
    e1, d = eqn(P.matmul_p, [w, b])
    e2, new = eqn(P.add_p, [acc, d])
    graph = scan_graph([w, acc, b], [e1, e2], [new],
                       [Var(w.aval), Var(acc.aval), Var(Aval((5, 2, 4), "float64"))], 1, 1,
                       (0,))
    assert loops(sum_after_loops(graph))[0].attrs["n_carry"] == 1


@pytest.mark.parametrize("axes,keepdims", [((0,), False), ((1,), True), ((0, 1), False)])
def test_a_sum_of_reductions_over_the_steps_is_one_reduction(axes, keepdims):
    acc_shape = P.reduce_sum_p.shape_rule(Aval((2, 4), "float64"), axes=axes,
                                          keepdims=keepdims).shape
    acc, b = Var(Aval(acc_shape, "float64")), Var(Aval((2, 4), "float64"))
    e1, d = eqn(P.reduce_sum_p, [b], axes=axes, keepdims=keepdims)
    e2, new = eqn(P.add_p, [d, acc])           # (either order)
    e3, y = eqn(P.mul_p, [b, b])
    graph = scan_graph([acc, b], [e1, e2, e3], [new, y],
                       [Var(acc.aval), Var(Aval((5, 2, 4), "float64"))], 0, 1, (0,))
    summed = sum_after_loops(graph)
    assert loops(summed)[0].attrs["n_carry"] == 0
    same_results(graph, summed, rtol=1e-12)
