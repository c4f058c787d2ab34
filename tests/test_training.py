"""Training: `back`, `update`, `train`, the losses and the training utilities (`onehot`,
`onecold`, `accuracy`, `throttle`), checked against hand-written NumPy."""
import io
import sys
import time

import numpy as np
import pytest

import flux
from flux import Affine, Chain
from helpers import np_softmax, np_logsoftmax

RTOL, ATOL = 1e-5, 1e-6


def rng(seed=0):
    return np.random.default_rng(seed)


def f32(*shape, seed=0):
    return rng(seed).standard_normal(shape).astype(np.float32)


def affine(n_in, n_out, seed=0):
    """An Affine with non-trivial weights (initn's are ~0.01, too small to see much)."""
    return Affine(f32(n_in, n_out, seed=seed), f32(n_out, seed=seed + 100))


def value(p):
    return np.array(p.value, dtype=np.float64)


# -- oracles ----------------------------------------------------------------------------------


def affine_back(W, b, x, Δ):
    """y = x W + b: (dx, dW, db) for output cotangent Δ (single points or batches)."""
    x2, Δ2 = np.atleast_2d(x), np.atleast_2d(Δ)
    dx = Δ @ W.T
    return dx, x2.T @ Δ2, Δ2.sum(axis=0)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def mse_affine_step(W, b, x, y):
    """Loss and (dW, db) of mse(x W + b, y)."""
    ŷ = x @ W + b
    loss = np.mean((ŷ - y) ** 2)
    _, dW, db = affine_back(W, b, x, 2 * (ŷ - y) / ŷ.size)
    return loss, dW, db


def sgd_affine(W, b, data, lr, epochs=1):
    """A hand-written SGD loop on mse for an affine model: final (W, b) and per-epoch means."""
    W, b = np.array(W, np.float64), np.array(b, np.float64)
    means = []
    for _ in range(epochs):
        losses = []
        for x, y in data:
            loss, dW, db = mse_affine_step(W, b, x, y)
            losses.append(loss)
            W, b = W - lr * dW, b - lr * db
        means.append(np.mean(losses))
    return W, b, means


def regression_data(n_pairs=3, batch=4, n_in=3, n_out=2, seed=1):
    r = rng(seed)
    return [(r.standard_normal((batch, n_in)).astype(np.float32),
             r.standard_normal((batch, n_out)).astype(np.float32)) for _ in range(n_pairs)]


# -- back -------------------------------------------------------------------------------------


def test_back_affine_batch_matches_numpy():
    a = affine(3, 2)
    W, b = value(a.W), value(a.b)
    x, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2)
    grads = flux.back(a, Δ, x)
    dx, dW, db = affine_back(W, b, x, Δ)
    assert isinstance(grads, tuple) and len(grads) == 1
    np.testing.assert_allclose(grads[0], dx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.W.grad, dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.grad, db, rtol=RTOL, atol=ATOL)


def test_back_affine_single_point_matches_numpy():
    a = affine(3, 2)
    x, Δ = f32(3, seed=1), f32(2, seed=2)
    (dx_got,) = flux.back(a, Δ, x)
    dx, dW, db = affine_back(value(a.W), value(a.b), x, Δ)
    assert dx_got.shape == (3,)
    np.testing.assert_allclose(dx_got, dx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.W.grad, dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.grad, db, rtol=RTOL, atol=ATOL)


