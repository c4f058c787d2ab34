"""The seed's "Model Building Basics" and "Model Templates" examples, written in Python with the
row-vector convention (``x @ W + b``, W is ``(in, out)``)."""
import numpy as np

import flux
from flux import Affine, Chain, Param, net, param, softmax, σ
from helpers import np_sigmoid, np_softmax

RNG = np.random.default_rng(2017)




# -- Model Building Basics: The Model -----------------------------------------------------------


def test_plain_function_affine_and_softmax():
    W = RNG.standard_normal((5, 3))
    b = RNG.standard_normal(3)

    def affine(x):
        return x @ W + b

    x1 = RNG.random(5)
    y1 = softmax(affine(x1))
    assert y1.shape == (3,)
    np.testing.assert_allclose(y1, np_softmax(x1 @ W + b), rtol=1e-12)
    assert abs(y1.sum() - 1) < 1e-12 and (y1 > 0).all()


def test_two_affine_layers_have_their_own_parameters():
    affine1 = Affine(5, 5)
    affine2 = Affine(5, 5)
    assert affine1.W is not affine2.W and affine1.b is not affine2.b
    x1 = RNG.random(5)
    y1, y2 = softmax(affine1(x1)), softmax(affine2(x1))
    assert y1.shape == y2.shape == (5,)
    assert not np.allclose(y1, y2)
    np.testing.assert_allclose(y1, np_softmax(x1.astype(np.float32) @ affine1.W.value
                                              + affine1.b.value), rtol=1e-5)


# -- Combining Models -----------------------------------------------------------------------------


def test_chain_is_exactly_the_nested_calls():
    affine1, affine2 = Affine(5, 5), Affine(5, 5)

    def mymodel1(x):
        return softmax(affine2(σ(affine1(x))))

    mymodel2 = Chain(affine1, σ, affine2, softmax)
    x1, x2 = RNG.random(5), RNG.random(5)
    for x in (x1, x2, RNG.random((3, 5))):
        np.testing.assert_allclose(mymodel2(x), mymodel1(x), rtol=1e-6, atol=1e-7)
    h = np_sigmoid(x1.astype(np.float32) @ affine1.W.value + affine1.b.value)
    np.testing.assert_allclose(mymodel2(x1), np_softmax(h @ affine2.W.value + affine2.b.value),
                               rtol=1e-5)


def test_mymodel3_builds_its_own_layers():
    mymodel3 = Chain(
        Affine(5, 5), σ,
        Affine(5, 5), softmax)
    y = mymodel3(RNG.random(5))
    assert y.shape == (5,) and abs(float(y.sum()) - 1) < 1e-5
    assert len(flux.params(mymodel3)) == 4
    assert mymodel3(RNG.random((7, 5))).shape == (7, 5)


# -- A Function in Model's Clothing --------------------------------------------------------------


def test_chain_of_regular_functions():
    foo = Chain(np.exp, np.sum, np.log)
    y = foo(np.array([1, 2, 3]))
    assert isinstance(y, np.ndarray) and y.shape == ()
    assert round(float(y), 3) == 3.408
    np.testing.assert_allclose(y, np.log(np.sum(np.exp([1, 2, 3]))))
    assert round(float(Chain(flux.exp, flux.sum, flux.log)([1, 2, 3])), 3) == 3.408


def test_functions_and_models_mix_anywhere():
    a = Affine(3, 3)
    m = Chain(np.exp, a, np.tanh, np.sum)
    x = RNG.random(3).astype(np.float32)
    expected = np.sum(np.tanh(np.exp(x) @ a.W.value + a.b.value))
    np.testing.assert_allclose(m(x), expected, rtol=1e-5)


# -- Model Templates ------------------------------------------------------------------------------


def test_parameters_by_hand_in_a_chain():
    W1, b1 = RNG.standard_normal((4, 3)), RNG.standard_normal(3)
    W2, b2 = RNG.standard_normal((3, 2)), RNG.standard_normal(2)

    def affine_1(x):
        return x @ W1 + b1

    def affine_2(x):
        return x @ W2 + b2

    model = Chain(affine_1, affine_2)
    x = RNG.random(4)
    np.testing.assert_allclose(model(x), (x @ W1 + b1) @ W2 + b2, rtol=1e-12)


class PlainAffine:
    """The seed's `type MyAffine` before `@net`: a plain class that acts as a function."""

    def __init__(self, W, b):
        self.W = W
        self.b = b

    def __call__(self, x):
        return x @ self.W + self.b

    @classmethod
    def sized(cls, n_in, n_out):                  # the convenience constructor
        return cls(RNG.standard_normal((n_in, n_out)), RNG.standard_normal(n_out))


def test_plain_class_used_as_a_model_in_a_chain():
    l1, l2 = PlainAffine.sized(5, 5), PlainAffine.sized(5, 5)
    model = Chain(l1, l2)
    x1 = RNG.random(5)
    np.testing.assert_allclose(model(x1), (x1 @ l1.W + l1.b) @ l2.W + l2.b, rtol=1e-12)
    X = RNG.random((4, 5))
    np.testing.assert_allclose(model(X), (X @ l1.W + l1.b) @ l2.W + l2.b, rtol=1e-12)


