"""Optimisers (`SGD`, `Momentum`, `ADAM`) against their update formulas written out in NumPy."""
import numpy as np
import pytest

import flux
from flux import Affine


def f32(*shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def value(p):
    return np.array(p.value, dtype=np.float64)


# -- the formulas -----------------------------------------------------------------------------


def sgd(p, grads, lr):
    for g in grads:
        p = p - lr * g
    return p


def momentum(p, grads, lr, rho):
    """v ← ρ v + η ∇p, p ← p − v."""
    v = np.zeros_like(p)
    for g in grads:
        v = rho * v + lr * g
        p = p - v
    return p


def adam(p, grads, lr, beta1, beta2, eps):
    """Kingma & Ba, Algorithm 1: m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ), p ← p − η m̂/(√v̂ + ε)."""
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m̂, v̂ = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m̂ / (np.sqrt(v̂) + eps)
    return p


def three_gradients(shape, seed, scale=1.0):
    return [f32(*shape, seed=seed + i, scale=scale).astype(np.float64) for i in range(3)]


def run_updates(opt, steps=3, scale=1.0):
    """Three `flux.update` steps on an Affine with gradients set by hand; returns
    (model, initial values, gradients) keyed by "W" and "b"."""
    a = Affine(f32(3, 2, seed=0), f32(2, seed=1))
    start = {"W": value(a.W), "b": value(a.b)}
    grads = {"W": three_gradients((3, 2), 10, scale)[:steps],
             "b": three_gradients((2,), 20, scale)[:steps]}
    for i in range(steps):
        a.W.grad = grads["W"][i]
        a.b.grad = grads["b"][i]
        flux.update(a, opt)
    return a, start, grads


# -- three steps against the formulas -----------------------------------------------------------


def test_sgd_three_steps():
    a, start, grads = run_updates(flux.SGD(0.1))
    np.testing.assert_allclose(a.W.value, sgd(start["W"], grads["W"], 0.1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.b.value, sgd(start["b"], grads["b"], 0.1), rtol=1e-5, atol=1e-6)


def test_momentum_three_steps():
    a, start, grads = run_updates(flux.Momentum(0.1, 0.9))
    for k in ("W", "b"):
        np.testing.assert_allclose(getattr(a, k).value, momentum(start[k], grads[k], 0.1, 0.9),
                                   rtol=1e-5, atol=1e-6)


def test_momentum_keyword_arguments():
    a, start, grads = run_updates(flux.Momentum(lr=0.05, rho=0.5))
    np.testing.assert_allclose(a.W.value, momentum(start["W"], grads["W"], 0.05, 0.5),
                               rtol=1e-5, atol=1e-6)


def test_adam_three_steps():
    a, start, grads = run_updates(flux.ADAM(0.01, 0.9, 0.999, 1e-8))
    for k in ("W", "b"):
        np.testing.assert_allclose(getattr(a, k).value,
                                   adam(start[k], grads[k], 0.01, 0.9, 0.999, 1e-8),
                                   rtol=1e-5, atol=1e-6)


def test_adam_keyword_arguments():
    opt = flux.ADAM(lr=0.1, beta1=0.5, beta2=0.9, eps=1e-8)
    a, start, grads = run_updates(opt)
    np.testing.assert_allclose(a.W.value, adam(start["W"], grads["W"], 0.1, 0.5, 0.9, 1e-8),
                               rtol=1e-5, atol=1e-6)


def test_adam_three_steps_with_small_gradients():
    # Gradients of size ~1e-6 make ε matter: p ← p − η m̂/(√v̂ + ε) with ε added to √v̂, as
    # the docstring and the paper's Algorithm 1 state.
    a, start, grads = run_updates(flux.ADAM(0.01, 0.9, 0.999, 1e-8), scale=1e-6)
    for k in ("W", "b"):
        expected = adam(start[k], grads[k], 0.01, 0.9, 0.999, 1e-8)
        np.testing.assert_allclose(getattr(a, k).value - start[k], expected - start[k],
                                   rtol=1e-3, atol=1e-6)


# -- state --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: flux.Momentum(0.1, 0.9),
                                  lambda: flux.ADAM(0.01, 0.9, 0.999, 1e-8)],
                         ids=["Momentum", "ADAM"])
def test_state_is_kept_per_param(make):
    formula = {"Momentum": lambda p, gs: momentum(p, gs, 0.1, 0.9),
               "ADAM": lambda p, gs: adam(p, gs, 0.01, 0.9, 0.999, 1e-8)}
    opt = make()
    rule = formula[type(opt).__name__]
    # two models, one optimiser; the second model's W gets no gradient at the second step
    a = Affine(f32(3, 2, seed=0), f32(2, seed=1))
    c = Affine(f32(3, 2, seed=2), f32(2, seed=3))
    start_a, start_c = value(a.W), value(c.W)
    ga, gc = three_gradients((3, 2), 10), three_gradients((3, 2), 20)
    for i in range(3):
        a.W.grad = ga[i]
        flux.update(a, opt)
        if i != 1:
            c.W.grad = gc[i]
            flux.update(c, opt)
    np.testing.assert_allclose(a.W.value, rule(start_a, ga), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.W.value, rule(start_c, [gc[0], gc[2]]), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.b.value, f32(2, seed=1))   # never had a gradient


