"""Conv, MaxPool, AvgPool, Embedding, LayerNorm and Reshape through the public API: shapes,
values against NumPy formulas, gradients against finite differences, PyTorch as an oracle where
it is installed, and the errors bad input gets (at the user's line, the model unchanged)."""
import numpy as np
import pytest

import flux
from flux import AvgPool, Chain, Conv, Conv2D, Embedding, LayerNorm, MaxPool, Reshape
from flux.testing import assert_grads_close, finite_differences

RNG = np.random.default_rng(0)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- shapes and values -----------------------------------------------------------------------------


def test_conv_shapes_as_the_contract_fixes_them():
    c = Conv((3, 3), 1, 16)
    assert c.W.shape == (3, 3, 1, 16) and c.b.shape == (16,)
    assert c(np.ones((8, 28, 28, 1))).shape == (8, 26, 26, 16)
    assert Conv((3, 3), 1, 16, stride=2, padding="same")(np.ones((8, 28, 28, 1))).shape \
        == (8, 14, 14, 16)
    assert Conv((5,), 8, 8)(np.ones((4, 20, 8))).shape == (4, 16, 8)
    assert Conv((2, 2, 2), 3, 4)(np.ones((2, 5, 5, 5, 3))).shape == (2, 4, 4, 4, 4)
    assert Conv((3, 3), 4, 8, groups=2).W.shape == (3, 3, 2, 8)
    assert Conv((3, 3), 1, 4)(np.ones((9, 9, 1))).shape == (7, 7, 4)        # one point
    assert isinstance(Conv2D((3, 3), 1, 16), Conv)