def test_back_mlp_matches_numpy():
    m = Chain(affine(3, 4, seed=0), flux.σ, affine(4, 2, seed=1))
    W1, b1, W2, b2 = (value(p) for p in (m[0].W, m[0].b, m[2].W, m[2].b))
    x, Δ = f32(5, 3, seed=2), f32(5, 2, seed=3)
    h = sigmoid(x @ W1 + b1)                    # (5, 4)
    dh = Δ @ W2.T                               # (5, 4)
    dz = dh * h * (1 - h)
    (dx,) = flux.back(m, Δ, x)
    np.testing.assert_allclose(dx, dz @ W1.T, rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(m[2].W.grad, h.T @ Δ, rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(m[2].b.grad, Δ.sum(0), rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(m[0].W.grad, x.T @ dz, rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(m[0].b.grad, dz.sum(0), rtol=1e-4, atol=ATOL)


def test_back_accumulates_across_calls():
    a = affine(3, 2)
    x, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2)
    _, dW, db = affine_back(value(a.W), value(a.b), x, Δ)
    flux.back(a, Δ, x)
    flux.back(a, Δ, x)
    np.testing.assert_allclose(a.W.grad, 2 * dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.grad, 2 * db, rtol=RTOL, atol=ATOL)


def test_back_on_compiled_model_fills_the_original_params():
    a = affine(3, 2)
    c = flux.compile(a, "numpy")
    x, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2)
    dx, dW, db = affine_back(value(a.W), value(a.b), x, Δ)
    (dx_got,) = flux.back(c, Δ, x)
    np.testing.assert_allclose(dx_got, dx, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.W.grad, dW, rtol=RTOL, atol=ATOL)
    flux.back(a, Δ, x)                         # plain and compiled add into the same buffers
    np.testing.assert_allclose(a.W.grad, 2 * dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.grad, 2 * db, rtol=RTOL, atol=ATOL)


def test_back_returns_one_gradient_per_input():
    @flux.net
    class Gate:
        W: flux.Param

        def __call__(self, x, g):
            return (x @ self.W) * g

    W = f32(3, 2)
    m = Gate(W)
    x, g, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2), f32(4, 2, seed=3)
    grads = flux.back(m, Δ, x, g)
    assert isinstance(grads, tuple) and len(grads) == 2
    np.testing.assert_allclose(grads[0], (Δ * g) @ W.T, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads[1], Δ * (x @ W), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(m.W.grad, x.T @ (Δ * g), rtol=RTOL, atol=ATOL)


def test_back_sums_gradients_of_a_shared_param():
    a = affine(2, 2)
    m = Chain(a, a)                            # y = (x W + b) W + b
    W, b = value(a.W), value(a.b)
    x, Δ = f32(3, 2, seed=1), f32(3, 2, seed=2)
    h = x @ W + b
    dh = Δ @ W.T
    flux.back(m, Δ, x)
    np.testing.assert_allclose(a.W.grad, x.T @ dh + h.T @ Δ, rtol=1e-4, atol=ATOL)
    np.testing.assert_allclose(a.b.grad, dh.sum(0) + Δ.sum(0), rtol=1e-4, atol=ATOL)


# -- update -----------------------------------------------------------------------------------


def test_update_with_a_number_is_an_sgd_step_and_clears_gradients():
    a = affine(3, 2)
    W, b = value(a.W), value(a.b)
    x, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2)
    _, dW, db = affine_back(W, b, x, Δ)
    flux.back(a, Δ, x)
    flux.update(a, 0.5)
    np.testing.assert_allclose(a.W.value, W - 0.5 * dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.value, b - 0.5 * db, rtol=RTOL, atol=ATOL)
    assert not np.any(a.W.grad) and not np.any(a.b.grad)
    after = value(a.W), value(a.b)
    flux.update(a, 0.5)                         # nothing left to apply
    np.testing.assert_array_equal(a.W.value, after[0])
    np.testing.assert_array_equal(a.b.value, after[1])


def test_update_with_an_optimiser_object():
    a = affine(3, 2)
    W = value(a.W)
    g = f32(3, 2, seed=5)
    a.W.grad = g
    flux.update(a, flux.SGD(0.25))
    np.testing.assert_allclose(a.W.value, W - 0.25 * g, rtol=RTOL, atol=ATOL)


def test_update_leaves_params_without_gradients_untouched():
    m = Chain(affine(3, 2, seed=0), affine(2, 2, seed=1))
    before = {k: value(p) for k, p in flux.params(m).items()}
    g = f32(3, 2, seed=5)
    m[0].W.grad = g
    flux.update(m, 0.1)
    np.testing.assert_allclose(m[0].W.value, before["layers.0.W"] - 0.1 * g, rtol=RTOL, atol=ATOL)
    for key in ("layers.0.b", "layers.1.W", "layers.1.b"):
        np.testing.assert_array_equal(flux.params(m)[key].value, before[key])


def test_update_on_compiled_model_changes_the_original_params():
    a = affine(3, 2)
    c = flux.compile(a, "numpy")
    W, b = value(a.W), value(a.b)
    x, Δ = f32(4, 3, seed=1), f32(4, 2, seed=2)
    _, dW, db = affine_back(W, b, x, Δ)
    flux.back(c, Δ, x)
    flux.update(c, 0.1)
    np.testing.assert_allclose(a.W.value, W - 0.1 * dW, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(a.b.value, b - 0.1 * db, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c(x), x @ value(a.W) + value(a.b), rtol=RTOL, atol=ATOL)


def test_a_gradient_of_the_wrong_shape_is_refused_and_nothing_is_half_updated():
    m = Chain(affine(3, 2, seed=0), affine(2, 2, seed=1))
    before = {k: value(p) for k, p in flux.params(m).items()}
    g = f32(3, 2, seed=5)
    m[0].W.grad = g
    with pytest.raises(flux.FluxError) as info:
        m[1].W.grad = np.ones((3, 3))
    assert "(2, 2)" in str(info.value) and "(3, 3)" in str(info.value)
    assert not np.any(m[1].W.grad)
    flux.update(m, 0.1)
    np.testing.assert_allclose(m[0].W.value, before["layers.0.W"] - 0.1 * g, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(m[1].W.value, before["layers.1.W"])


def test_a_gradient_of_the_wrong_shape_is_a_value_error():
    p = flux.param(np.zeros((2, 2)))
    with pytest.raises(ValueError) as info:    # API: shape errors are also ValueErrors
        p.grad = np.ones((3, 3))
    assert isinstance(info.value, flux.FluxError)


@pytest.mark.parametrize("opt", [flux.Momentum(0.1, 0.9), flux.ADAM(0.1)], ids=repr)
def test_a_failing_update_changes_no_param(opt):
    # A Param that changes shape between steps no longer fits the optimiser's state for it:
    # the update either applies to every Param or to none.
    m = Chain(affine(3, 2, seed=0), affine(2, 2, seed=1))
    for p in flux.params(m).values():
        p.grad = np.ones(p.shape)
    flux.update(m, opt)
    m[1].W.value = np.zeros((2, 5))
    m[1].b.value = np.zeros(5)
    before = {k: value(p) for k, p in flux.params(m).items()}
    for p in flux.params(m).values():
        p.grad = np.ones(p.shape)
    try:
        flux.update(m, opt)
    except Exception:
        changed = [k for k, p in flux.params(m).items() if not np.array_equal(p.value, before[k])]
        assert changed == []
    else:
        unchanged = [k for k, p in flux.params(m).items() if np.array_equal(p.value, before[k])]
        assert unchanged == []


def test_update_refuses_something_that_is_not_an_optimiser():
    a = affine(3, 2)
    a.W.grad = np.ones((3, 2))
    W = value(a.W)
    with pytest.raises(TypeError) as info:
        flux.update(a, "fast")
    assert isinstance(info.value, flux.FluxError)   # API: every bad-input error is a FluxError
    np.testing.assert_array_equal(a.W.value, W)


# -- train ------------------------------------------------------------------------------------


def test_train_matches_a_numpy_sgd_loop():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.05)
    history = flux.train(a, data, loss=flux.mse, opt=flux.SGD(0.05))
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.b.value, b, rtol=1e-4, atol=1e-5)
    assert len(history) == 1
    np.testing.assert_allclose(history, means, rtol=1e-5)


def test_train_defaults_are_mse_sgd_01_one_epoch():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1)
    history = flux.train(a, data)
    assert len(history) == 1
    np.testing.assert_allclose(history, means, rtol=1e-5)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.b.value, b, rtol=1e-4, atol=1e-5)


