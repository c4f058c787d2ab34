"""Tracing and the IR: graphs, their printer and checker, source lines and model frames, NumPy
inside models, dtype promotion, the trace cache, and round trips (graph == Python forward)."""
import dataclasses
import os

import numpy as np
import pytest

import flux
import flux.ir as ir
from flux import Affine, Chain, Param, net, param, softmax, σ
from flux.backends import flatten, trace
from flux.transforms.autodiff import vjp
from helpers import AFFINE_FILE, affine_line, line_of as _line_of


def line_of(marker, path=None):
    return _line_of(marker, path or HERE)

RNG = np.random.default_rng(99)
HERE = os.path.abspath(__file__)


def graph_of(model, *xs):
    return flux.compile(model, "numpy").graph(*xs)


def trace_fresh(model, *xs):
    """A graph traced now (not the cached one), for tests that corrupt it."""
    leaves, tree = flatten(xs)
    return trace(model, [ir.Aval(np.shape(x), np.asarray(x).dtype) for x in leaves], tree)


def evaluate(graph, *xs):
    """A reference interpreter: run the graph one equation at a time with each primitive's
    NumPy `impl` (independent of the NumPy backend's planner)."""
    env = {}
    for var, x in zip(graph.inputs, xs):
        env[id(var)] = np.asarray(x)
    for var, p in zip(graph.param_vars, graph.param_objs):
        env[id(var)] = p.value
    for var, value in zip(graph.consts, graph.const_values):
        env[id(var)] = value
    read = lambda a: a.value if isinstance(a, ir.Literal) else env[id(a)]  # noqa: E731
    for eqn in graph.eqns:
        outs = eqn.prim.impl(*(read(a) for a in eqn.inputs), **eqn.attrs)
        outs = outs if eqn.prim.multiple_results else [outs]
        for var, value in zip(eqn.outputs, outs):
            value = np.asarray(value)
            assert value.shape == var.aval.shape and value.dtype == var.aval.dtype, eqn
            env[id(var)] = value
    return [np.asarray(read(a)) for a in graph.outputs]


@net
class TLP:
    first: object
    second: object

    def __call__(self, x):
        l1 = σ(self.first(x))  # tlp-l1
        l2 = softmax(self.second(l1))  # tlp-l2
        return l2


@net
class Inner:
    W: Param

    def __call__(self, x):
        h = x @ self.W  # inner-matmul
        return np.tanh(h)  # inner-tanh


@net
class Outer:
    inner: object
    b: Param

    def __call__(self, x):
        y = self.inner(x)  # outer-call
        return y * 2 + self.b  # outer-scale


def test_the_suite_checks_every_graph():
    assert flux.ir.passes.CHECK_GRAPHS is True


# -- the printed graph ----------------------------------------------------------------------------


def test_str_graph_has_one_equation_per_line_with_shapes_and_sources():
    model = TLP(Affine(10, 20), Affine(20, 15))
    graph = graph_of(model, np.zeros((5, 10), np.float32))
    text = str(graph)
    lines = text.splitlines()
    assert len(lines) == len(graph.eqns) + 2               # header, equations, return
    assert lines[0].startswith("{") and "(5, 10)" in lines[0]
    assert "(10, 20)" in lines[0] and "first.W" in lines[0]
    assert lines[-1].strip().startswith("return") and lines[-1].rstrip().endswith("}")
    for eqn, line in zip(graph.eqns, lines[1:-1]):
        assert eqn.prim.name in line
        assert str(eqn.outputs[0].aval.shape) in line
        assert f"{os.path.basename(eqn.source.file)}:{eqn.source.line}" in line
    assert "(5, 20)" in text and "(5, 15)" in text
    assert f"affine.py:{affine_line()}" in text
    assert f"test_tracing.py:{line_of('tlp-l1')}" in text
    assert f"test_tracing.py:{line_of('tlp-l2')}" in text
    assert "matmul" in text and "logistic" in text and "exp" in text


def test_str_graph_of_a_single_point_prints_vector_shapes():
    graph = graph_of(Affine(10, 20), np.zeros(10, np.float32))
    text = str(graph)
    assert "(10,)" in text.splitlines()[0]
    assert "(20,)" in text


def test_str_graph_names_dtypes_other_than_float32():
    graph = graph_of(net(lambda x: x + 1), np.zeros(3, np.int64))
    assert "int64" in str(graph)


# -- the checker ----------------------------------------------------------------------------------


