"""Loops on TensorFlow: a `scan` is one `tf.while_loop` (the function built is the same size for
any number of steps), and unrolled models give the same outputs, `flux.back` gradients and
training results with it as fully unrolled (``FLUX_LOOPS=unroll``); the primitive itself
against its NumPy implementation (time axes, reverse, consts, integers); errors inside a loop
name the user's line; `tensor` and `keras_layer` take looped models."""
import numpy as np
import pytest
import tensorflow as tf

import flux
import flux_tf
from flux import Affine, Chain, State, net, prev, unroll
from flux.backends import vjp
from flux.ir import Aval, Eqn, Graph, Literal, Var
from flux.ir import primitives as P
from flux_tf._lower import build
from helpers import both_ways, line_of, randomize


def sequence(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)



@net
class SumOfSteps:
    """A loop inside each step: the inner recurrence over the step's own sequence, summed."""
    inner: object

    def __call__(self, x):                      # x: (batch, 3, 2)
        return flux.sum(self.inner(x), axis=1)


MODELS = {
    "lstm-gru": (lambda: unroll(Chain(flux.LSTM(3, 5), flux.GRU(5, 4), Affine(4, 2)), 6,
                                stateful=False), (2, 6, 3)),
    "stateful-lstm": (lambda: unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 6), (2, 6, 3)),
    "seq-false-gru": (lambda: unroll(flux.GRU(3, 4), 5, stateful=False, seq=False), (2, 3)),
    "loop-in-loop": (lambda: unroll(Chain(SumOfSteps(unroll(flux.Recurrent(2, 3), 3,
                                                            stateful=False)),
                                          flux.LSTM(3, 2)), 4, stateful=False), (2, 4, 3, 2)),
}


@pytest.mark.parametrize("name", MODELS)
def test_a_loop_gives_what_full_unrolling_gives_forward_back_and_training(monkeypatch, name):
    make, shape = MODELS[name]
    x = sequence(*shape)

    def run(model):
        randomize(model, seed=1)
        compiled = flux.tf(model)
        first, second = compiled(x), compiled(x)      # a stateful model: from the kept state
        flux.reset(compiled)
        (dx,) = compiled.back(sequence(*first.shape, seed=2), x)
        grads = {k: p.grad.copy() for k, p in flux.params(model).items()}
        flux.reset(compiled)
        losses = flux.train(compiled, [(x, np.zeros_like(first))] * 3, loss=flux.mse,
                            opt=flux.ADAM(0.01))       # TF's gradients of the loop
        looping = any(e.prim is P.scan_p for e in compiled.graph(x).eqns)
        return [first, second, dx, np.array(losses), grads,
                {k: p.value.copy() for k, p in flux.params(model).items()}, looping]

    looped, unrolled = both_ways(monkeypatch, make, run)
    assert looped.pop() and not unrolled.pop()
    for what, a, b in zip(("output", "second call", "input gradient", "losses"), looped,
                          unrolled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=what)
    for got, want in zip(looped[4:], unrolled[4:]):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-6, err_msg=key)


def _ops(fn, *specs) -> list[str]:
    """The op types of the traced `fn` and of every function it calls (loop bodies)."""
    graph = tf.function(fn, autograph=False).get_concrete_function(*specs).graph
    library = graph.as_graph_def().library.function
    return [n.op for n in graph.as_graph_def().node] + [n.op for f in library
                                                        for n in f.node_def]


def _whiles(ops) -> int:
    return sum(op in ("While", "StatelessWhile") for op in ops)