def test_train_returns_the_loss_before_the_update():
    data = regression_data(n_pairs=1)
    (x, y), = data
    a = affine(3, 2)
    expected = np.mean((x @ value(a.W) + value(a.b) - y) ** 2)
    history = flux.train(a, data)
    np.testing.assert_allclose(history, [expected], rtol=1e-5)
    assert np.mean((x @ value(a.W) + value(a.b) - y) ** 2) < expected


def test_train_returns_one_mean_per_epoch():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1, epochs=3)
    history = flux.train(a, data, epochs=3)
    assert len(history) == 3
    np.testing.assert_allclose(history, means, rtol=1e-4)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)


def test_train_on_single_points():
    r = rng(3)
    data = [(r.standard_normal(3).astype(np.float32), r.standard_normal(2).astype(np.float32))
            for _ in range(4)]
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1)
    history = flux.train(a, data)
    np.testing.assert_allclose(history, means, rtol=1e-5)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.b.value, b, rtol=1e-4, atol=1e-5)


def test_train_makes_one_update_per_pair_in_order():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b = value(a.W), value(a.b)
    seen = []
    flux.train(a, data, cb=lambda: seen.append((value(a.W), value(a.b))))
    assert len(seen) == 3
    for (x, y), (W_got, b_got) in zip(data, seen):   # the callback sees each update at once
        _, dW, db = mse_affine_step(W, b, x, y)
        W, b = W - 0.1 * dW, b - 0.1 * db
        np.testing.assert_allclose(W_got, W, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b_got, b, rtol=1e-4, atol=1e-5)


