"""Loops in the IR: unrolled models trace as one `scan` (its body traced once), its gradient is a
reverse scan, and both give what full unrolling (``FLUX_LOOPS=unroll``) and NumPy oracles give;
graphs stay the same size for any number of steps; bad loops fail at the user's line."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, State, net, prev, unroll
from flux.ir import Aval, Eqn, Graph, Var
from flux.ir import primitives as P
from flux.transforms.autodiff import vjp
from helpers import (both_ways, check_back, lstm_cell, nested_loops, np_params, np_unroll,
                     randomize, under)


def sequence(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def prims(graph) -> list[str]:
    return [e.prim.name for e in graph.eqns]



MODELS = {
    "lstm-gru-affine": lambda: unroll(Chain(flux.LSTM(3, 5), flux.GRU(5, 4), Affine(4, 2)), 6,
                                      stateful=False),
    "recurrent-stateful": lambda: unroll(Chain(flux.Recurrent(3, 4), Affine(4, 2)), 6),
    "one-sequence": lambda: unroll(flux.LSTM(3, 2), 6, stateful=False),
}


@pytest.mark.parametrize("name", MODELS)
def test_a_loop_gives_what_full_unrolling_gives_forward_back_and_training(monkeypatch, name):
    x = sequence(6, 3) if name == "one-sequence" else sequence(2, 6, 3)

    def run(model):
        randomize(model, seed=1)
        compiled = flux.compile(model)
        first, second = compiled(x), compiled(x)
        delta = sequence(*first.shape, seed=2)
        (dx,) = compiled.back(delta, x)
        grads = {k: p.grad.copy() for k, p in flux.params(model).items()}
        flux.train(compiled, [(x, np.zeros_like(first))] * 3, loss=flux.mse,
                   opt=flux.ADAM(0.01), epochs=1)
        return first, second, dx, grads, {k: p.value.copy() for k, p in
                                          flux.params(model).items()}

    looped, unrolled = both_ways(monkeypatch, MODELS[name], run)
    for a, b in zip(looped[:3], unrolled[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for got, want in zip(looped[3:], unrolled[3:]):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_an_unrolled_model_is_one_scan_whose_size_does_not_grow_with_the_steps():
    sizes = []
    for n in (5, 50, 500):
        compiled = flux.compile(unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), n, stateful=False))
        graph = compiled.graph(np.zeros((2, n, 3), np.float32))
        assert prims(graph).count("scan") == 1
        grad = vjp(graph)
        assert prims(grad).count("scan") == 2          # forward (with residuals), backward
        sizes.append((len(graph.eqns), len(grad.eqns),
                      sum(len(e.attrs["body"].eqns) for e in grad.eqns if e.prim is P.scan_p)))
    assert sizes[0] == sizes[1] == sizes[2]


def test_full_unrolling_is_an_option(monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "unroll")
    compiled = flux.compile(unroll(flux.LSTM(3, 4), 5, stateful=False))
    graph = compiled.graph(np.zeros((2, 5, 3), np.float32))
    assert "scan" not in prims(graph) and prims(graph).count("matmul") == 40
    monkeypatch.setenv("FLUX_LOOPS", "sideways")
    with pytest.raises(flux.FluxError, match="FLUX_LOOPS must be 'scan' or 'unroll'"):
        flux.compile(unroll(flux.LSTM(3, 4), 5))(np.zeros((2, 5, 3), np.float32))


def test_a_loop_against_numpy_and_finite_differences():
    model = randomize(unroll(flux.LSTM(3, 4), 5, stateful=False), seed=4)
    assert "scan" in prims(flux.compile(model).graph(np.zeros((2, 5, 3), np.float32)))

    def oracle(p, x):
        return np_unroll(lstm_cell, under(p, "model"), x, [np.zeros(4), np.zeros(4)])[0]

    check_back(model, sequence(2, 5, 3, seed=5).astype(np.float64), oracle)


def test_a_trainable_initial_state_and_a_seq_false_input_get_gradients():
    @net
    class Echo:
        W: object
        y: State

        def __call__(self, x):
            self.y = np.tanh(x @ self.W + prev(self.y))
            return self.y

    model = unroll(Echo(flux.param(0.5 * sequence(3, 4)), flux.param(0.1 * sequence(4))), 4,
                   stateful=False, seq=False)
    x = sequence(2, 3, seed=1)

    def oracle(p, x):
        y, out = np.broadcast_to(p["model.y"], (len(x), 4)), []
        for _ in range(4):
            y = np.tanh(x @ p["model.W"] + y)
            out.append(y)
        return np.stack(out, axis=1)

    check_back(model, x.astype(np.float64), oracle)
    assert set(np_params(model)) == {"model.W", "model.y"}


def test_a_loop_inside_a_loop(monkeypatch):
    def make():
        return nested_loops()[0]

    x = nested_loops()[1]

    def run(model):
        randomize(model, seed=2)
        compiled = flux.compile(model)
        y = compiled(x)
        (dx,) = compiled.back(np.ones_like(y), x)
        return y, dx, [p.grad.copy() for p in flux.params(model).values()]

    looped, unrolled = both_ways(monkeypatch, make, run)
    np.testing.assert_allclose(looped[0], unrolled[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(looped[1], unrolled[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(looped[2], unrolled[2]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_what_a_loop_cannot_hold_is_unrolled_and_still_right(monkeypatch):
    """prev(v, 2), flip and dropout inside a step fall back to full unrolling."""
    @net
    class Fib:
        y: State

        def __call__(self, x):
            self.y = prev(self.y) + prev(self.y, 2) + x
            return self.y

    model = unroll(Fib(np.ones(1, np.float32)), 6, stateful=False)
    graph = flux.compile(model).graph(np.zeros((6, 1), np.float32))
    assert "scan" not in prims(graph)
    np.testing.assert_allclose(model(np.zeros((6, 1), np.float32))[:, 0], [2, 3, 5, 8, 13, 21])
    dropped = unroll(Chain(flux.Dropout(0.5), flux.Recurrent(2, 2)), 3, stateful=False)
    flux.trainmode(dropped)
    assert "scan" not in prims(flux.compile(dropped).graph(np.zeros((1, 3, 2), "f")))


def test_a_state_whose_shape_changes_in_the_step_fails_at_its_line():
    @net
    class Growing:
        y: State

        def __call__(self, x):
            self.y = flux.hcat(prev(self.y), x)       # the line the error names
            return self.y

    with pytest.raises(flux.ShapeError) as caught:
        unroll(Growing(np.zeros(2, np.float32)), 3)(np.zeros((3, 2), np.float32))
    message = str(caught.value)
    assert "State Growing.y enters each step with shape (2,)" in message
    assert "assigns it a value of shape (4,)" in message
    assert "test_loops.py" in message and "the line the error names" not in message
    line = next(i for i, text in enumerate(open(__file__), 1) if "the line the error names"
                in text)
    assert f"test_loops.py:{line}" in message


def test_reading_a_later_step_says_to_use_prev():
    @net
    class Ahead:
        y: State

        def __call__(self, x):
            self.y = prev(self.y, 0) + x
            return self.y

    with pytest.raises(flux.FluxError, match=r"prev\(v, n\) reads the value n ≥ 1 steps "
                                             r"earlier.*later step"):
        unroll(Ahead(np.zeros(2, np.float32)), 3)(np.zeros((3, 2), np.float32))

    @net
    class Current:
        y: State

        def __call__(self, x):
            return self.y + x                        # this step's y, before it is assigned

    with pytest.raises(flux.FluxError, match=r"use prev\(self.y\)"):
        unroll(Current(np.zeros(2, np.float32)), 3)(np.zeros((3, 2), np.float32))


def _sum_body():
    h, x = Var(Aval((2,), "f")), Var(Aval((2,), "f"))
    out = Var(Aval((2,), "f"))
    return Graph([h, x], [], [], [], [], [Eqn(P.add_p, [h, x], [out], {})], [out, out])


def test_the_scan_primitive_runs_both_ways_and_refuses_a_loop_of_no_steps():
    body = _sum_body()
    xs = np.arange(8, dtype=np.float32).reshape(4, 2)
    attrs = dict(body=body, n_consts=0, n_carry=1, x_axes=(0,), y_axes=(0,))
    final, ys = P.scan_p.impl(np.zeros(2, "f"), xs, length=4, reverse=False, **attrs)
    np.testing.assert_array_equal(ys, np.cumsum(xs, axis=0))
    final, ys = P.scan_p.impl(np.zeros(2, "f"), xs, length=4, reverse=True, **attrs)
    np.testing.assert_array_equal(ys, np.cumsum(xs[::-1], axis=0)[::-1])
    with pytest.raises(flux.ShapeError, match="a loop over a sequence of length 0"):
        P.scan_p.abstract_eval(Aval((2,), "f"), Aval((0, 2), "f"), length=0, reverse=False,
                               **attrs)
    with pytest.raises(flux.ShapeError, match=r"operand 0 is \(3,\), the body takes \(2,\)"):
        P.scan_p.abstract_eval(Aval((3,), "f"), Aval((4, 2), "f"), length=4, reverse=False,
                               **attrs)


def test_a_sequence_of_length_zero_is_refused_naming_both_lengths():
    with pytest.raises(flux.ShapeError, match="expected a sequence of length 4.*found length 0"):
        unroll(flux.LSTM(3, 2), 4)(np.zeros((2, 0, 3), np.float32))


def test_the_graph_printout_shows_the_body_once():
    compiled = flux.compile(unroll(flux.Recurrent(3, 2), 100, stateful=False))
    text = str(compiled.graph(np.zeros((1, 100, 3), np.float32)))
    assert text.count("= scan[length=100") == 1 and text.count("tanh") == 1
    assert len(text.splitlines()) < 20


def test_a_looped_model_resumed_from_a_checkpoint_ends_where_an_uninterrupted_run_does(
        tmp_path):
    x, y = sequence(4, 5, 3), sequence(4, 5, 2, seed=1)
    data = [(x, y), (y[..., :1] + x, y)] * 3

    def model():
        flux.seed(7)
        return unroll(Chain(flux.GRU(3, 4), Affine(4, 2)), 5, stateful=False)

    whole = model()
    flux.train(whole, data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=2)
    first = model()
    flux.train(first, data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=1,
               checkpoint=tmp_path / "run.ckpt")
    resumed = model()
    flux.train(resumed, data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=2,
               resume=tmp_path / "run.ckpt")
    for key, p in flux.params(whole).items():
        np.testing.assert_array_equal(flux.params(resumed)[key].value, p.value, err_msg=key)


def test_loop_free_work_is_lifted_out_of_the_loop_with_the_same_results():
    """`lift_loops`: an LSTM's x_t @ Wx* (and what else reads no carried value) run over the
    whole sequence before the loop; forward and gradient graphs compute the same."""
    from flux.backends import lift_loops
    from flux.backends.numpy import plan
    flux.seed(2)
    model = randomize(unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5, stateful=False))
    graph = flux.compile(model).graph(np.zeros((2, 5, 3), np.float32))
    for g in (graph, vjp(graph)):
        lifted = lift_loops(g)
        loops = [e for e in lifted.eqns if e.prim is P.scan_p]
        before = [e for e in g.eqns if e.prim is P.scan_p][0].attrs["body"]
        assert prims(loops[0].attrs["body"]).count("matmul") < prims(before).count("matmul")
        args = [sequence(*v.aval.shape, seed=i) for i, v in enumerate(g.inputs)]
        for got, want in zip(plan(lifted)(*args), plan(g)(*args)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert prims(lift_loops(graph).eqns[-1].attrs["body"]).count("matmul") == 5  # h @ Wy*, Affine
