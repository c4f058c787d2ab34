"""Models: Param, params, initn/seed, Affine, Chain, the @net forms, repr, and gradients of
whole models against finite differences."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, Param, net, param, softmax, σ
from helpers import fd_grad, np_sigmoid, np_softmax

RNG = np.random.default_rng(1234)




# -- Param ----------------------------------------------------------------------------------------


def test_param_value_shape_and_asarray():
    p = Param(np.arange(6.0).reshape(2, 3))
    assert p.shape == (2, 3)
    assert p.value.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(p), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(p.value, np.arange(6.0).reshape(2, 3))


def test_param_grad_is_zeros_until_gradients_arrive():
    W = RNG.standard_normal((4, 3))
    a = Affine(W, np.zeros(3))
    assert a.W.grad.shape == (4, 3)
    assert a.W.grad.dtype == a.W.value.dtype
    assert not a.W.grad.any() and not a.b.grad.any()
    x, delta = RNG.standard_normal((2, 4)), RNG.standard_normal((2, 3))
    flux.back(a, delta, x)
    np.testing.assert_allclose(a.W.grad, x.T @ delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.b.grad, delta.sum(axis=0), rtol=1e-5, atol=1e-6)


def test_param_makes_a_param_and_keeps_an_existing_one():
    p = param([1, 2, 3])
    assert isinstance(p, Param)
    assert p.value.dtype == np.float32
    np.testing.assert_array_equal(p.value, [1, 2, 3])
    assert param(p) is p


def test_assigning_param_value_is_seen_by_the_next_call():
    a = Affine(np.ones((2, 3)), np.zeros(3))
    x = np.array([1.0, 2.0])
    np.testing.assert_allclose(a(x), [3, 3, 3])
    a.W.value = np.full((2, 3), 2.0)
    np.testing.assert_allclose(a(x), [6, 6, 6])
    assert a.W.value.dtype == np.float32


def test_in_place_write_to_param_value_is_seen_by_the_next_call():
    a = Affine(np.ones((2, 3)), np.zeros(3))
    x = np.array([1.0, 2.0])
    a(x)                                   # compiled and cached
    a.W.value[0, 0] = 10
    a.b.value += 1
    np.testing.assert_allclose(a(x), np.array([1.0, 2.0]) @ a.W.value + a.b.value)
    np.testing.assert_allclose(a(x), [13, 4, 4])


def test_np_asarray_of_param_is_the_live_array():
    a = Affine(np.ones((2, 2)), np.zeros(2))
    np.asarray(a.b)[:] = 5                 # writing through asarray changes the parameter
    np.testing.assert_allclose(a(np.zeros(2)), [5, 5])


# -- params ---------------------------------------------------------------------------------------


def test_params_of_chain_are_keyed_by_attribute_path():
    m = Chain(Affine(5, 4), σ, Affine(4, 3), softmax)
    ps = flux.params(m)
    assert list(ps) == ["layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b"]
    assert ps["layers.0.W"] is m[0].W and ps["layers.2.b"] is m[2].b
    assert all(isinstance(p, Param) for p in ps.values())


def test_params_of_net_class_are_keyed_by_field_path():
    @net
    class TLP:
        first: object
        second: object

        def __call__(self, x):
            return softmax(self.second(σ(self.first(x))))

    m = TLP(Affine(10, 20), Affine(20, 15))
    ps = flux.params(m)
    assert list(ps) == ["first.W", "first.b", "second.W", "second.b"]
    assert ps["first.b"] is m.first.b
    assert ps["second.W"].shape == (20, 15)


def test_shared_param_is_listed_once():
    shared = param(RNG.standard_normal((3, 3)))
    m = Chain(Affine(shared, np.zeros(3)), Affine(shared, np.zeros(3)))
    ps = flux.params(m)
    assert list(ps) == ["layers.0.W", "layers.0.b", "layers.1.b"]
    assert ps["layers.0.W"] is shared


def test_params_of_a_parameterless_model_is_empty():
    assert flux.params(Chain(np.exp, np.sum)) == {}


# -- initn and seed -------------------------------------------------------------------------------


def test_initn_is_float32_standard_normal_over_100():
    flux.seed(0)
    w = flux.initn(200, 300)
    assert w.shape == (200, 300)
    assert w.dtype == np.float32
    assert abs(float(w.std()) - 0.01) < 0.0005
    assert abs(float(w.mean())) < 0.0005


def test_initn_of_one_size_gives_a_vector():
    assert flux.initn(7).shape == (7,)


def test_seed_makes_initialisation_reproducible():
    flux.seed(42)
    a1, w1 = Affine(5, 3), flux.initn(4)
    flux.seed(42)
    a2, w2 = Affine(5, 3), flux.initn(4)
    np.testing.assert_array_equal(a1.W.value, a2.W.value)
    np.testing.assert_array_equal(a1.b.value, a2.b.value)
    np.testing.assert_array_equal(w1, w2)
    flux.seed(43)
    assert not np.array_equal(Affine(5, 3).W.value, a1.W.value)


# -- Affine ---------------------------------------------------------------------------------------


def test_affine_from_sizes():
    a = Affine(5, 3)
    assert isinstance(a.W, Param) and isinstance(a.b, Param)
    assert a.W.shape == (5, 3) and a.b.shape == (3,)
    assert a.W.value.dtype == np.float32
    assert 0 < float(np.abs(a.W.value).max()) < 0.1     # initn: small values


def test_affine_from_sizes_with_init():
    calls = []

    def init(*shape):
        calls.append(shape)
        return np.full(shape, 0.5)

    a = Affine(5, 3, init=init)
    assert calls == [(5, 3), (3,)]
    np.testing.assert_array_equal(a.W.value, np.full((5, 3), 0.5))
    np.testing.assert_array_equal(a.b.value, np.full(3, 0.5))
    flux.seed(7)
    b = Affine(5, 3, init=flux.initn)
    assert b.W.shape == (5, 3) and b.W.value.dtype == np.float32


def test_affine_from_arrays_wraps_them_in_params():
    W, b = RNG.standard_normal((5, 3)), RNG.standard_normal(3)
    a = Affine(W, b)
    assert isinstance(a.W, Param) and isinstance(a.b, Param)
    np.testing.assert_allclose(np.asarray(a.W), W.astype(np.float32))
    np.testing.assert_allclose(np.asarray(a.b), b.astype(np.float32))
    a = Affine(np.ones((5, 3)), np.zeros(3))
    np.testing.assert_array_equal(a(np.ones(5)), [5, 5, 5])


def test_affine_single_point_and_batch_against_numpy():
    a = Affine(5, 3)
    W, b = a.W.value, a.b.value
    x = RNG.random(5).astype(np.float32)
    y = a(x)
    assert y.shape == (3,)
    np.testing.assert_allclose(y, x @ W + b, rtol=1e-5, atol=1e-7)
    X = RNG.random((8, 5)).astype(np.float32)
    Y = a(X)
    assert Y.shape == (8, 3)
    np.testing.assert_allclose(Y, X @ W + b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(Y[2], a(X[2]), rtol=1e-6)


def test_affine_output_is_float32_for_float64_input():
    a = Affine(5, 3)
    assert a(np.ones(5)).dtype == np.float32
    assert a(np.ones((2, 5))).dtype == np.float32


def test_affine_accepts_nested_lists():
    a = Affine(np.ones((2, 3)), np.zeros(3))
    np.testing.assert_allclose(a([1, 2]), [3, 3, 3])
    np.testing.assert_allclose(a([[1, 2], [0, 1]]), [[3, 3, 3], [1, 1, 1]])


def test_softmax_of_affine_single_point():
    a = Affine(5, 3)
    x = RNG.random(5)
    y = softmax(a(x))
    assert y.shape == (3,)
    np.testing.assert_allclose(y, np_softmax(x.astype(np.float32) @ a.W.value + a.b.value),
                               rtol=1e-5)
    assert abs(float(y.sum()) - 1) < 1e-5


# -- Chain ----------------------------------------------------------------------------------------


def test_chain_indexing_slicing_len_and_iteration():
    a1, a2 = Affine(5, 5), Affine(5, 5)
    m = Chain(a1, σ, a2, softmax)
    assert m[0] is a1 and m[1] is σ and m[-1] is softmax
    assert len(m) == 4
    assert list(m) == [a1, σ, a2, softmax]
    tail = m[1:]
    assert isinstance(tail, Chain)
    assert list(tail) == [σ, a2, softmax]
    assert isinstance(m[:0], Chain) and len(m[:0]) == 0


def test_chain_calls_in_sequence_against_numpy():
    a1, a2 = Affine(5, 4), Affine(4, 3)
    m = Chain(a1, σ, a2, softmax)
    X = RNG.random((6, 5)).astype(np.float32)
    h = np_sigmoid(X @ a1.W.value + a1.b.value)
    expected = np_softmax(h @ a2.W.value + a2.b.value)
    np.testing.assert_allclose(m(X), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m(X[0]), expected[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m[2:](m[:2](X)), expected, rtol=1e-5, atol=1e-7)


def test_chain_of_plain_functions():
    foo = Chain(np.exp, np.sum, np.log)
    y = foo(np.array([1.0, 2, 3]))
    assert isinstance(y, np.ndarray) and y.shape == ()
    np.testing.assert_allclose(y, np.log(np.sum(np.exp([1.0, 2, 3]))))
    assert round(float(y), 3) == 3.408


def test_chain_of_flux_functions_on_a_list():
    foo = Chain(flux.exp, flux.sum, flux.log)
    y = foo([1, 2, 3])
    assert isinstance(y, np.ndarray) and y.shape == ()
    assert round(float(y), 3) == 3.408


def test_chain_of_lambdas_and_models():
    a = Affine(3, 3)
    m = Chain(lambda x: 2 * x, a, np.tanh)
    x = RNG.random(3).astype(np.float32)
    np.testing.assert_allclose(m(x), np.tanh(2 * x @ a.W.value + a.b.value), rtol=1e-5)


def test_nested_chains():
    inner = Chain(Affine(4, 4), np.tanh)
    outer = Chain(inner, Affine(4, 2))
    assert list(flux.params(outer)) == ["layers.0.layers.0.W", "layers.0.layers.0.b",
                                        "layers.1.W", "layers.1.b"]
    x = RNG.random((3, 4)).astype(np.float32)
    np.testing.assert_allclose(outer(x), outer[1](inner(x)), rtol=1e-6)


# -- @net -----------------------------------------------------------------------------------------


@net
class MyAffine:
    W: Param
    b: Param

    def __call__(self, x):
        return x @ self.W + self.b


def test_net_class_fieldwise_constructor_makes_params():
    W, b = RNG.standard_normal((5, 3)), RNG.standard_normal(3)
    m = MyAffine(W, b)
    assert isinstance(m.W, Param) and isinstance(m.b, Param)
    assert m.W.value.dtype == np.float32
    x = RNG.random((4, 5)).astype(np.float32)
    np.testing.assert_allclose(m(x), x @ W.astype(np.float32) + b.astype(np.float32), rtol=1e-5)
    assert m(x[0]).shape == (3,)


def test_net_class_keyword_fields():
    W, b = np.ones((2, 3)), np.zeros(3)
    m = MyAffine(b=b, W=W)
    np.testing.assert_array_equal(m.W.value, W)
    np.testing.assert_array_equal(m.b.value, b)
    m2 = MyAffine(W, b=b)
    np.testing.assert_array_equal(m2(np.ones(2)), [2, 2, 2])


def test_net_class_keeps_non_array_fields_as_given():
    @net
    class Scaled:
        W: Param
        n: int
        act: object
        sub: object

        def __call__(self, x):
            return self.sub(self.act(x @ self.W) * self.n)

    sub = Affine(2, 2)
    m = Scaled(np.ones((2, 2)), 3, np.tanh, sub)
    assert isinstance(m.W, Param)
    assert m.n == 3 and type(m.n) is int
    assert m.act is np.tanh
    assert m.sub is sub
    x = RNG.random(2).astype(np.float32)
    expected = (np.tanh(x @ np.ones((2, 2))) * 3) @ sub.W.value + sub.b.value
    np.testing.assert_allclose(m(x), expected, rtol=1e-5)
    assert list(flux.params(m)) == ["W", "sub.W", "sub.b"]


def test_net_class_field_defaults():
    @net
    class Shift:
        b: Param
        scale: float = 2.0

        def __call__(self, x):
            return x * self.scale + self.b

    m = Shift(np.ones(2))
    assert m.scale == 2.0
    np.testing.assert_allclose(m(np.array([1.0, 2.0])), [3, 5])


def _fieldwise_misuse():
    ones = np.ones((2, 2))
    return {
        "missing field": (lambda: MyAffine(ones), ["b"]),
        "extra positional": (lambda: MyAffine(ones, ones, ones), ["2", "3"]),
        "unknown keyword": (lambda: MyAffine(ones, ones, c=ones), ["'c'", "W", "b"]),
        "field given twice": (lambda: MyAffine(ones, ones, W=ones), ["'W'"]),
    }


@pytest.mark.parametrize("case", list(_fieldwise_misuse()))
def test_net_class_constructor_misuse_is_a_type_error(case):
    make, words = _fieldwise_misuse()[case]
    with pytest.raises(flux.FluxError) as info:
        make()
    assert isinstance(info.value, TypeError), "wrong constructor arguments are a TypeError"
    message = str(info.value)
    assert "MyAffine" in message
    for word in words:
        assert word in message


def test_net_class_with_its_own_init():
    @net
    class Dense:
        W: Param
        b: Param

        def __init__(self, n_in, n_out):
            self.W = param(np.ones((n_in, n_out)))
            self.b = param(np.zeros(n_out))

        def __call__(self, x):
            return np.tanh(x @ self.W + self.b)

    m = Dense(3, 2)
    assert list(flux.params(m)) == ["W", "b"]
    x = RNG.random((4, 3)).astype(np.float32)
    np.testing.assert_allclose(m(x), np.tanh(x @ np.ones((3, 2))), rtol=1e-5)


def test_net_function_form():
    @net
    def square(x):
        return x * x

    x = RNG.standard_normal((3, 4))
    np.testing.assert_allclose(square(x), x * x)
    np.testing.assert_allclose(square(x[0]), x[0] * x[0])
    assert square(x).dtype == x.dtype
    assert flux.params(square) == {}


def test_net_anonymous_form_with_several_inputs():
    logistic = net(lambda W, b, x: softmax(x @ W + b))
    W, b = RNG.standard_normal((5, 3)), RNG.standard_normal(3)
    x = RNG.random(5)
    np.testing.assert_allclose(logistic(W, b, x), np_softmax(x @ W + b), rtol=1e-10)
    X = RNG.random((4, 5))
    np.testing.assert_allclose(logistic(W, b, X), np_softmax(X @ W + b), rtol=1e-10)


def test_net_tuples_in_and_out_with_closures_and_map():
    pair = net(lambda xs: tuple(map(lambda x: x * x, xs)))
    x1, x2 = RNG.standard_normal(3), RNG.standard_normal((2, 2))
    out = pair((x1, x2))
    assert isinstance(out, tuple) and len(out) == 2
    np.testing.assert_allclose(out[0], x1 * x1)
    np.testing.assert_allclose(out[1], x2 * x2)


def test_net_closure_over_a_param_and_a_constant():
    w = param(np.array([1.0, 2.0, 3.0]))
    shift = np.array([0.5, 0.5, 0.5])
    scale = net(lambda x: x * w + shift)
    np.testing.assert_allclose(scale(np.ones(3)), [1.5, 2.5, 3.5])
    w.value = np.array([2.0, 2.0, 2.0])
    np.testing.assert_allclose(scale(np.ones(3)), [2.5, 2.5, 2.5])


def test_net_model_returning_several_outputs_as_a_list_and_dict():
    @net
    def parts(x):
        return {"double": 2 * x, "halves": [x / 2, x / 4]}

    x = np.array([4.0, 8.0])
    out = parts(x)
    np.testing.assert_allclose(out["double"], [8, 16])
    np.testing.assert_allclose(out["halves"][0], [2, 4])
    np.testing.assert_allclose(out["halves"][1], [1, 2])


def test_net_model_with_one_number_out_returns_0d_array():
    total = net(lambda x: np.sum(x * x))
    y = total(np.array([1.0, 2.0]))
    assert isinstance(y, np.ndarray) and y.shape == ()
    assert float(y) == 5.0


def test_sub_model_reuse_uses_one_output_twice():
    @net
    class Residual:
        layer: object

        def __call__(self, x):
            h = self.layer(x)
            return h + self.layer(h)

    a = Affine(3, 3)
    m = Residual(a)
    x = RNG.random(3).astype(np.float32)
    h = x @ a.W.value + a.b.value
    np.testing.assert_allclose(m(x), h + (h @ a.W.value + a.b.value), rtol=1e-5)


# -- repr -----------------------------------------------------------------------------------------


def test_repr_of_affine_and_chain_reads_like_the_constructor():
    assert repr(Affine(10, 20)) == "Affine(10, 20)"
    assert repr(Chain(Affine(5, 5), σ, Affine(5, 5), softmax)) == \
        "Chain(Affine(5, 5), σ, Affine(5, 5), softmax)"
    assert repr(Chain(Affine(5, 5), flux.relu)[1:]) == "Chain(relu)"


def test_repr_of_chain_of_numpy_functions_names_them():
    assert repr(Chain(np.exp, np.sum, np.log)) == "Chain(exp, sum, log)"
    assert repr(Chain(np.tanh, np.mean)) == "Chain(tanh, mean)"


def test_repr_of_net_class_with_sub_models():
    @net
    class TLP:
        first: object
        second: object

        def __call__(self, x):
            return softmax(self.second(σ(self.first(x))))

    assert repr(TLP(Affine(10, 20), Affine(20, 15))) == "TLP(Affine(10, 20), Affine(20, 15))"
    assert repr(Chain(TLP(Affine(1, 2), Affine(2, 3)), flux.relu)) == \
        "Chain(TLP(Affine(1, 2), Affine(2, 3)), relu)"


def test_repr_of_net_function():
    @net
    def square(x):
        return x * x

    assert "square" in repr(square)


# -- gradients of whole models against finite differences ----------------------------------------


def test_tlp_gradients_match_finite_differences():
    @net
    class TLP:
        first: object
        second: object

        def __call__(self, x):
            l1 = σ(self.first(x))
            l2 = softmax(self.second(l1))
            return l2

    f64 = lambda *shape: RNG.standard_normal(shape)  # noqa: E731
    first = Affine(param(f64(4, 5), np.float64), param(f64(5), np.float64))
    second = Affine(param(f64(5, 3), np.float64), param(f64(3), np.float64))
    m = TLP(first, second)
    x = RNG.standard_normal((2, 4))
    delta = RNG.standard_normal((2, 3))

    def objective():
        h = np_sigmoid(x @ first.W.value + first.b.value)
        return float(np.sum(np_softmax(h @ second.W.value + second.b.value) * delta))

    (gx,) = flux.back(m, delta, x)
    np.testing.assert_allclose(gx, fd_grad(objective, x), rtol=1e-5, atol=1e-8)
    for path, p in flux.params(m).items():
        np.testing.assert_allclose(p.grad, fd_grad(objective, p.value), rtol=1e-5,
                                   atol=1e-8, err_msg=path)


def test_shared_param_gradients_are_summed():
    W = param(RNG.standard_normal((3, 3)), np.float64)
    b1, b2 = param(np.zeros(3), np.float64), param(np.zeros(3), np.float64)
    m = Chain(Affine(W, b1), np.tanh, Affine(W, b2))
    x = RNG.standard_normal((2, 3))
    delta = RNG.standard_normal((2, 3))

    def objective():
        return float(np.sum((np.tanh(x @ W.value + b1.value) @ W.value + b2.value) * delta))

    flux.back(m, delta, x)
    np.testing.assert_allclose(W.grad, fd_grad(objective, W.value), rtol=1e-5, atol=1e-8)
