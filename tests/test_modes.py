"""Dropout, BatchNorm and the modes (flux.testmode / trainmode / auto) through the public API:
what each mode does, fresh and reproducible randomness, running statistics against PyTorch,
saving, resuming, and bad input."""
import numpy as np
import pytest

import flux
from flux import Affine, BatchNorm, Chain, Conv, Dropout

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- modes -----------------------------------------------------------------------------------------


def test_auto_mode_trains_inside_back_and_train_and_tests_in_calls():
    flux.seed(0)
    m = Chain(Affine(8, 8), Dropout(0.5))
    x = f32(16, 8)
    plain = m.layers[0](x)
    np.testing.assert_array_equal(m(x), plain)                  # an ordinary call: identity
    (dx,) = flux.back(m, np.ones((16, 8), np.float32), x)      # back: a mask
    full = np.ones((16, 8), np.float32) @ m.layers[0].W.value.T
    assert not np.allclose(dx, full)
    seen = []
    flux.train(m, [(x, plain)], loss=lambda yhat, y: seen.append(1) or flux.mse(yhat, y),
               verbose=False)
    assert seen                                                 # the loss was traced


def test_forced_modes_apply_to_compiled_copies_and_auto_comes_back():
    m = Chain(Affine(4, 4), Dropout(0.9))
    compiled = flux.compile(m, "numpy")
    x = f32(50, 4)
    flux.trainmode(compiled)
    assert np.mean(compiled(x) == 0) > 0.7 and np.mean(m(x) == 0) > 0.7
    flux.testmode(m)
    np.testing.assert_array_equal(compiled(x), m.layers[0](x))
    flux.back(m, np.ones((50, 4), np.float32), x)
    assert m.layers[1].active is False
    flux.testmode(m, None)
    assert m.layers[1].active is None
    flux.testmode(m, False)                                     # False: training behaviour
    assert m.layers[1].active is True
    with pytest.raises(flux.FluxTypeError, match="mode is True"):
        flux.testmode(m, "train")


# -- Dropout ---------------------------------------------------------------------------------------


def test_dropout_zeroes_p_of_the_elements_keeps_the_mean_and_is_fresh_and_reproducible():
    d = flux.trainmode(Dropout(0.3))
    x = np.ones((400, 500), np.float32)
    flux.seed(1)
    a, b = d(x), d(x)
    assert abs(np.mean(a == 0) - 0.3) < 0.005
    assert abs(a.mean() - 1) < 0.01 and set(np.unique(a)) == {0, np.float32(1 / 0.7)}
    assert not np.array_equal(a, b)
    flux.seed(1)
    np.testing.assert_array_equal(d(x), a)
    assert flux.trainmode(Dropout(0))(x) is not None and np.all(Dropout(0)(x) == x)


@pytest.mark.parametrize("p", [-0.1, 1, 1.5, "0.5", True, float("nan")])
def test_dropout_probability_outside_zero_one_is_refused(p):
    with pytest.raises(flux.FluxValueError, match=r"p is a probability in \[0, 1\)"):
        Dropout(p)


# -- BatchNorm -------------------------------------------------------------------------------------


def test_batchnorm_statistics_are_buffers_not_params():
    bn = BatchNorm(3)
    assert list(flux.params(bn)) == ["γ", "β"]
    assert isinstance(bn.mean, flux.Buffer) and bn.var.value.tolist() == [1, 1, 1]


