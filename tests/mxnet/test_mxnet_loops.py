"""Loops on MXNet: an unrolled model's `scan` runs as one ``mx.sym.contrib.foreach`` (the step
once, not n copies) and gives what full unrolling (``FLUX_LOOPS=unroll``) gives: outputs,
`flux.back` gradients (flux's reverse scan) and training (MXNet's backward through foreach);
the rule's corners (time axes, reverse, 0-d steps, values the body never reads) against
NumPy's reference loop; loops nest; the native Symbol and Module hold the foreach; what
moves out of the loop before it runs computes the same."""
import json

import numpy as np
import pytest

import flux
from flux import Affine, Chain, State, net, prev, unroll
from flux.ir import Aval, Eqn, Graph, Literal, Var, check_graph
from flux.ir import primitives as P
from helpers import both_ways, nested_loops, randomize

mx = pytest.importorskip("mxnet")
flux_mxnet = pytest.importorskip("flux_mxnet")


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ops(sym, inside=False) -> list[str]:
    """The operator of every node of `sym`, nested foreach subgraphs included (only theirs:
    `inside`)."""
    def walk(nodes, deep):
        for node in nodes:
            if deep or not inside:
                yield node["op"]
            for sub in node.get("subgraphs", []):
                yield from walk(sub["nodes"], True)
    return list(walk(json.loads(sym.tojson())["nodes"], False))


@pytest.fixture
def loops(monkeypatch):
    """Loops on, whatever ``FLUX_LOOPS`` the suite runs under."""
    monkeypatch.setenv("FLUX_LOOPS", "scan")



def assert_same(looped, unrolled, rtol=1e-4, atol=1e-5):
    for a, b in zip(looped, unrolled):
        if isinstance(a, dict):
            for key in b:
                np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@net
class Echo:
    """A seq=False recurrence: the same x every step, a trainable initial state."""
    W: object
    y: State

    def __call__(self, x):
        self.y = np.tanh(x @ self.W + prev(self.y))
        return self.y


@net
class Pick:
    """Indexing in the step: a basic index and an index array."""
    def __call__(self, x):
        return x[:, :2] * 2.0 + x[:, [2, 0]]


@net
class Bag:
    """Token ids in the step, a bag of words: ids (batch, time, words) of ints."""
    table: object

    def __call__(self, ids):
        return flux.sum(self.table(ids), axis=1)


def tokens(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 10, shape)


MODELS = {       # name: (model, input)
    "lstm-gru-affine": (lambda: unroll(Chain(flux.LSTM(3, 5), flux.GRU(5, 4), Affine(4, 2)), 6,
                                       stateful=False), f32(2, 6, 3, seed=1)),
    "lstm-stateful": (lambda: unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5), f32(2, 5, 3)),
    "gru-one-sequence": (lambda: unroll(flux.GRU(3, 2), 6, stateful=False), f32(6, 3)),
    "seq-false": (lambda: unroll(Echo(flux.param(0.5 * f32(3, 4)), flux.param(0.1 * f32(4))), 4,
                                 stateful=False, seq=False), f32(2, 3, seed=1)),
    "indexing": (lambda: unroll(Chain(Pick(), flux.Recurrent(2, 3)), 4, stateful=False),
                 f32(2, 4, 3)),
    "embedding": (lambda: unroll(Chain(Bag(flux.Embedding(10, 3)), flux.GRU(3, 3)), 4,
                                 stateful=False), tokens(2, 4, 2)),
    "layernorm": (lambda: unroll(Chain(flux.Recurrent(3, 3), flux.LayerNorm(3)), 4,
                                 stateful=False), f32(2, 4, 3)),
}


@pytest.mark.parametrize("name", MODELS)
def test_a_loop_gives_what_full_unrolling_gives_forward_back_and_training(monkeypatch, name):
    make, x = MODELS[name]

    def run(model):
        randomize(model, seed=1)
        compiled = flux.mxnet(model)
        first, second = compiled(x), compiled(x)         # (a stateful model: carried)
        (dx,) = compiled.back(f32(*first.shape, seed=2), x)
        grads = {k: p.grad.copy() for k, p in flux.params(model).items()}
        losses = flux.train(compiled, [(x, np.zeros_like(first))] * 3, loss=flux.mse,
                            opt=flux.ADAM(0.01), epochs=2)
        values = {k: p.value.copy() for k, p in flux.params(model).items()}
        return first, second, dx if dx is not None else 0, losses, grads, values

    looped, unrolled = both_ways(monkeypatch, make, run)
    assert_same(looped, unrolled)


def test_the_symbol_holds_one_foreach_whatever_the_steps(loops, monkeypatch):
    counts = []
    for n in (5, 40):
        flux.seed(0)
        model = unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), n, stateful=False)
        sym, _ = flux_mxnet.symbol(model, (2, n, 3))
        names = ops(sym)
        counts.append((names.count("_foreach"), names.count("dot"), len(names)))
    assert counts[0] == counts[1] and counts[0][0] == 1 and counts[0][1] == 9
    monkeypatch.setenv("FLUX_LOOPS", "unroll")
    sym, _ = flux_mxnet.symbol(unroll(flux.LSTM(3, 4), 5, stateful=False), (2, 5, 3))
    assert "_foreach" not in ops(sym) and ops(sym).count("dot") == 40