def _models_and_inputs():
    x = RNG.random((3, 10)).astype(np.float32)
    return {
        "Affine": (Affine(10, 4), x),
        "Affine single point": (Affine(10, 4), x[0]),
        "Chain": (Chain(Affine(10, 5), σ, Affine(5, 3), softmax), x),
        "TLP": (TLP(Affine(10, 6), Affine(6, 2)), x),
        "Outer": (Outer(Inner(np.ones((10, 4))), np.zeros(4)), x),
        "numpy functions": (net(lambda v: np.concatenate(
            [np.maximum(v, 0), np.where(v > 0.5, v, -v)], axis=1).T.reshape(-1)), x),
    }


@pytest.mark.parametrize("name", list(_models_and_inputs()))
def test_check_graph_accepts_graphs_flux_makes(name):
    model, x = _models_and_inputs()[name]
    graph = trace_fresh(model, x)
    assert ir.check_graph(graph) is graph
    grads = vjp(graph)
    assert ir.check_graph(grads) is grads


def _corruptions():
    def use_before_def(g):
        return dataclasses.replace(g, eqns=list(reversed(g.eqns)))

    def wrong_aval(g):
        g.eqns[0].outputs[0].aval = ir.Aval((7, 7), np.float32)
        return g

    def wrong_dtype(g):
        out = g.eqns[0].outputs[0]
        out.aval = ir.Aval(out.aval.shape, np.float64)
        return g

    def undefined_output(g):
        return dataclasses.replace(g, outputs=[ir.Var(ir.Aval((3, 4), np.float32))])

    def defined_twice(g):
        g.eqns[1].outputs[0] = g.eqns[0].outputs[0]
        return g

    def undefined_input(g):
        g.eqns[-1].inputs[0] = ir.Var(g.eqns[-1].inputs[0].aval)
        return g

    def param_mismatch(g):
        g.param_vars[0].aval = ir.Aval((99,), np.float32)
        return g

    return {f.__name__: f for f in (use_before_def, wrong_aval, wrong_dtype, undefined_output,
                                    defined_twice, undefined_input, param_mismatch)}


@pytest.mark.parametrize("name", list(_corruptions()))
def test_check_graph_rejects_corrupted_graphs(name):
    model = Outer(Inner(np.ones((10, 4))), np.zeros(4))
    graph = trace_fresh(model, np.zeros((3, 10), np.float32))
    corrupted = _corruptions()[name](graph)
    with pytest.raises(ir.GraphCheckError):
        ir.check_graph(corrupted)


# -- sources and model frames ---------------------------------------------------------------------


def test_equation_sources_point_at_the_users_line_and_model_frames():
    model = Outer(Inner(np.ones((3, 4))), np.zeros(4))
    graph = graph_of(model, np.zeros((2, 3), np.float32))
    by_prim = {}
    for eqn in graph.eqns:
        by_prim.setdefault(eqn.prim.name, eqn)
    matmul, tanh, mul = by_prim["matmul"], by_prim["tanh"], by_prim["mul"]
    for eqn in graph.eqns:
        assert eqn.source.file == HERE
    assert matmul.source.line == line_of("inner-matmul")
    assert tanh.source.line == line_of("inner-tanh")
    assert mul.source.line == line_of("outer-scale")
    assert by_prim["add"].source.line == line_of("outer-scale")

    inner, outer = matmul.source.frames
    assert (inner.model, inner.path, inner.file, inner.line) == \
        ("Inner", "inner", HERE, line_of("inner-matmul"))
    assert (outer.model, outer.path, outer.file, outer.line) == \
        ("Outer", "", HERE, line_of("outer-call"))
    assert [f.line for f in tanh.source.frames] == [line_of("inner-tanh"), line_of("outer-call")]
    (only,) = mul.source.frames
    assert (only.model, only.path, only.line) == ("Outer", "", line_of("outer-scale"))


def test_builtin_layer_frames_point_at_the_layer_source():
    model = TLP(Affine(10, 20), Affine(20, 15))
    graph = graph_of(model, np.zeros((5, 10), np.float32))
    matmuls = [e for e in graph.eqns if e.prim.name == "matmul"]
    assert len(matmuls) == 2
    for eqn, path, outer_line in zip(matmuls, ["first", "second"],
                                     [line_of("tlp-l1"), line_of("tlp-l2")]):
        assert os.path.abspath(eqn.source.file) == AFFINE_FILE
        assert eqn.source.line == affine_line()
        affine, tlp = eqn.source.frames
        assert (affine.model, affine.path, affine.line) == ("Affine", path, affine_line())
        assert os.path.abspath(affine.file) == AFFINE_FILE
        assert (tlp.model, tlp.path, tlp.file, tlp.line) == ("TLP", "", HERE, outer_line)
    logistic = next(e for e in graph.eqns if e.prim.name == "logistic")
    assert (logistic.source.file, logistic.source.line) == (HERE, line_of("tlp-l1"))
    assert [f.model for f in logistic.source.frames] == ["TLP"]