def test_train_calls_every_callback_in_a_list_after_every_update():
    data = regression_data(n_pairs=4)
    calls = []
    flux.train(affine(3, 2), data, epochs=2,
               cb=[lambda: calls.append("a"), lambda: calls.append("b")])
    assert calls == ["a", "b"] * 8


def test_train_on_a_compiled_model_updates_the_original_params():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1)
    c = flux.compile(a, "numpy")
    history = flux.train(c, data)
    np.testing.assert_allclose(history, means, rtol=1e-5)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.b.value, b, rtol=1e-4, atol=1e-5)


def test_train_a_mlp_reduces_the_loss():
    r = rng(4)
    x = r.standard_normal((16, 3)).astype(np.float32)
    y = np.tanh(x @ r.standard_normal((3, 2))).astype(np.float32)
    flux.seed(0)
    m = Chain(Affine(3, 8), flux.tanh, Affine(8, 2))
    history = flux.train(m, [(x, y)] * 20, opt=flux.SGD(0.5), epochs=10)
    assert len(history) == 10
    assert history[-1] < 0.5 * history[0]


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_params():
    data = regression_data(n_pairs=4)
    x3, y3 = data[2]
    y3 = y3.copy()
    y3[0, 0] = np.nan
    data[2] = (x3, y3)
    a = affine(3, 2)
    seen = []
    with pytest.raises(flux.FluxError) as info:
        flux.train(a, data, cb=lambda: seen.append((value(a.W), value(a.b))))
    assert "step 3" in str(info.value)
    assert len(seen) == 2                      # steps 1 and 2 were applied, step 3 was not
    W2, b2 = seen[-1]
    np.testing.assert_array_equal(a.W.value, W2)
    np.testing.assert_array_equal(a.b.value, b2)
    assert np.all(np.isfinite(a.W.value)) and np.all(np.isfinite(a.b.value))


def test_train_shows_no_progress_bar_when_stderr_is_not_a_terminal(capfd):
    flux.train(affine(3, 2), regression_data(n_pairs=3), epochs=2)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_train_shows_a_progress_bar_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    flux.train(affine(3, 2), regression_data(n_pairs=3))
    assert terminal.getvalue().strip() != ""


def test_train_refuses_a_one_shot_generator_for_several_epochs():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b = value(a.W), value(a.b)
    with pytest.raises(flux.FluxError) as info:
        flux.train(a, (pair for pair in data), epochs=2)
    assert "epochs" in str(info.value)
    np.testing.assert_array_equal(a.W.value, W)   # refused before any update
    np.testing.assert_array_equal(a.b.value, b)


def test_train_takes_a_one_shot_generator_for_one_epoch():
    data = regression_data(n_pairs=3)
    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1)
    history = flux.train(a, (pair for pair in data))
    np.testing.assert_allclose(history, means, rtol=1e-5)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)


def test_train_takes_any_reiterable_collection_for_several_epochs():
    data = regression_data(n_pairs=3)

    class Pairs:
        def __iter__(self):
            return iter(data)

    a = affine(3, 2)
    W, b, means = sgd_affine(value(a.W), value(a.b), data, lr=0.1, epochs=2)
    history = flux.train(a, Pairs(), epochs=2)
    np.testing.assert_allclose(history, means, rtol=1e-4)
    np.testing.assert_allclose(a.W.value, W, rtol=1e-4, atol=1e-5)


def test_train_refuses_items_that_are_not_pairs():
    a = affine(3, 2)
    W = value(a.W)
    with pytest.raises(flux.FluxError) as info:
        flux.train(a, [np.ones(3)])
    assert "pair" in str(info.value)
    np.testing.assert_array_equal(a.W.value, W)