def test_batchnorm_agrees_with_pytorch_in_training_and_in_eval():
    torch = pytest.importorskip("torch")
    bn, tbn = BatchNorm(4, momentum=0.2), torch.nn.BatchNorm2d(4, momentum=0.2)
    bn.γ.value, bn.β.value = f32(4), f32(4)
    with torch.no_grad():
        tbn.weight.copy_(torch.tensor(bn.γ.value))
        tbn.bias.copy_(torch.tensor(bn.β.value))
    model = Chain(bn)
    for _ in range(3):
        x = f32(5, 6, 6, 4) * 3 + 1
        delta = f32(5, 6, 6, 4)
        (dx,) = flux.back(model, delta, x)                      # training mode: batch stats
        xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
        tbn.train()
        yt = tbn(xt)
        yt.backward(torch.tensor(delta.transpose(0, 3, 1, 2)))
        np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-4)
    np.testing.assert_allclose(bn.mean.value, tbn.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.var.value, tbn.running_var.numpy(), rtol=1e-5)
    np.testing.assert_allclose(bn.γ.grad, tbn.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    tbn.eval()
    x = f32(2, 3, 3, 4)
    with torch.no_grad():
        want = tbn(torch.tensor(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(bn(x), want, atol=1e-5)


def test_running_statistics_are_saved_loaded_and_resumed_exactly(tmp_path):
    def make():
        flux.seed(2)
        return Chain(Conv((3, 3), 1, 4), BatchNorm(4), flux.relu, Dropout(0.25),
                     flux.Reshape(-1), Affine(4 * 4 * 4, 2))

    rng = np.random.default_rng(3)
    data = [(rng.standard_normal((8, 6, 6, 1)).astype(np.float32),
             rng.standard_normal((8, 2)).astype(np.float32)) for _ in range(4)]
    straight = make()
    flux.seed(7)
    flux.train(straight, data, opt=flux.ADAM(0.01), epochs=2, verbose=False)
    resumed = make()
    flux.seed(7)
    path = tmp_path / "run.ckpt"
    flux.train(resumed, data, opt=flux.ADAM(0.01), epochs=1, checkpoint=path, verbose=False)
    again = make()
    flux.train(again, data, opt=flux.ADAM(0.01), epochs=2, resume=path, verbose=False)
    for name, buffer in flux.model.walk.buffers(straight).items():
        np.testing.assert_array_equal(flux.model.walk.buffers(again)[name].value, buffer.value)
    for name, p in flux.params(straight).items():
        np.testing.assert_array_equal(flux.params(again)[name].value, p.value)
    saved = tmp_path / "m.flux"
    flux.save(again, saved)
    fresh = make()
    flux.load(fresh, saved)
    np.testing.assert_array_equal(fresh.layers[1].var.value, again.layers[1].var.value)
    assert not np.allclose(fresh.layers[1].var.value, 1)


def test_batchnorm_on_a_batch_of_one_in_training_mode_is_refused_and_changes_nothing():
    m = Chain(Affine(3, 2), BatchNorm(2))
    before = {k: np.array(p.value) for k, p in flux.params(m).items()}
    with pytest.raises(flux.FluxValueError, match="more than one value per channel") as info:
        flux.train(m, [(f32(1, 3), f32(1, 2))], verbose=False)
    assert info.value.trace and info.value.trace[0].model == "BatchNorm"
    assert all(np.array_equal(p.value, before[k]) for k, p in flux.params(m).items())
    assert np.all(m.layers[1].mean.value == 0)
    assert m(f32(1, 3)).shape == (1, 2)                          # test mode is fine


@pytest.mark.parametrize("make, message", [
    (lambda: BatchNorm(0), "n must be an int ≥ 1"),
    (lambda: BatchNorm(3, momentum=1.5), "momentum is in"),
    (lambda: BatchNorm(3, eps=-1), "eps must be"),
])
def test_bad_batchnorm_arguments(make, message):
    with pytest.raises(flux.FluxValueError, match=message):
        make()


def test_batchnorm_on_the_wrong_number_of_channels():
    with pytest.raises(flux.FluxValueError, match=r"normalises 3 channels .* \(2, 4\)"):
        BatchNorm(3)(f32(2, 4))


def test_dropout_layernorm_and_embedding_inside_unrolled_recurrent_models():
    flux.seed(4)
    step = Chain(flux.LSTM(3, 5), flux.LayerNorm(5), Dropout(0.5))
    model = flux.unroll(step, 4, stateful=False)
    x = f32(2, 4, 3)
    np.testing.assert_array_equal(model(x), model(x))            # test mode: deterministic
    flux.trainmode(model)
    a, b = model(x), model(x)
    assert a.shape == (2, 4, 5) and not np.array_equal(a, b)     # fresh masks per call
    assert 0.3 < np.mean(a == 0) < 0.7
    flux.testmode(model, None)
    (dx,) = flux.back(model, np.ones((2, 4, 5), np.float32), x)
    assert dx.shape == x.shape and np.all(np.isfinite(dx))
    tokens = flux.unroll(Chain(flux.Embedding(10, 3), flux.Recurrent(3, 2)), 6)
    assert tokens(np.array([1, 4, 4, 0, 9, 2])).shape == (6, 2)     # one sequence of tokens
    batched = Chain(flux.Embedding(10, 3), flux.unroll(flux.GRU(3, 2), 6, stateful=False))
    assert batched(np.array([[1, 4, 4, 0, 9, 2], [3, 3, 3, 3, 3, 3]])).shape == (2, 6, 2)