def test_training_and_back_run_foreach_in_mxnet(loops):
    flux.seed(1)
    model = randomize(unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5, stateful=False))
    compiled = flux.mxnet(model)
    x = f32(2, 5, 3)
    step, _ = compiled.training_step(flux.mse, x, np.zeros((2, 5, 2), np.float32))
    assert [e.prim for e in step.objective.eqns].count(P.scan_p) == 1
    back = flux.backends.vjp(compiled.graph(x))     # flux.back's graph: a forward, a reverse loop
    assert [e.prim for e in back.eqns].count(P.scan_p) == 2
    assert ops(flux_mxnet._symbol.to_symbol(back).symbol).count("_foreach") == 2
    trainer = compiled._executors    # the training step is one executor, foreach inside
    flux.train(compiled, [(x, np.zeros((2, 5, 2), np.float32))], loss=flux.mse,
               opt=flux.SGD(0.1))
    (executable,) = [e for e in trainer.values() if e is not None]
    assert ops(executable.built.symbol).count("_foreach") == 1
    # in the loop: h @ Wy* + b* and the Affine as FullyConnected (weights transposed before
    # the loop), the x_t @ Wx* products lifted out of it
    step = ops(executable.built.symbol, inside=True)
    assert step.count("FullyConnected") == 5 and "dot" not in step and "transpose" not in step


def test_a_loop_inside_a_loop(monkeypatch):
    def make():
        return nested_loops()[0]

    x = nested_loops()[1]

    def run(model):
        randomize(model, seed=2)
        compiled = flux.mxnet(model)
        y = compiled(x)
        (dx,) = compiled.back(np.ones_like(y), x)
        grads = {k: p.grad.copy() for k, p in flux.params(model).items()}
        losses = flux.train(compiled, [(x, np.zeros_like(y))] * 2, loss=flux.mse,
                            opt=flux.SGD(0.1))
        values = {k: p.value.copy() for k, p in flux.params(model).items()}
        return y, dx, losses, grads, values

    looped, unrolled = both_ways(monkeypatch, make, run)
    assert_same(looped, unrolled)
    monkeypatch.setenv("FLUX_LOOPS", "scan")
    sym, _ = flux_mxnet.symbol(make(), x.shape)
    assert ops(sym).count("_foreach") == 2        # the outer loop's subgraph holds the inner


def test_a_module_trains_the_foreach_symbol_like_flux(loops):
    flux.seed(2)
    model = randomize(unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5, stateful=False), seed=3)
    x, y = f32(4, 5, 3, seed=4), f32(4, 5, 2, seed=5)
    mod = flux_mxnet.module(model, x.shape, loss="mse")
    assert "_foreach" in ops(mod.symbol)
    mod.forward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(y)]), is_train=False)
    np.testing.assert_allclose(mod.get_outputs()[0].asnumpy(), model(x), rtol=1e-4, atol=1e-5)
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.1})
    mod.forward_backward(mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(y)]))
    mod.update()
    before = model(x)
    flux_mxnet.set_params(model, mod.get_params()[0])
    assert not np.allclose(model(x), before)


# -- the rule's corners, on hand-made loops, against NumPy's reference loop ---------------------


def _var(shape, dtype="float32"):
    return Var(Aval(tuple(shape), np.dtype(dtype)))


def _body(inputs, eqns, outputs, consts=(), const_values=()):
    return Graph(list(inputs), [], [], list(consts), list(const_values), list(eqns),
                 list(outputs))


def _run_both(graph, args):
    want = P.evaluate(graph, args)
    got = flux_mxnet.MXNetBackend().lower(graph, {})(*args)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