def test_train_with_crossentropy_matches_numpy():
    r = rng(5)
    x = r.standard_normal((6, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    m = Chain(affine(3, 3), flux.softmax)
    W, b = value(m[0].W), value(m[0].b)
    z = x @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = np.mean(-np.sum(y * np.log(p), axis=1))
    dz = (p - y) / len(x)
    history = flux.train(m, [(x, y)], loss=flux.crossentropy, opt=flux.SGD(0.1))
    np.testing.assert_allclose(history, [loss], rtol=1e-5)
    np.testing.assert_allclose(m[0].W.value, W - 0.1 * x.T @ dz, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m[0].b.value, b - 0.1 * dz.sum(0), rtol=1e-4, atol=1e-5)


# -- losses -----------------------------------------------------------------------------------




def test_mse_seed_example():
    assert float(flux.mse(np.array([.46, .54]), np.array([1, 0]))) == pytest.approx(0.2916)


def test_mse_is_the_mean_over_all_elements():
    ŷ, y = f32(4, 3, seed=1), f32(4, 3, seed=2)
    np.testing.assert_allclose(flux.mse(ŷ, y), np.mean((ŷ - y) ** 2), rtol=RTOL)


def test_crossentropy_of_one_point():
    ŷ = np.array([0.2, 0.7, 0.1])
    y = np.array([0.0, 1.0, 0.0])
    assert np.ndim(flux.crossentropy(ŷ, y)) == 0
    assert float(flux.crossentropy(ŷ, y)) == pytest.approx(-np.log(0.7))


def test_crossentropy_of_a_batch_is_the_mean_over_points():
    ŷ = np_softmax(rng(1).standard_normal((5, 4)))
    y = np.eye(4)[[0, 3, 1, 1, 2]]
    expected = np.mean(-np.sum(y * np.log(ŷ), axis=1))
    assert float(flux.crossentropy(ŷ, y)) == pytest.approx(expected)


@pytest.mark.parametrize("shape", [(4,), (5, 4)])
def test_logitcrossentropy_is_crossentropy_of_softmax(shape):
    z = rng(2).standard_normal(shape)
    y = np_softmax(rng(3).standard_normal(shape))     # soft targets
    expected = flux.crossentropy(flux.softmax(z), y)
    assert float(flux.logitcrossentropy(z, y)) == pytest.approx(float(expected))
    assert float(flux.logitcrossentropy(z, y)) == pytest.approx(
        np.mean(-np.sum(y * np_logsoftmax(z), axis=-1)))


def test_logitcrossentropy_is_stable_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 3.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        naive = -np.sum(y * np.log(np.exp(z) / np.exp(z).sum(-1, keepdims=True)), -1).mean()
    assert not np.isfinite(naive)              # the naive form overflows
    got = float(flux.logitcrossentropy(z, y))
    assert np.isfinite(got)
    assert got == pytest.approx(np.mean(-np.sum(y * np_logsoftmax(z), -1)))
    assert got == pytest.approx(5e3)


def test_logitcrossentropy_trains_on_huge_logits_without_nans():
    a = Affine(np.array([[1e4, 0.0], [0.0, -1e4]]), np.zeros(2))
    history = flux.train(a, [(np.array([1.0, 1.0]), np.array([0.0, 1.0]))],
                         loss=flux.logitcrossentropy, opt=flux.SGD(1e-6))
    assert np.isfinite(history[0]) and history[0] == pytest.approx(2e4)
    assert np.all(np.isfinite(a.W.value))


# -- onehot, onecold, accuracy ----------------------------------------------------------------


def test_onehot_of_one_label():
    np.testing.assert_array_equal(flux.onehot("b", ["a", "b", "c"]), [0, 1, 0])
    np.testing.assert_array_equal(flux.onehot(3, [1, 2, 3]), [0, 0, 1])


def test_onehot_of_a_list_of_labels_is_a_batch():
    got = flux.onehot(["c", "a", "c"], ["a", "b", "c"])
    np.testing.assert_array_equal(got, [[0, 0, 1], [1, 0, 0], [0, 0, 1]])


def test_onehot_of_an_unknown_label_is_an_error():
    with pytest.raises(flux.FluxError) as info:
        flux.onehot("z", ["a", "b", "c"])
    assert isinstance(info.value, ValueError)   # API: bad values are also ValueErrors
    assert "'z'" in str(info.value)


def test_onecold_of_one_vector_and_of_a_batch():
    labels = ["a", "b", "c"]
    assert flux.onecold(np.array([0.1, 0.7, 0.2]), labels) == "b"
    got = flux.onecold(np.array([[0.1, 0.7, 0.2], [0.9, 0.0, 0.1], [0, 0, 1]]), labels)
    assert list(got) == ["b", "a", "c"]


def test_onecold_inverts_onehot():
    labels = [10, 20, 30, 40]
    for label in labels:
        assert flux.onecold(flux.onehot(label, labels), labels) == label
    assert list(flux.onecold(flux.onehot([40, 10], labels), labels)) == [40, 10]


def test_onecold_with_the_wrong_number_of_labels_is_an_error():
    with pytest.raises(flux.FluxError) as info:
        flux.onecold(np.array([0.1, 0.7, 0.2]), ["a", "b"])
    assert isinstance(info.value, ValueError)   # API: shape/value errors are also ValueErrors


def identity_classifier():
    return Affine(np.eye(3), np.zeros(3))      # predicts argmax(x)


def test_accuracy_with_onehot_targets():
    x = np.array([[1, 0, 0], [0, 2, 1], [0, 0, 3], [5, 0, 0]], np.float32)
    y = np.eye(3)[[0, 1, 2, 1]]                  # the last point is wrong
    assert flux.accuracy(identity_classifier(), [(x, y)]) == pytest.approx(0.75)


def test_accuracy_with_integer_labels():
    x = np.array([[1, 0, 0], [0, 2, 1], [0, 0, 3], [5, 0, 0]], np.float32)
    labels = np.array([0, 2, 2, 0])
    assert flux.accuracy(identity_classifier(), [(x, labels)]) == pytest.approx(0.75)


def test_accuracy_over_single_points():
    data = [(np.array([1.0, 0, 0]), np.array([1.0, 0, 0])),
            (np.array([0.0, 1, 0]), np.array([0.0, 0, 1])),
            (np.array([0.0, 0, 1]), 2)]
    assert flux.accuracy(identity_classifier(), data) == pytest.approx(2 / 3)


def test_accuracy_is_the_fraction_of_all_points():
    right = (np.array([[1.0, 0, 0], [0, 1, 0]]), np.array([0, 1]))
    wrong = (np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]), np.array([1, 2, 0]))
    assert flux.accuracy(identity_classifier(), [right, wrong]) == pytest.approx(2 / 5)