def test_chain_paths_in_frames():
    model = Chain(Affine(4, 4), σ, Chain(Affine(4, 2)))
    graph = graph_of(model, np.zeros((1, 4), np.float32))
    matmuls = [e for e in graph.eqns if e.prim.name == "matmul"]
    assert [f.path for f in matmuls[0].source.frames] == ["layers.0", ""]
    assert [f.path for f in matmuls[1].source.frames] == ["layers.2.layers.0", "layers.2", ""]
    assert [f.model for f in matmuls[1].source.frames] == ["Affine", "Chain", "Chain"]
    assert graph.param_names == ["layers.0.W", "layers.0.b", "layers.2.layers.0.W",
                                 "layers.2.layers.0.b"]


def test_function_model_frames_and_lines():
    @net
    def double_tanh(x):
        return np.tanh(x) * 2  # fn-line

    graph = graph_of(double_tanh, np.zeros(3))
    for eqn in graph.eqns:
        assert (eqn.source.file, eqn.source.line) == (HERE, line_of("fn-line"))
        assert [(f.model, f.path, f.line) for f in eqn.source.frames] == \
            [("double_tanh", "", line_of("fn-line"))]


# -- NumPy inside models --------------------------------------------------------------------------

W34 = RNG.standard_normal((4, 3)).astype(np.float32)

# name: (f(x, W), primitive the graph must contain)
NUMPY_CASES = {
    "np.exp": (lambda x, W: np.exp(x), "exp"),
    "np.tanh": (lambda x, W: np.tanh(x), "tanh"),
    "np.log": (lambda x, W: np.log(np.abs(x) + 1), "log"),
    "np.sqrt": (lambda x, W: np.sqrt(x * x), "sqrt"),
    "np.sum": (lambda x, W: np.sum(x), "reduce_sum"),
    "np.sum axis keepdims": (lambda x, W: np.sum(x, axis=1, keepdims=True), "reduce_sum"),
    "np.sum axis": (lambda x, W: np.sum(x, axis=0), "reduce_sum"),
    "np.mean": (lambda x, W: np.mean(x), "reduce_sum"),
    "np.mean axis keepdims": (lambda x, W: np.mean(x, axis=-1, keepdims=True), "reduce_sum"),
    "np.max": (lambda x, W: np.max(x, axis=1), "reduce_max"),
    "np.dot": (lambda x, W: np.dot(x, W), "matmul"),
    "np.dot vector": (lambda x, W: np.dot(x[0], W), "matmul"),
    "np.matmul": (lambda x, W: np.matmul(x, W), "matmul"),
    "@": (lambda x, W: x @ W, "matmul"),
    "np.maximum": (lambda x, W: np.maximum(x, 0), "max"),
    "np.minimum": (lambda x, W: np.minimum(x, x * 0.5), "min"),
    "np.concatenate": (lambda x, W: np.concatenate([x, x * 2], axis=1), "concatenate"),
    "np.concatenate axis 0": (lambda x, W: np.concatenate((x, W.T)), "concatenate"),
    "np.reshape": (lambda x, W: np.reshape(x, (-1,)), "reshape"),
    "np.reshape 2d": (lambda x, W: np.reshape(x, (4, 2)), "reshape"),
    "np.transpose": (lambda x, W: np.transpose(x), "transpose"),
    "np.where": (lambda x, W: np.where(x > 0, x, 0.1 * x), "where"),
    "np.where scalar": (lambda x, W: np.where(x > 0, 1.0, -1.0) * x, "where"),
    "np.stack": (lambda x, W: np.stack([x, -x], axis=1), "concatenate"),
    "np.clip": (lambda x, W: np.clip(x, -0.5, 0.5), "where"),
    "np.square": (lambda x, W: np.square(x), "mul"),
    "np.abs": (lambda x, W: np.abs(x), "abs"),
    "np.expand_dims": (lambda x, W: np.expand_dims(x, 0) + 1, "reshape"),
    ".T and .sum": (lambda x, W: x.T.sum(axis=0), "transpose"),
    "indexing": (lambda x, W: x[:, 1:3] + x[0, :2], "getitem"),
}


@pytest.mark.parametrize("name", list(NUMPY_CASES))
def test_numpy_function_inside_a_model_traces_and_matches_numpy(name):
    f, prim = NUMPY_CASES[name]
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    expected = f(x, W34)
    model = net(lambda x, W: f(x, W))
    got = model(x, W34)
    assert isinstance(got, np.ndarray)
    assert got.shape == np.shape(expected) and got.dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert prim in [e.prim.name for e in graph_of(model, x, W34).eqns]


