"""Convolution and pooling on the TensorFlow backend against the NumPy backend: 1-, 2- and 3-D,
strides, "same" and uneven padding, dilation (alone and with strides), groups; forward values,
`flux.back`'s input and filter gradients, training inside TF, and `flux_tf.tensor` eagerly."""
import copy

import numpy as np
import pytest
import tensorflow as tf

import flux
import flux_tf
from flux import Param, net

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@net
class ConvPool:
    """A convolution with filter `w` (keywords `conv`), then a pool (`pool`: max or avg)."""
    w: Param

    def __init__(self, w, conv, pool=None):
        self.w = flux.param(w)
        self.conv, self.pool = conv, pool

    def __call__(self, x):
        y = flux.conv(x, self.w, **self.conv)
        if self.pool is None:
            return y
        how, kwargs = self.pool
        return (flux.max_pool if how == "max" else flux.avg_pool)(y, **kwargs)


# (input shape, filter shape, conv keywords, pool)
CONFIGS = {
    "1d": ((2, 11, 3), (3, 3, 4), dict(stride=2, padding=1), ("max", dict(window=(2,)))),
    "1d_dilated": ((2, 12, 2), (3, 2, 3), dict(dilation=3, padding="same"),
                   ("avg", dict(window=(3,), stride=2, padding="same"))),
    "2d_stride2_same": ((2, 9, 8, 3), (3, 3, 3, 4), dict(stride=2, padding="same"),
                        ("max", dict(window=(2, 2), stride=1, padding="same"))),
    "2d_dilation2": ((2, 9, 10, 3), (3, 2, 3, 5), dict(dilation=2, padding=((1, 2), (0, 1))),
                     ("avg", dict(window=(3, 2), stride=(2, 1), padding=((1, 1), (0, 1))))),
    "2d_stride_and_dilation": ((1, 10, 9, 2), (2, 3, 2, 3),
                               dict(stride=(2, 3), dilation=(3, 2), padding=1), None),
    "2d_groups2": ((2, 7, 6, 4), (3, 3, 2, 6), dict(groups=2, padding="same"),
                   ("max", dict(window=(3, 3), stride=2, padding=1))),
    "2d_groups4_depthwise": ((2, 8, 7, 4), (3, 2, 1, 8),
                             dict(groups=4, stride=(1, 2), dilation=(2, 1)), None),
    "3d": ((2, 5, 6, 7, 2), (2, 3, 2, 2, 4), dict(stride=(1, 2, 2), padding="same"),
           ("max", dict(window=(2, 2, 2), padding="same"))),
    "3d_groups_dilated": ((1, 6, 5, 7, 4), (2, 2, 3, 2, 4),
                          dict(groups=2, dilation=(2, 1, 2), padding=((1, 0), (0, 1), (2, 2))),
                          ("avg", dict(window=(2, 2, 3), stride=(1, 2, 1)))),
}


def twins(name):
    """(the model, its twin with the same filter, an input) for configuration `name`."""
    x_shape, w_shape, conv, pool = CONFIGS[name]
    w = rand(*w_shape)
    return ConvPool(w, conv, pool), ConvPool(w.copy(), conv, pool), rand(*x_shape)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_and_back_match_numpy(name):
    m, ref, x = twins(name)
    y = flux.tf(m)(x)
    np.testing.assert_allclose(y, ref(x), rtol=1e-4, atol=1e-4)
    delta = rand(*y.shape)
    (gx,) = flux.back(flux.tf(m), delta, x)
    (gx_ref,) = flux.back(ref, delta, x)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m.w.grad, ref.w.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["1d", "2d_stride_and_dilation", "2d_groups4_depthwise",
                                  "3d_groups_dilated"])
def test_training_in_tf_matches_numpy(name):
    m, ref, x = twins(name)
    data = [(x, rand(*ref(x).shape))] * 2
    opt = flux.SGD(0.01)
    got = flux.train(flux.tf(m), data, opt=opt)
    want = flux.train(ref, data, opt=copy.deepcopy(opt))
    np.testing.assert_allclose(got, want, rtol=1e-4)
    np.testing.assert_allclose(m.w.value, ref.w.value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["3d", "2d_groups2"])
def test_tensor_eagerly_under_a_gradient_tape(name):
    m, ref, x = twins(name)
    (w,) = flux_tf.variables(m)
    with tf.GradientTape() as tape:
        y = flux_tf.tensor(m, tf.constant(x))
        loss = tf.reduce_sum(y * y)
    np.testing.assert_allclose(y.numpy(), ref(x), rtol=1e-4, atol=1e-4)
    flux.back(ref, 2 * ref(x), x)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), ref.w.grad, rtol=1e-4, atol=1e-4)


def test_max_pool_ties_send_the_gradient_to_the_first_maximum():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 1:3, 0] = 1.0          # two equal maxima in some windows, only zeros in others
    pool = net(lambda x: flux.max_pool(x, (3, 3), stride=1, padding="same"))
    delta = rand(1, 4, 4, 1)
    (got,) = flux.back(flux.tf(pool), delta, x)
    (want,) = flux.back(pool, delta, x)
    np.testing.assert_allclose(got, want, rtol=1e-6)    # sums of g in another order


def test_take_and_its_gradient_match_numpy():
    take = net(lambda x, i: np.take(x, i, axis=1) * 2)
    x, i = rand(2, 5, 3), np.array([[4, 0], [4, 2]])
    y = flux.tf(take)(x, i)
    np.testing.assert_allclose(y, take(x, i), rtol=1e-6)
    delta = rand(*y.shape)
    np.testing.assert_allclose(flux.back(flux.tf(take), delta, x, i)[0],
                               flux.back(take, delta, x, i)[0], rtol=1e-6)