# -- throttle ---------------------------------------------------------------------------------
# Windows of 0.2 s and sleeps of 3-4 windows, so a loaded machine does not make these flaky.

WINDOW = 0.2


def test_throttle_leading_runs_the_first_call_at_once_and_drops_the_rest():
    calls = []
    f = flux.throttle(calls.append, WINDOW)
    f(1)
    assert calls == [1]
    f(2)
    f(3)
    assert calls == [1]
    time.sleep(3 * WINDOW)
    assert calls == [1]                        # no trailing call by default
    f(4)                                       # a new window: runs at once
    assert calls == [1, 4]


def test_throttle_trailing_runs_the_last_dropped_call_when_the_window_ends():
    calls = []
    f = flux.throttle(calls.append, WINDOW, trailing=True)
    f(1)
    f(2)
    f(3)
    assert calls == [1]
    time.sleep(4 * WINDOW)
    assert calls == [1, 3]


def test_throttle_not_leading_runs_the_first_call_after_the_window():
    calls = []
    f = flux.throttle(calls.append, WINDOW, leading=False)
    f(1)
    f(2)
    assert calls == []
    time.sleep(4 * WINDOW)
    assert calls == [1]


def test_throttle_returns_the_latest_result():
    f = flux.throttle(lambda x: x * 10, WINDOW)
    assert f(1) == 10
    assert f(2) == 10                          # dropped: the previous result
    time.sleep(3 * WINDOW)
    assert f(3) == 30


def test_throttle_as_a_training_callback():
    calls = []
    callback = flux.throttle(lambda: calls.append(1), 10)
    flux.train(affine(3, 2), regression_data(n_pairs=5), cb=callback)
    assert calls == [1]