@pytest.mark.parametrize("name", list(NUMPY_CASES))
def test_numpy_function_applied_to_params_inside_a_net_class(name):
    f, prim = NUMPY_CASES[name]

    @net
    class Holder:
        P: Param
        W: Param

        def __call__(self, x):
            return f(self.P, self.W)       # NumPy called on the Params themselves

    P = RNG.standard_normal((2, 4)).astype(np.float32)
    model = Holder(P, W34)
    expected = f(P, W34)
    got = model(np.zeros(1))
    assert got.shape == np.shape(expected) and got.dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    graph = graph_of(model, np.zeros(1))
    assert "P" in graph.param_names
    assert prim in [e.prim.name for e in graph.eqns]


# -- dtype promotion ------------------------------------------------------------------------------

PROMOTION = {
    "float32 * python float": (lambda x: x * 2.5, [np.float32]),
    "float32 + python int": (lambda x: x + 1, [np.float32]),
    "python float / float32": (lambda x: 1.5 / x, [np.float32]),
    "float32 ** 2": (lambda x: x ** 2, [np.float32]),
    "maximum(float32, 0)": (lambda x: np.maximum(x, 0), [np.float32]),
    "where(float32, scalar)": (lambda x: np.where(x > 0, x, 0.0), [np.float32]),
    "int32 * python float": (lambda x: x * 2.5, [np.int32]),
    "int8 + python int": (lambda x: x + 1, [np.int8]),
    "bool + python int": (lambda x: x + 1, [np.bool_]),
    "int64 / python int": (lambda x: x / 2, [np.int64]),
    "exp(int32)": (lambda x: np.exp(x), [np.int32]),
    "mean(int32)": (lambda x: np.mean(x), [np.int32]),
    "sum(int32)": (lambda x: np.sum(x), [np.int32]),
    "float32 + float64 scalar": (lambda x: x + np.float64(1), [np.float32], np.float64),
    "float32 + float64": (lambda x, y: x + y, [np.float32, np.float64]),
    "float16 * float32": (lambda x, y: x * y, [np.float16, np.float32]),
    "int32 + float32": (lambda x, y: x + y, [np.int32, np.float32]),
    "uint8 + int8": (lambda x, y: x + y, [np.uint8, np.int8]),
    "float32 @ float64": (lambda x, y: x @ y.T, [np.float32, np.float64]),
}


@pytest.mark.parametrize("name", list(PROMOTION))
def test_dtype_promotion_follows_numpy_2(name):
    """flux promotes as NumPy 2 does (NEP 50) on every NumPy version; where NumPy 1.x differs
    (a NumPy float64 scalar is strongly typed in NumPy 2), the case states NumPy 2's dtype."""
    f, dtypes, *numpy2_dtype = PROMOTION[name]
    xs = [(np.arange(6).reshape(2, 3) % 3 + 1).astype(d) for d in dtypes]
    expected = f(*xs)
    got = net(f)(*xs)
    wanted = np.dtype(numpy2_dtype[0]) if numpy2_dtype else np.asarray(expected).dtype
    assert got.dtype == wanted
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_affine_keeps_float32_for_python_scalars_in_the_forward():
    @net
    class Leaky:
        W: Param

        def __call__(self, x):
            h = x @ self.W * 0.5 + 1
            return np.where(h > 0, h, 0.01 * h)

    m = Leaky(np.ones((3, 2)))
    assert m(np.ones(3)).dtype == np.float32
    assert all(e.outputs[0].aval.dtype != np.float64
               for e in graph_of(m, np.ones(3, np.float32)).eqns)


# -- the trace cache ------------------------------------------------------------------------------


def test_retrace_after_a_sub_model_field_is_reassigned():
    model = TLP(Affine(10, 20), Affine(20, 15))
    x = RNG.random((2, 10)).astype(np.float32)
    assert model(x).shape == (2, 15)
    new = Affine(20, 5)
    model.second = new
    y = model(x)
    assert y.shape == (2, 5)
    h = 1 / (1 + np.exp(-(x @ model.first.W.value + model.first.b.value)))
    z = h @ new.W.value + new.b.value
    np.testing.assert_allclose(y, np.exp(z) / np.exp(z).sum(-1, keepdims=True), rtol=1e-5)
    assert list(flux.params(model))[-2:] == ["second.W", "second.b"]
    assert flux.params(model)["second.W"] is new.W


