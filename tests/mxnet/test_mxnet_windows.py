"""The MXNet window rules against the NumPy backend: flux.conv, max_pool and avg_pool in 1-D,
2-D and 3-D (strides, "same" and uneven padding, dilation, groups), forward and gradients
through flux.back; ties in max pools; new filters in an executor; take and its gradient; a
Symbol for every batch size; training a small convolutional model."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, Conv, net

mx = pytest.importorskip("mxnet")
flux_mxnet = pytest.importorskip("flux_mxnet")

RTOL, ATOL = 1e-4, 1e-5


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def check(model, *inputs, seed=1):
    """flux.mxnet(model) gives the NumPy backend's outputs and (flux.back) input gradients."""
    compiled = flux.mxnet(model)
    want = model(*inputs)
    np.testing.assert_allclose(compiled(*inputs), want, rtol=RTOL, atol=ATOL)
    delta = f32(*np.shape(want), seed=seed)
    for got, ref in zip(flux.back(compiled, delta, *inputs), flux.back(model, delta, *inputs)):
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=ATOL)


CONVS = {   # x shape, w shape (*window, in / groups, out), conv options
    "1d": ((2, 9, 3), (3, 3, 4), {}),
    "1d-stride2-same-dilation2-groups2": ((2, 10, 4), (3, 2, 6),
                                          dict(stride=2, padding="same", dilation=2, groups=2)),
    "1d-uneven": ((2, 7, 2), (2, 2, 3), dict(padding=((2, 0),))),
    "2d": ((2, 6, 5, 3), (3, 2, 3, 4), {}),
    "2d-stride2-same": ((2, 8, 7, 3), (3, 3, 3, 5), dict(stride=2, padding="same")),
    "2d-uneven": ((2, 6, 7, 4), (2, 3, 4, 6), dict(padding=((1, 0), (2, 1)))),
    "2d-dilation2": ((2, 9, 8, 3), (3, 2, 3, 4), dict(dilation=2, padding=1)),
    "2d-groups2": ((2, 6, 6, 4), (3, 3, 2, 6),
                   dict(groups=2, stride=(2, 1), padding=((0, 1), (1, 1)))),
    "2d-groups4": ((2, 7, 6, 8), (2, 2, 2, 8), dict(groups=4, dilation=(2, 1), stride=2)),
    "2d-depthwise": ((2, 6, 6, 4), (3, 3, 1, 4), dict(groups=4, padding="same")),
    "2d-all": ((2, 9, 8, 4), (3, 2, 2, 6),
               dict(stride=(2, 3), padding=((2, 0), (0, 1)), dilation=(2, 1), groups=2)),
    "3d": ((2, 5, 6, 4, 3), (2, 3, 2, 3, 4), dict(stride=(1, 2, 1),
                                                  padding=((1, 0), (0, 1), (1, 1)))),
    "3d-stride2-same": ((1, 6, 5, 7, 2), (3, 3, 3, 2, 3), dict(stride=2, padding="same")),
    "3d-dilation2-groups2": ((1, 7, 6, 6, 4), (2, 2, 3, 2, 4),
                             dict(dilation=(2, 1, 2), groups=2, padding="same", stride=(1, 2, 1))),
}


@pytest.mark.parametrize("name", list(CONVS))
def test_conv_matches_numpy(name):
    x_shape, w_shape, options = CONVS[name]
    check(net(lambda x, w: flux.conv(x, w, **options)), f32(*x_shape), f32(*w_shape, seed=2))


POOLS = {   # x shape, window, pool options
    "1d": ((2, 9, 3), (2,), {}),
    "1d-stride1-uneven": ((2, 8, 2), (3,), dict(stride=1, padding=((0, 2),))),
    "2d": ((2, 6, 8, 3), (2, 2), {}),
    "2d-stride2-same": ((2, 7, 8, 3), (3, 3), dict(stride=2, padding="same")),
    "2d-uneven": ((2, 5, 4, 3), (3, 2), dict(stride=(2, 1), padding=((1, 1), (0, 1)))),
    "2d-overlapping": ((1, 7, 7, 2), (3, 3), dict(stride=1, padding=1)),
    "3d": ((2, 4, 6, 5, 2), (2, 2, 2), dict(stride=(1, 2, 2), padding=((0, 1), (1, 1), (0, 0)))),
    "3d-same": ((1, 5, 5, 6, 3), (3, 2, 3), dict(stride=2, padding="same")),
}


@pytest.mark.parametrize("pool", [flux.max_pool, flux.avg_pool], ids=["max", "avg"])
@pytest.mark.parametrize("name", list(POOLS))
def test_pools_match_numpy(pool, name):
    x_shape, window, options = POOLS[name]
    check(net(lambda x: pool(x, window, **options)), f32(*x_shape))