def test_time_axes_reverse_0d_steps_constants_and_unread_values(reverse):
    """h′ = h·x_t + c (x: (3, L, 2), time axis 1), a 0-d running sum s′ = s + u_t, a carried
    value the body only writes (z′ = 2·x_t), a sequence it never reads, a body constant and a
    Literal y; ys stacked along axes 2, 0 and 0."""
    L = 4
    c, h, s, z, x, u, unread = (_var((2,)), _var((3, 2)), _var(()), _var((3, 2)), _var((3, 2)),
                                _var(()), _var((5,)))
    k = _var((2,))
    hx, h2, s2, z2, y0 = _var((3, 2)), _var((3, 2)), _var(()), _var((3, 2)), _var((3, 2))
    eqns = [Eqn(P.mul_p, [h, x], [hx], {}), Eqn(P.add_p, [hx, c], [h2], {}),
            Eqn(P.add_p, [s, u], [s2], {}), Eqn(P.mul_p, [x, Literal(2.0, np.dtype("f"))], [z2],
                                                 {}),
            Eqn(P.add_p, [h2, k], [y0], {})]
    body = _body([c, h, s, z, x, u, unread], eqns, [h2, s2, z2, y0, s2, Literal(1.5, "f")],
                 consts=[k], const_values=[np.float32([10, 20])])
    ins = [_var((2,)), _var((3, 2)), _var(()), _var((3, 2)), _var((3, L, 2)), _var((L,)),
           _var((L, 5))]
    outs = P.scan_p.shape_rule(*(v.aval for v in ins), body=body, length=L, n_consts=1,
                               n_carry=3, x_axes=(1, 0, 0), y_axes=(2, 0, 0), reverse=reverse)
    out_vars = [Var(a) for a in outs]
    attrs = dict(body=body, length=L, n_consts=1, n_carry=3, x_axes=(1, 0, 0), y_axes=(2, 0, 0),
                 reverse=reverse)
    graph = Graph(ins, [], [], [], [], [Eqn(P.scan_p, ins, out_vars, attrs)], out_vars)
    args = [f32(*v.aval.shape, seed=i) for i, v in enumerate(ins)]
    _run_both(graph, args)


def test_a_loop_reading_no_sequence_and_a_carried_value_passed_through():
    """seq=False's shape: no xs at all (a dummy sequence sets the length), and a carried value
    the body hands back unchanged; one y is the carried value itself."""
    w, h, g = _var((2, 2)), _var((1, 2)), _var((1, 2))
    h2 = _var((1, 2))
    body = _body([w, h, g], [Eqn(P.matmul_p, [h, w], [h2], {})], [h2, g, h])
    ins = [_var((2, 2)), _var((1, 2)), _var((1, 2))]
    attrs = dict(body=body, length=3, n_consts=1, n_carry=2, x_axes=(), y_axes=(1,),
                 reverse=False)
    outs = [Var(a) for a in P.scan_p.shape_rule(*(v.aval for v in ins), **attrs)]
    graph = Graph(ins, [], [], [], [], [Eqn(P.scan_p, ins, outs, attrs)], outs)
    _run_both(graph, [f32(2, 2), f32(1, 2, seed=1), f32(1, 2, seed=2)])


def test_one_value_as_two_loop_inputs():
    """One outer value as both carried values' start and as two sequences: foreach's
    subgraph inputs still get names of their own."""
    h, g, x, y = _var((2, 3)), _var((2, 3)), _var((2, 3)), _var((2, 3))
    h2, g2 = _var((2, 3)), _var((2, 3))
    body = _body([h, g, x, y], [Eqn(P.mul_p, [h, x], [h2], {}), Eqn(P.add_p, [g, y], [g2], {})],
                 [h2, g2, h2])
    start, seq = _var((2, 3)), _var((4, 2, 3))
    ins = [start, start, seq, seq]
    attrs = dict(body=body, length=4, n_consts=0, n_carry=2, x_axes=(0, 0), y_axes=(0,),
                 reverse=False)
    outs = [Var(a) for a in P.scan_p.shape_rule(*(v.aval for v in ins), **attrs)]
    graph = Graph([start, seq], [], [], [], [], [Eqn(P.scan_p, ins, outs, attrs)], outs)
    _run_both(graph, [f32(2, 3), f32(4, 2, 3, seed=1)])


# -- what moves out of the loop (`flux_mxnet._hoist`) ---------------------------------------------


def _scan_of(graph):
    (eqn,) = [e for e in graph.eqns if e.prim is P.scan_p]
    return eqn


@pytest.mark.parametrize("gradient", [False, True])
def test_hoisting_lifts_the_input_products_and_computes_the_same(loops, gradient):
    from flux_mxnet._hoist import hoist

    flux.seed(4)
    model = randomize(unroll(flux.LSTM(3, 4), 5, stateful=False), seed=5)
    graph = flux.compile(model).graph(np.zeros((2, 5, 3), np.float32))
    if gradient:                              # the backward loop: a reverse scan
        grad = flux.backends.vjp(graph)
        eqn = [e for e in grad.eqns if e.prim is P.scan_p][1]
        assert eqn.attrs["reverse"]
    else:
        eqn = _scan_of(graph)
    lifted = hoist(eqn)
    check_graph(lifted)
    inner = _scan_of(lifted)
    products = [e for e in eqn.attrs["body"].eqns if e.prim is P.matmul_p]
    kept = [e for e in inner.attrs["body"].eqns if e.prim is P.matmul_p]
    if not gradient:                          # x_t @ Wx* before the loop, h @ Wy* in it
        assert len(products) == 8 and len(kept) == 4
        assert [e.prim for e in lifted.eqns].count(P.matmul_p) == 4
    assert hoist(inner) is None               # nothing more to move
    args = [f32(*a.aval.shape, seed=i) for i, a in enumerate(eqn.inputs)]
    want = P.scan_p.impl(*args, **eqn.attrs)
    for got, w in zip(P.evaluate(lifted, args), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