def test_retrace_after_a_param_field_is_replaced():
    a = Affine(np.ones((2, 3)), np.zeros(3))
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(a(x), [3, 3, 3])
    a.W = param(np.full((2, 3), 2.0))
    np.testing.assert_allclose(a(x), [6, 6, 6])
    a.b = param(np.ones(3))
    np.testing.assert_allclose(a(x), [7, 7, 7])


def test_retrace_after_a_param_changes_shape():
    a = Affine(np.ones((2, 3)), np.zeros(3))
    assert a(np.ones(2)).shape == (3,)
    a.W.value = np.ones((4, 3))
    np.testing.assert_allclose(a(np.ones(4)), [4, 4, 4])
    assert graph_of(a, np.ones(4, np.float32)).param_vars[0].aval.shape == (4, 3)
    a.W.value = np.ones((4, 5))
    a.b.value = np.zeros(5)
    np.testing.assert_allclose(a(np.ones((2, 4))), np.full((2, 5), 4.0))


def test_retrace_after_a_number_field_is_reassigned():
    @net
    class Scale:
        k: int

        def __call__(self, x):
            return x * self.k

    m = Scale(2)
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(m(x), [2, 4])
    m.k = 3
    np.testing.assert_allclose(m(x), [3, 6])


def test_compiled_model_sees_field_reassignment():
    model = Chain(Affine(3, 3))
    compiled = flux.compile(model, "numpy")
    x = np.ones((1, 3), np.float32)
    compiled(x)
    model.layers = (Affine(np.eye(3), np.full(3, 5.0)),)
    np.testing.assert_allclose(compiled(x), [[6, 6, 6]])


def test_each_input_signature_is_traced_once():
    calls = []

    @net
    def counted(x):
        calls.append(x.shape)              # a side effect: runs while tracing only
        return x * 2

    counted(np.ones(3))
    counted(np.ones(3))
    counted(np.zeros(3))
    assert calls == [(3,)]
    np.testing.assert_allclose(counted(np.ones((2, 3))), np.full((2, 3), 2.0))
    assert calls == [(3,), (2, 3)]


# -- round trips: the graph run by the backend == the forward written in NumPy --------------------


def _round_trip_cases():
    a, b = Affine(6, 4), Affine(4, 3)
    inner = Inner(RNG.standard_normal((6, 4)))
    return {
        "Affine": (a, lambda x: x @ a.W.value + a.b.value),
        "Chain": (Chain(a, σ, b, softmax),
                  lambda x: _np_softmax(_np_sigmoid(x @ a.W.value + a.b.value) @ b.W.value
                                        + b.b.value)),
        "TLP": (TLP(a, b),
                lambda x: _np_softmax(_np_sigmoid(x @ a.W.value + a.b.value) @ b.W.value
                                      + b.b.value)),
        "Outer": (Outer(inner, np.full(4, 0.5)),
                  lambda x: np.tanh(x @ inner.W.value) * 2 + np.float32(0.5)),
        "relu chain": (Chain(a, flux.relu, b, flux.logsoftmax),
                       lambda x: _np_logsoftmax(np.maximum(x @ a.W.value + a.b.value, 0)
                                                @ b.W.value + b.b.value)),
        "tanh, hcat": (net(lambda x: flux.hcat(np.tanh(x), x)),
                       lambda x: np.concatenate([np.tanh(x), x], axis=-1)),
        "exp, log, mean": (net(lambda x: flux.log(flux.mean(flux.exp(x), axis=-1))),
                           lambda x: np.log(np.mean(np.exp(x), axis=-1))),
    }


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_logsoftmax(x):
    z = x - x.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "single point"])
@pytest.mark.parametrize("name", list(_round_trip_cases()))
def test_round_trip(name, batch):
    model, oracle = _round_trip_cases()[name]
    x = RNG.random((5, 6) if batch else (6,)).astype(np.float32)
    expected = oracle(x)
    got = model(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)
    (interpreted,) = evaluate(graph_of(model, x), x)
    np.testing.assert_allclose(interpreted, got, rtol=1e-6, atol=1e-7)


def test_round_trip_with_tuples_in_and_out():
    pair = net(lambda xs: tuple(map(lambda v: np.tanh(v) * v, xs)))
    x1, x2 = RNG.standard_normal(3), RNG.standard_normal((2, 2))
    graph = graph_of(pair, (x1, x2))
    assert len(graph.inputs) == 2 and len(graph.outputs) == 2
    out = pair((x1, x2))
    for got, interpreted, x in zip(out, evaluate(graph, x1, x2), (x1, x2)):
        np.testing.assert_allclose(got, np.tanh(x) * x, rtol=1e-12)
        np.testing.assert_allclose(interpreted, got, rtol=1e-12)