def test_a_fresh_optimiser_starts_from_fresh_state():
    a1, start, grads = run_updates(flux.Momentum(0.1, 0.9), steps=1)
    a2, _, _ = run_updates(flux.Momentum(0.1, 0.9), steps=1)
    np.testing.assert_array_equal(a1.W.value, a2.W.value)
    np.testing.assert_allclose(a1.W.value, momentum(start["W"], grads["W"], 0.1, 0.9),
                               rtol=1e-5, atol=1e-6)


# -- through train --------------------------------------------------------------------------------


def linear_data(n_pairs=3, seed=1):
    r = np.random.default_rng(seed)
    return [(r.standard_normal((4, 3)).astype(np.float32),
             r.standard_normal((4, 2)).astype(np.float32)) for _ in range(n_pairs)]


def mse_grads(W, b, x, y):
    d = 2 * (x @ W + b - y) / y.size
    return x.T @ d, d.sum(0)


@pytest.mark.parametrize("name", ["SGD", "Momentum", "ADAM"])
def test_train_with_each_optimiser_matches_the_formula(name):
    opt = {"SGD": flux.SGD(0.1), "Momentum": flux.Momentum(0.1, 0.9),
           "ADAM": flux.ADAM(0.01, 0.9, 0.999, 1e-8)}[name]
    a = Affine(f32(3, 2, seed=0), f32(2, seed=1))
    W, b = value(a.W), value(a.b)
    state = {"W": {}, "b": {}}

    def step(p, g, s, t):
        if name == "SGD":
            return p - 0.1 * g
        if name == "Momentum":
            s["v"] = 0.9 * s.get("v", 0) + 0.1 * g
            return p - s["v"]
        s["m"] = 0.9 * s.get("m", 0) + 0.1 * g
        s["v"] = 0.999 * s.get("v", 0) + 0.001 * g ** 2
        m̂, v̂ = s["m"] / (1 - 0.9 ** t), s["v"] / (1 - 0.999 ** t)
        return p - 0.01 * m̂ / (np.sqrt(v̂) + 1e-8)

    data = linear_data()
    for t, (x, y) in enumerate(data, start=1):
        dW, db = mse_grads(W, b, x, y)
        W, b = step(W, dW, state["W"], t), step(b, db, state["b"], t)
    flux.train(a, data, opt=opt)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.b.value, b, rtol=1e-4, atol=1e-5)


def test_state_carries_over_between_train_calls():
    data = linear_data(n_pairs=4)
    a1 = Affine(f32(3, 2, seed=0), f32(2, seed=1))
    a2 = Affine(f32(3, 2, seed=0), f32(2, seed=1))
    opt1, opt2 = flux.Momentum(0.1, 0.9), flux.Momentum(0.1, 0.9)
    flux.train(a1, data, opt=opt1)
    flux.train(a2, data[:2], opt=opt2)
    flux.train(a2, data[2:], opt=opt2)
    np.testing.assert_allclose(a2.W.value, a1.W.value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a2.b.value, a1.b.value, rtol=1e-6, atol=1e-7)


def test_adam_converges_on_a_small_regression():
    r = np.random.default_rng(7)
    W_true = r.standard_normal((3, 2)).astype(np.float32)
    b_true = r.standard_normal(2).astype(np.float32)
    x = r.standard_normal((32, 3)).astype(np.float32)
    y = x @ W_true + b_true
    flux.seed(0)
    a = Affine(3, 2)
    history = flux.train(a, [(x[:16], y[:16]), (x[16:], y[16:])], opt=flux.ADAM(0.05),
                         epochs=300)
    assert history[-1] < 1e-4 < history[0]
    np.testing.assert_allclose(a.W.value, W_true, atol=1e-2)
    np.testing.assert_allclose(a.b.value, b_true, atol=1e-2)


def test_a_user_defined_optimiser_subclass_works_with_update_and_train():
    """`flux.Optimiser` is the extension point: `deltas` returns the steps and a commit."""
    class SignSGD(flux.Optimiser):
        def __init__(self, lr):
            self.lr = lr
            self.steps = 0

        def deltas(self, params, grads):
            def commit():
                self.steps += 1
            return [self.lr * np.sign(g) for g in grads], commit

    a = flux.Affine(np.ones((2, 1)), np.zeros(1))
    flux.back(a, np.array([1.0]), np.array([1.0, -2.0]))
    opt = SignSGD(0.5)
    flux.update(a, opt)
    np.testing.assert_array_equal(a.W.value, [[0.5], [1.5]])
    np.testing.assert_array_equal(a.b.value, [-0.5])
    flux.train(a, [(np.array([1.0, 1.0]), np.array([0.0]))], opt=opt)
    assert opt.steps == 2
    assert isinstance(flux.FluxValueError("x"), ValueError)
    assert isinstance(flux.FluxTypeError("x"), TypeError)