@pytest.mark.parametrize("options", [dict(stride=1), dict(stride=2, padding="same")],
                         ids=["overlapping", "same"])
def test_max_pool_gradient_goes_to_the_first_maximum_of_ties(options):
    x = np.random.default_rng(3).integers(0, 3, (2, 6, 7, 2)).astype(np.float32)
    check(net(lambda x: flux.max_pool(x, (3, 2), **options)), x)


def test_new_filters_reach_a_bound_executor():
    """MKL-DNN's fused inference convolution keeps its first filters: not used."""
    model = net(lambda x, w: flux.conv(x, w, padding="same"))
    compiled = flux.mxnet(model)
    x = f32(2, 6, 6, 3)
    for seed in (1, 2):
        w = f32(3, 3, 3, 4, seed=seed)
        np.testing.assert_allclose(compiled(x, w), model(x, w), rtol=RTOL, atol=ATOL)
    layer = Conv((3, 3), 3, 4)
    compiled = flux.mxnet(layer)
    compiled(x)
    layer.W.value = layer.W.value * 2
    np.testing.assert_allclose(compiled(x), layer(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_take_and_its_gradient_match_numpy(axis):
    x = f32(4, 5, 3)
    indices = np.array([[0, 2, 2], [1, 0, 2]])
    check(net(lambda x: np.take(x, indices, axis=axis)), x)
    check(net(lambda x: np.take(x, 1, axis=axis)), x)          # a 0-d index drops the axis


def test_take_of_data_dependent_indices():
    table = f32(6, 3)
    model = net(lambda t, i: np.take(t, i, axis=0) * 2)
    indices = np.array([[5, 0, 0], [3, 3, 1]])
    np.testing.assert_allclose(flux.mxnet(model)(table, indices), model(table, indices),
                               rtol=RTOL, atol=ATOL)
    delta = f32(2, 3, 3, seed=1)
    got = flux.back(flux.mxnet(model), delta, table, indices)[0]
    np.testing.assert_allclose(got, flux.back(model, delta, table, indices)[0],
                               rtol=RTOL, atol=ATOL)


@net
class Small:
    """Conv, pools and a dense head: a channels-last image model."""

    c1: Conv
    c2: Conv
    out: Affine
    input_shape = (8, 8, 2)

    def __init__(self):
        self.c1 = Conv((3, 3), 2, 4, padding="same")
        self.c2 = Conv((2, 2), 4, 4, stride=1, padding=((0, 1), (1, 0)), groups=2)
        self.out = Affine(16 * 4, 3)

    def __call__(self, x):
        h = flux.max_pool(flux.relu(self.c1(x)), (2, 2))
        h = flux.avg_pool(np.tanh(self.c2(h)), (3, 3), stride=1, padding="same")
        return self.out(np.reshape(h, (h.shape[0], -1)))


def test_symbol_without_inputs_serves_every_batch_size():
    flux.seed(4)
    m = Small()
    sym, arg_params = flux_mxnet.symbol(m)
    for n in (1, 5):
        x = f32(n, 8, 8, 2, seed=n)
        ex = sym.simple_bind(mx.cpu(), grad_req="null", data=x.shape)
        for name, value in arg_params.items():
            ex.arg_dict[name][:] = value
        ex.arg_dict["data"][:] = x
        np.testing.assert_allclose(ex.forward(is_train=False)[0].asnumpy(), m(x),
                                   rtol=RTOL, atol=ATOL)


def test_training_a_conv_model_matches_numpy():
    flux.seed(5)
    m, ref = Small(), Small()
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        q.value = p.value.copy()
    x, y = f32(6, 8, 8, 2, seed=1), f32(6, 3, seed=2)
    data = [(x, y), (x[::-1], y)] * 2
    got = flux.train(flux.mxnet(m), data, opt=flux.Momentum(0.05, 0.9))
    want = flux.train(ref, data, opt=flux.Momentum(0.05, 0.9))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(flux.mxnet(m)(x), ref(x), rtol=1e-4, atol=1e-5)


def test_a_chain_of_conv_layers_back_matches_numpy():
    flux.seed(6)
    m = Chain(Conv(3, 3, 4, padding="same"), flux.relu, Conv(2, 4, 2, stride=2))
    c = flux.mxnet(m)
    x, delta = f32(3, 9, 3, seed=1), f32(3, 4, 2, seed=2)
    (dx,) = flux.back(c, delta, x)
    grads = {k: p.grad.copy() for k, p in flux.params(m).items()}
    for p in flux.params(m).values():
        p.zero_grad()
    (dx_np,) = flux.back(m, delta, x)
    np.testing.assert_allclose(dx, dx_np, rtol=RTOL, atol=ATOL)
    for k, p in flux.params(m).items():
        np.testing.assert_allclose(grads[k], p.grad, rtol=RTOL, atol=ATOL)