@net
class MyAffine:
    W: Param
    b: Param

    def __call__(self, x):
        return x @ self.W + self.b


def test_net_my_affine_with_fields():
    W, b = RNG.standard_normal((5, 5)), RNG.standard_normal(5)
    layer = MyAffine(W, b)
    assert isinstance(layer.W, Param) and isinstance(layer.b, Param)
    assert list(flux.params(layer)) == ["W", "b"]
    model = Chain(layer, MyAffine(RNG.standard_normal((5, 5)), RNG.standard_normal(5)))
    x1 = RNG.random(5).astype(np.float32)
    second = model[1]
    expected = (x1 @ layer.W.value + layer.b.value) @ second.W.value + second.b.value
    np.testing.assert_allclose(model(x1), expected, rtol=1e-5)
    assert list(flux.params(model)) == ["layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"]


def test_net_my_affine_behaves_like_the_builtin_affine():
    W, b = RNG.standard_normal((5, 3)), RNG.standard_normal(3)
    X = RNG.random((4, 5))
    np.testing.assert_allclose(MyAffine(W, b)(X), Affine(W, b)(X), rtol=1e-6)


# -- Models in templates --------------------------------------------------------------------------


@net
class TLP:
    first: object
    second: object

    def __call__(self, x):
        l1 = σ(self.first(x))
        l2 = softmax(self.second(l1))
        return l2


def test_tlp():
    model = TLP(Affine(10, 20),
                Affine(20, 15))
    x1 = RNG.random(10)                  # the seed writes rand(20); the input width is 10
    y = model(x1)
    assert y.shape == (15,)
    assert abs(float(y.sum()) - 1) < 1e-5 and (y > 0).all()
    first, second = model.first, model.second
    h = np_sigmoid(x1.astype(np.float32) @ first.W.value + first.b.value)
    np.testing.assert_allclose(y, np_softmax(h @ second.W.value + second.b.value), rtol=1e-5)
    assert model(RNG.random((3, 10))).shape == (3, 15)


def test_tlp_is_equivalent_to_the_chain():
    first, second = Affine(10, 20), Affine(20, 15)
    tlp = TLP(first, second)
    chain = Chain(first, σ, second, softmax)
    X = RNG.random((6, 10))
    np.testing.assert_allclose(tlp(X), chain(X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(tlp(X[0]), chain(X[0]), rtol=1e-6, atol=1e-8)


def test_net_model_can_reuse_an_intermediate():
    @net
    class Skip:
        first: object
        second: object

        def __call__(self, x):
            l1 = σ(self.first(x))
            return softmax(self.second(l1) + l1)   # l1 used twice

    first, second = Affine(4, 4), Affine(4, 4)
    x = RNG.random(4).astype(np.float32)
    l1 = np_sigmoid(x @ first.W.value + first.b.value)
    expected = np_softmax(l1 @ second.W.value + second.b.value + l1)
    np.testing.assert_allclose(Skip(first, second)(x), expected, rtol=1e-5)


# -- Constructors ---------------------------------------------------------------------------------


def test_affine_with_parameters_of_our_choosing():
    W, b = RNG.random((10, 20)), RNG.random(20)
    a = Affine(W, b)
    assert a.W.shape == (10, 20) and a.b.shape == (20,)
    np.testing.assert_allclose(a.W.value, W.astype(np.float32))
    x = RNG.random(10)
    np.testing.assert_allclose(a(x), (x @ W + b).astype(np.float32), rtol=1e-5)


def test_affine_from_dimensions_uses_initn():
    flux.seed(1)
    a = Affine(10, 20)
    flux.seed(1)
    W, b = flux.initn(10, 20), flux.initn(20)
    np.testing.assert_array_equal(a.W.value, W)
    np.testing.assert_array_equal(a.b.value, b)


def test_affine_with_a_custom_init():
    a = Affine(10, 20, init=lambda *shape: np.ones(shape))
    np.testing.assert_array_equal(a.W.value, np.ones((10, 20)))
    np.testing.assert_array_equal(a.b.value, np.ones(20))
    np.testing.assert_allclose(a(np.ones(10)), np.full(20, 11.0))
    b = Affine(10, 20, init=flux.initn)
    assert b.W.value.dtype == np.float32 and float(np.abs(b.W.value).max()) < 0.1


def test_my_affine_with_a_convenience_constructor():
    @net
    class Dense:
        W: Param
        b: Param

        def __init__(self, n_in, n_out, *, init=flux.initn):
            self.W = param(init(n_in, n_out))
            self.b = param(init(n_out))

        def __call__(self, x):
            return x @ self.W + self.b

    d = Dense(10, 20)
    assert d.W.shape == (10, 20) and d.b.shape == (20,)
    assert d(np.ones((2, 10))).shape == (2, 20)
    assert list(flux.params(Chain(d, σ))) == ["layers.0.W", "layers.0.b"]
