"""Activations and array functions: on plain arrays (eagerly) and inside models, single points
and batches, each against the same computation written in NumPy."""
import warnings

import numpy as np
import pytest

import flux
from flux import Affine, Chain, net
from helpers import np_sigmoid, np_softmax, np_logsoftmax

RNG = np.random.default_rng(7)





# name: (flux function, NumPy oracle, input domain)
ELEMENTWISE = {
    "σ": (flux.σ, np_sigmoid, "real"),
    "sigmoid": (flux.sigmoid, np_sigmoid, "real"),
    "relu": (flux.relu, lambda x: np.maximum(x, 0), "real"),
    "tanh": (flux.tanh, np.tanh, "real"),
    "softmax": (flux.softmax, np_softmax, "real"),
    "logsoftmax": (flux.logsoftmax, np_logsoftmax, "real"),
    "exp": (flux.exp, np.exp, "real"),
    "log": (flux.log, np.log, "positive"),
}
SHAPES = {"single": (5,), "batch": (4, 5), "batch of sequences": (2, 3, 5)}


def sample(shape, domain, dtype=np.float64):
    x = RNG.standard_normal(shape) * 2
    if domain == "positive":
        x = np.abs(x) + 0.1
    return x.astype(dtype)


def close(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_function_on_plain_arrays(name, dtype, shape):
    f, oracle, domain = ELEMENTWISE[name]
    x = sample(shape, domain, dtype)
    y = f(x)
    assert isinstance(y, np.ndarray)
    assert y.shape == shape
    assert y.dtype == dtype
    np.testing.assert_allclose(y, oracle(x.astype(np.float64)), **close(dtype))


@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_function_inside_a_model(name, dtype, shape):
    f, oracle, domain = ELEMENTWISE[name]
    model = net(lambda x: f(x))
    x = sample(shape, domain, dtype)
    y = model(x)
    assert y.shape == shape
    assert y.dtype == dtype
    np.testing.assert_allclose(y, oracle(x.astype(np.float64)), **close(dtype))
    assert len(flux.compile(model).graph(x).eqns) > 0      # traced, not folded away


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_function_after_a_layer_in_a_chain(name):
    f, oracle, domain = ELEMENTWISE[name]
    a = Affine(5, 4)
    a.b.value = np.full(4, 1.0)                  # keep log's inputs positive
    m = Chain(a, np.abs if domain == "positive" else (lambda x: x), f)
    X = RNG.random((3, 5)).astype(np.float32)
    h = X @ a.W.value + a.b.value
    h = np.abs(h) if domain == "positive" else h
    np.testing.assert_allclose(m(X), oracle(h.astype(np.float64)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m(X[0]), oracle(h[0].astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_function_accepts_nested_lists_like_numpy(name):
    f, oracle, domain = ELEMENTWISE[name]
    data = [[0.5, 1.0, 2.0], [1.5, 0.25, 3.0]]
    np.testing.assert_allclose(f(data), oracle(np.array(data)), rtol=1e-12)


def test_sigmoid_is_sigma():
    assert flux.sigmoid is flux.σ
    np.testing.assert_allclose(flux.σ(np.array([0.0])), [0.5])


def test_sigmoid_saturates_without_overflow():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = flux.σ(x)
        y32 = net(lambda v: flux.σ(v))(x.astype(np.float32))
    np.testing.assert_allclose(y, [0, np_sigmoid(-50.0), 0.5, np_sigmoid(50.0), 1], atol=1e-15)
    np.testing.assert_allclose(y32, [0, 0, 0.5, 1, 1], atol=1e-7)


def test_relu_at_and_around_zero():
    np.testing.assert_array_equal(flux.relu(np.array([-2.0, -0.0, 0.0, 3.0])), [0, 0, 0, 3])


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "in model"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_and_logsoftmax_are_stable_for_large_inputs(eager, dtype):
    x = np.array([[1000.0, 0.0, -1000.0], [1000.0, 1000.0, 999.0], [-1000.0, -1001.0, -1000.0]],
                 dtype)
    softmax = flux.softmax if eager else net(lambda v: flux.softmax(v))
    logsoftmax = flux.logsoftmax if eager else net(lambda v: flux.logsoftmax(v))
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # no overflow, no invalid value
        p, lp = softmax(x), logsoftmax(x)
    assert np.isfinite(p).all() and np.isfinite(lp).all()
    tol = close(dtype)
    np.testing.assert_allclose(p, np_softmax(x.astype(np.float64)), **tol)
    np.testing.assert_allclose(lp, np_logsoftmax(x.astype(np.float64)), **tol)
    np.testing.assert_allclose(lp[0], [0, -1000, -2000], **tol)
    np.testing.assert_allclose(p.sum(axis=-1), 1, **tol)


def test_softmax_is_over_the_last_axis():
    x = RNG.standard_normal((2, 3, 4))
    p = flux.softmax(x)
    np.testing.assert_allclose(p.sum(axis=-1), np.ones((2, 3)))
    np.testing.assert_allclose(p[1, 2], np_softmax(x[1, 2]))


# -- flatten, hcat, vcat --------------------------------------------------------------------------


@pytest.mark.parametrize("shape,expected", [((4, 2, 3), (4, 6)), ((2, 3, 4, 5), (2, 60)),
                                            ((3, 4), (3, 4)), ((5,), (5, 1))])
def test_flatten_keeps_the_batch_axis(shape, expected):
    x = RNG.standard_normal(shape)
    np.testing.assert_array_equal(flux.flatten(x), x.reshape(expected))
    y = net(lambda v: flux.flatten(v))(x)
    assert y.shape == expected
    np.testing.assert_array_equal(y, x.reshape(expected))


def test_flatten_accepts_nested_lists():
    np.testing.assert_array_equal(flux.flatten([[[1, 2], [3, 4]]]), [[1, 2, 3, 4]])


def test_hcat_is_variadic_along_the_last_axis():
    a, b, c = RNG.standard_normal((2, 1)), RNG.standard_normal((2, 3)), RNG.standard_normal((2, 2))
    expected = np.concatenate([a, b, c], axis=-1)
    np.testing.assert_array_equal(flux.hcat(a, b, c), expected)
    np.testing.assert_array_equal(net(lambda x, y, z: flux.hcat(x, y, z))(a, b, c), expected)
    u, v = np.array([1.0, 2.0]), np.array([3.0])
    np.testing.assert_array_equal(flux.hcat(u, v), [1, 2, 3])
    np.testing.assert_array_equal(net(lambda x, y: flux.hcat(x, y))(u, v), [1, 2, 3])


def test_vcat_is_variadic_along_the_first_axis():
    a, b, c = RNG.standard_normal((1, 3)), RNG.standard_normal((2, 3)), RNG.standard_normal((4, 3))
    expected = np.concatenate([a, b, c], axis=0)
    np.testing.assert_array_equal(flux.vcat(a, b, c), expected)
    np.testing.assert_array_equal(net(lambda x, y, z: flux.vcat(x, y, z))(a, b, c), expected)


def test_hcat_of_a_layer_output_and_its_input_in_a_model():
    a = Affine(3, 2)
    m = net(lambda x: flux.hcat(a(x), x))
    X = RNG.random((4, 3)).astype(np.float32)
    expected = np.concatenate([X @ a.W.value + a.b.value, X], axis=-1)
    np.testing.assert_allclose(m(X), expected, rtol=1e-6)
    np.testing.assert_allclose(m(X[1]), expected[1], rtol=1e-6)


def test_hcat_promotes_dtypes_like_numpy():
    a, b = np.ones((2, 2), np.float32), np.ones((2, 1), np.float64)
    assert flux.hcat(a, b).dtype == np.concatenate([a, b], axis=-1).dtype
    assert net(lambda x, y: flux.hcat(x, y))(a, b).dtype == np.float64


# -- sum, mean, reshape, transpose: NumPy's signatures -------------------------------------------

X3 = RNG.standard_normal((2, 3, 4))

REDUCTIONS = [
    ("sum()", lambda m, x: m.sum(x)),
    ("sum(axis=1)", lambda m, x: m.sum(x, axis=1)),
    ("sum(1, keepdims)", lambda m, x: m.sum(x, 1, keepdims=True)),
    ("sum(axis=(0, 2))", lambda m, x: m.sum(x, axis=(0, 2))),
    ("sum(axis=-1)", lambda m, x: m.sum(x, axis=-1)),
    ("mean()", lambda m, x: m.mean(x)),
    ("mean(axis=0)", lambda m, x: m.mean(x, axis=0)),
    ("mean(-1, keepdims)", lambda m, x: m.mean(x, -1, keepdims=True)),
    ("mean(axis=(1, 2))", lambda m, x: m.mean(x, axis=(1, 2))),
    ("reshape((4, 6))", lambda m, x: m.reshape(x, (4, 6))),
    ("reshape((-1, 4))", lambda m, x: m.reshape(x, (-1, 4))),
    ("reshape(24)", lambda m, x: m.reshape(x, 24)),
    ("transpose()", lambda m, x: m.transpose(x)),
    ("transpose((1, 0, 2))", lambda m, x: m.transpose(x, (1, 0, 2))),
    ("transpose(axes=(2, 0, 1))", lambda m, x: m.transpose(x, axes=(2, 0, 1))),
]


@pytest.mark.parametrize("call", [c for _, c in REDUCTIONS], ids=[n for n, _ in REDUCTIONS])
def test_array_function_matches_numpy_eagerly_and_in_a_model(call):
    expected = call(np, X3)
    eager = call(flux, X3)
    assert np.shape(eager) == np.shape(expected)
    np.testing.assert_allclose(eager, expected, rtol=1e-12)
    traced = net(lambda x: call(flux, x))(X3)
    assert isinstance(traced, np.ndarray) and traced.shape == np.shape(expected)
    np.testing.assert_allclose(traced, expected, rtol=1e-12)
    traced32 = net(lambda x: call(flux, x))(X3.astype(np.float32))
    assert traced32.dtype == call(np, X3.astype(np.float32)).dtype
    np.testing.assert_allclose(traced32, expected, rtol=1e-5, atol=1e-6)


def test_sum_and_mean_of_integers_follow_numpy():
    ints = np.arange(6, dtype=np.int32).reshape(2, 3)
    for fn in ("sum", "mean"):
        expected = getattr(np, fn)(ints, axis=0)
        got = net(lambda x, fn=fn: getattr(flux, fn)(x, axis=0))(ints)
        assert got.dtype == expected.dtype, fn
        np.testing.assert_array_equal(got, expected)


def test_mean_over_a_batch_in_a_model_of_a_layer():
    a = Affine(5, 3)
    m = Chain(a, lambda h: flux.mean(h, axis=0))
    X = RNG.random((6, 5)).astype(np.float32)
    np.testing.assert_allclose(m(X), (X @ a.W.value + a.b.value).mean(axis=0), rtol=1e-5)