def _built_ops(n: int) -> tuple:
    """The op types of an n-step LSTM built on TF: forward, forward and TF's gradient (a tape),
    and flux.back's graph (flux's own two loops)."""
    model = unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), n, stateful=False)
    weights = flux_tf.variables(model)

    def forward_and_gradient(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(flux_tf.tensor(model, x))
        return tape.gradient(loss, weights)

    spec = tf.TensorSpec((2, n, 3), tf.float32)
    back = vjp(flux.tf(model).graph(np.zeros((2, n, 3), np.float32)))
    run_back = build(back)
    return (_ops(lambda x: flux_tf.tensor(model, x), spec), _ops(forward_and_gradient, spec),
            _ops(lambda *xs: run_back(xs, [w.read_value() for w in weights]),
                 *[tf.TensorSpec(v.aval.shape, v.aval.dtype) for v in back.inputs]))


def test_a_loop_is_one_while_op_and_the_built_function_does_not_grow_with_the_steps(
        monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "scan")         # (the suite also runs with "unroll")
    forward, both, back = _built_ops(5)
    assert (_whiles(forward), _whiles(both), _whiles(back)) == (1, 2, 2)
    assert forward.count("MatMul") == 8 + 1          # the step's, once, and the Affine's
    assert [len(ops) for ops in _built_ops(50)] == [len(forward), len(both), len(back)]


def _scan_graph(reverse: bool) -> Graph:
    """``scan`` of ``h′ = h + x ⊙ c + b, n′ = n + k; ys = h′ (axis 1), n′, 2h′ (axis 2)`` over
    x: (2, 3, L) read along axis 2 and k: (L,) int32; c an operand, b a body constant."""
    f, i = "float32", "int32"
    c, h, n, x, k, b = (Var(Aval(s, d)) for s, d in [((3,), f), ((2, 3), f), ((), i),
                                                      ((2, 3), f), ((), i), ((3,), f)])
    a, h1, h2, n1, y = (Var(Aval(s, d)) for s, d in [((2, 3), f), ((2, 3), f), ((2, 3), f),
                                                    ((), i), ((2, 3), f)])
    body = Graph([c, h, n, x, k], [], [], [b], [np.arange(3, dtype=f)], [
        Eqn(P.mul_p, [x, c], [a], {}), Eqn(P.add_p, [h, a], [h1], {}),
        Eqn(P.add_p, [h1, b], [h2], {}), Eqn(P.add_p, [n, k], [n1], {}),
        Eqn(P.mul_p, [h2, Literal(2, f)], [y], {})], [h2, n1, h2, n1, y])
    attrs = dict(body=body, length=4, n_consts=1, n_carry=2, x_axes=(2, 0), y_axes=(1, 0, 2),
                 reverse=reverse)
    ins = [Var(Aval(s, d)) for s, d in [((3,), f), ((2, 3), f), ((), i), ((2, 3, 4), f),
                                        ((4,), i)]]
    outs = [Var(a) for a in P.scan_p.abstract_eval(*(v.aval for v in ins), **attrs)]
    return Graph(ins, [], [], [], [], [Eqn(P.scan_p, ins, outs, attrs)], outs)


@pytest.mark.parametrize("reverse", [False, True])
def test_the_scan_primitive_and_its_tf_gradient_match_numpy(reverse):
    graph = _scan_graph(reverse)
    args = [sequence(3), sequence(2, 3, seed=1), np.int32(5), sequence(2, 3, 4, seed=2),
            np.arange(4, dtype=np.int32) * 3]
    want = P.scan_p.impl(*args, **graph.eqns[0].attrs)
    tensors = [tf.constant(a) for a in args]
    floats = [tensors[i] for i in (0, 1, 3)]                  # c, h₀ and the sequence x
    with tf.GradientTape() as tape:
        tape.watch(floats)
        got = build(graph)(tensors, [])
    assert [tuple(g.shape) for g in got] == [(2, 3), (), (2, 4, 3), (4,), (2, 3, 4)]
    for g, w in zip(got, want):
        assert g.dtype.as_numpy_dtype == w.dtype
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-6, atol=1e-6)

    cts = [sequence(*w.shape, seed=3 + j).astype(w.dtype) for j, w in enumerate(want)]
    grads = tape.gradient([got[j] for j in (0, 2, 4)], floats,
                          output_gradients=[tf.constant(cts[j]) for j in (0, 2, 4)])
    back = vjp(graph, wrt_inputs=[True, True, False, True, False], wrt_params=False)
    oracle = P.evaluate(back, args + cts)[len(want):]          # flux's reverse scan, in NumPy
    for g, w in zip(grads, oracle):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)


def test_an_error_inside_a_loop_names_the_users_line(monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "scan")

    @net
    class LogSum:
        y: State

        def __call__(self, x):
            self.y = np.log(x) + prev(self.y)          # the line the error names
            return self.y

    line = line_of("the line the error names", __file__)
    model = unroll(LogSum(np.zeros(2, np.float32)), 3, stateful=False)
    with pytest.raises(flux.BackendError) as caught:
        flux.compile(model, "tf", check_numerics=True)(-np.ones((3, 2), np.float32))
    assert "in log ((2,))" in str(caught.value)
    assert caught.value.trace[0].model == "LogSum"
    assert f"test_tf_loops.py:{line}" in str(caught.value)


def test_tensor_and_keras_layer_take_a_looped_model(monkeypatch):
    keras = pytest.importorskip("keras")
    monkeypatch.setenv("FLUX_LOOPS", "scan")
    model = randomize(unroll(Chain(flux.GRU(3, 4), Affine(4, 2)), 5, stateful=False))
    x, y = sequence(8, 5, 3), sequence(8, 5, 2, seed=1)
    np.testing.assert_allclose(flux_tf.tensor(model, tf.constant(x)).numpy(), model(x),
                               rtol=1e-5, atol=1e-6)
    layer = flux_tf.keras_layer(model)
    stack = keras.Sequential([keras.Input((5, 3)), layer])       # unknown batch: vectorized
    np.testing.assert_allclose(stack.predict(x, verbose=0), model(x), rtol=1e-5, atol=1e-6)
    stack.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = stack.evaluate(x, y, verbose=0)
    stack.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert stack.evaluate(x, y, verbose=0) < before