def test_conv_is_the_functional_conv_plus_bias_and_pools_are_their_functions():
    c = Conv((3, 2), 4, 6, stride=(2, 1), padding=((1, 0), (0, 1)), dilation=(1, 2), groups=2)
    x = f32(3, 7, 6, 4)
    want = flux.conv(x, c.W.value, (2, 1), ((1, 0), (0, 1)), (1, 2), 2) + c.b.value
    np.testing.assert_allclose(c(x), want, rtol=1e-6)
    np.testing.assert_array_equal(MaxPool((2, 2))(x), flux.max_pool(x, (2, 2)))
    x = np.arange(16.0, dtype=np.float32).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(MaxPool((2, 2))(x)[0, :, :, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(AvgPool((2, 2))(x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    # padding is not counted by the mean, and never wins the max
    edge = AvgPool((2, 2), stride=1, padding=((0, 1), (0, 1)))(x)[0, -1, -1, 0]
    assert edge == 15.0
    assert MaxPool((3, 3), stride=1, padding=1)(-np.ones((1, 2, 2, 1)))[0, 0, 0, 0] == -1


def test_layernorm_is_its_formula_and_its_gradient_matches_finite_differences():
    ln = LayerNorm(5)
    ln.γ.value = f32(5)
    ln.β.value = f32(5)
    x = f32(4, 5)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    np.testing.assert_allclose(ln(x), (x - mean) / np.sqrt(var + 1e-5) * ln.γ.value
                               + ln.β.value, rtol=1e-5, atol=1e-6)
    delta = f32(4, 5)
    (dx,) = flux.back(ln, delta, x)

    def objective(x64):
        m = x64.mean(-1, keepdims=True)
        v = ((x64 - m) ** 2).mean(-1, keepdims=True)
        return float(np.sum(delta * ((x64 - m) / np.sqrt(v + 1e-5) * ln.γ.value
                                     + ln.β.value)))

    assert_grads_close(dx, finite_differences(objective, x)[0])


def test_embedding_rows_and_their_gradient_adds_repeated_indices():
    e = Embedding(6, 3)
    i = np.array([[0, 2, 2], [5, 2, 1]])
    np.testing.assert_array_equal(e(i), e.W.value[i])
    assert e(np.array(4)).shape == (3,)
    delta = f32(2, 3, 3)
    flux.back(e, delta, i)
    want = np.zeros((6, 3), np.float32)
    np.add.at(want, i.reshape(-1), delta.reshape(-1, 3))
    np.testing.assert_allclose(e.W.grad, want, rtol=1e-6)
    assert np.all(e.W.grad[[3, 4]] == 0)


def test_reshape_keeps_the_batch_axis():
    assert Reshape(7, 7, 4)(np.zeros((3, 196))).shape == (3, 7, 7, 4)
    assert Reshape((2, -1))(np.zeros((5, 12))).shape == (5, 2, 6)


def test_a_small_cnn_trains_and_its_gradients_match_finite_differences():
    flux.seed(1)
    model = Chain(Conv((3, 3), 2, 3, padding="same"), flux.relu, MaxPool((2, 2)),
                  Conv((2, 2), 3, 2), AvgPool((2, 1)), Reshape(-1), flux.Affine(4, 2))
    x, y = f32(2, 6, 6, 2), f32(2, 2)
    flux.cast(model, np.float64)               # finite differences want float64 throughout
    loss = flux.net(lambda x, y: flux.mse(model(x), y))
    flux.back(loss, np.float64(1), x, y)
    for W in (model.layers[0].W, model.layers[3].W):
        saved = W.value.copy()

        def objective(w, W=W):
            W.value = w
            return float(loss(x, y))

        want = finite_differences(objective, saved)[0]
        W.value = saved
        assert_grads_close(W.grad, want)
    flux.cast(model, np.float32)
    history = flux.train(model, [(x, y)], loss=flux.mse, opt=flux.ADAM(0.01), epochs=30,
                         verbose=False)
    assert history[-1] < history[0]


# -- PyTorch as the oracle ----------------------------------------------------------------------


def test_conv_layernorm_and_embedding_agree_with_pytorch():
    torch = pytest.importorskip("torch")
    c = Conv((3, 3), 4, 6, stride=2, padding=1, dilation=1, groups=2)
    tc = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    with torch.no_grad():
        tc.weight.copy_(torch.tensor(c.W.value.transpose(3, 2, 0, 1)))
        tc.bias.copy_(torch.tensor(c.b.value))
    x = f32(2, 9, 9, 4)
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    yt = tc(xt)
    delta = f32(*c(x).shape)
    yt.backward(torch.tensor(delta.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(c(x), yt.detach().numpy().transpose(0, 2, 3, 1), atol=1e-5)
    (dx,) = flux.back(c, delta, x)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)
    np.testing.assert_allclose(c.W.grad, tc.weight.grad.numpy().transpose(2, 3, 1, 0),
                               atol=1e-4)
    np.testing.assert_allclose(c.b.grad, tc.bias.grad.numpy(), rtol=1e-5)

    ln, tln = LayerNorm(6), torch.nn.LayerNorm(6)
    x = f32(3, 4, 6)
    np.testing.assert_allclose(ln(x), tln(torch.tensor(x)).detach().numpy(), atol=1e-5)

    e = Embedding(10, 4)
    te = torch.nn.Embedding(10, 4)
    with torch.no_grad():
        te.weight.copy_(torch.tensor(e.W.value))
    i = np.array([[1, 9, 1], [0, 1, 2]])
    np.testing.assert_array_equal(e(i), te(torch.tensor(i)).detach().numpy())


# -- bad input -------------------------------------------------------------------------------------


def test_a_conv_on_the_wrong_number_of_channels_names_both_counts_and_the_line():
    model = Chain(Conv((3, 3), 1, 4), MaxPool((2, 2)), Conv((3, 3), 3, 8))
    before = {k: p.value.copy() for k, p in flux.params(model).items()}
    with pytest.raises(flux.ShapeError, match="4 channels but the filter .* expects 3") as info:
        model(np.ones((2, 12, 12, 1), np.float32))
    assert info.value.trace[0].model == "Conv" and info.value.trace[0].path == "layers.2"
    assert all(np.array_equal(p.value, before[k]) for k, p in flux.params(model).items())


@pytest.mark.parametrize("make, message", [
    (lambda: Conv((3, 3), 1, 4, stride=0), "stride must be ≥ 1"),
    (lambda: Conv((3, 3), 1, 4, stride=-2), "stride must be ≥ 1"),
    (lambda: Conv((3, 3), 1, 4, padding="full"), "padding is 'valid', 'same'"),
    (lambda: Conv((3, 3), 3, 4, groups=2), "groups=2 must divide"),
    (lambda: Conv((3, 0), 1, 4), "window must be ≥ 1"),
    (lambda: MaxPool((2, 2), stride=0), "stride must be ≥ 1"),
    (lambda: AvgPool((2, 2), padding=(1,)), "padding is"),
    (lambda: Conv2D((3,), 1, 4), "2-D window"),
    (lambda: Embedding(0, 4), "vocab must be an int ≥ 1"),
    (lambda: LayerNorm(4, eps=0), "eps must be a number > 0"),
    (lambda: Reshape(2, -1, -1), "at most one -1"),
])
def test_bad_layer_arguments_are_refused_when_the_layer_is_made(make, message):
    with pytest.raises(flux.FluxError, match=message):
        make()


def test_a_window_larger_than_the_padded_input_is_a_shape_error():
    with pytest.raises(flux.ShapeError, match=r"the window spans \(5, 5\) but the padded input "
                                              r"is only \(4, 4\)"):
        Conv((5, 5), 1, 2)(np.ones((1, 4, 4, 1), np.float32))
    with pytest.raises(flux.ShapeError, match="window spans"):
        MaxPool((3, 3))(np.ones((1, 2, 2, 1), np.float32))


def test_embedding_indices_out_of_range_or_not_integers():
    e = Embedding(5, 2)
    before = e.W.value.copy()
    with pytest.raises(flux.FluxError, match=r"index 5 is out of range for 5 rows"):
        e(np.array([0, 5]))
    with pytest.raises(flux.FluxError, match=r"index -1 is out of range for 5 rows"):
        e(np.array([[-1]]))
    with pytest.raises(flux.FluxTypeError, match="integer indices"):
        e(np.array([0.0, 1.0]))
    np.testing.assert_array_equal(e.W.value, before)


def test_reshape_that_does_not_fit_a_point():
    with pytest.raises(flux.FluxValueError, match=r"\(12,\) \(12 elements\) cannot take"):
        Reshape(5, 5)(np.zeros((5, 12)))


def test_integer_inputs_to_weighted_layers_compute_in_the_weights_dtype():
    assert flux.Affine(2, 3)(np.array([1, 2])).dtype == np.float32
    assert Conv((2,), 1, 2)(np.ones((1, 4, 1), int)).dtype == np.float32


# -- the NumPy kernels' fast paths, against the loop references --------------------------------


def test_tiled_max_pool_and_its_gradient_send_ties_to_the_first_maximum():
    from flux.testing import _window_references as W
    x = RNG.integers(0, 3, (3, 6, 8, 2)).astype(np.float32)        # many ties
    g = f32(3, 3, 4, 2)
    attrs = dict(window=(2, 2), strides=(2, 2), padding=((0, 0), (0, 0)))
    model = flux.net(lambda x: flux.max_pool(x, (2, 2)))
    np.testing.assert_array_equal(model(x), W.pool(x, **attrs, how="max"))
    (dx,) = flux.back(model, g, x)
    np.testing.assert_array_equal(dx, W.max_pool_grad(x, g, **attrs))


def test_a_convolution_of_many_chunks_and_its_gradients_match_the_loop_reference():
    from flux.testing import _window_references as W
    x, w = f32(16, 20, 20, 16), f32(3, 3, 16, 8)          # columns of ~3 MB: several chunks
    attrs = dict(strides=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    model = flux.net(lambda x, w: flux.conv(x, w, padding=1))
    np.testing.assert_allclose(model(x, w), W.conv(x, w, **attrs), rtol=1e-4, atol=1e-4)
    g = f32(16, 20, 20, 8)
    dx, dw = flux.back(model, g, x, w)
    np.testing.assert_allclose(dx, W.conv_input_grad(g, w, **attrs, shape=x.shape), rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(dw, W.conv_filter_grad(x, g, **attrs, shape=w.shape), rtol=1e-4,
                               atol=2e-3)
