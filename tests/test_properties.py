"""Property-based tests (Hypothesis): random models built from flux's layers and functions give
the same outputs and gradients on every installed backend as on NumPy, their gradients match
finite differences, and random bad inputs raise FluxErrors without changing any Param."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flux
from flux.testing import assert_grads_close
from helpers import fd_grad

EXAMPLES = 25
SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = {"σ": flux.σ, "relu": flux.relu, "tanh": flux.tanh, "softmax": flux.softmax,
               "logsoftmax": flux.logsoftmax, "square": np.square, "exp∘clip": lambda x:
               np.exp(np.clip(x, -3, 3))}


@st.composite
def models(draw, dtype=np.float32):
    """A random Chain of Affine layers and activations, sometimes sharing a weight matrix,
    sometimes ending in a tuple output; with an input shape (batch or single point)."""
    width = draw(st.integers(1, 5))
    n_in = width
    layers, square = [], None
    for _ in range(draw(st.integers(1, 4))):
        n_out = draw(st.integers(1, 5))
        if square is not None and n_in == n_out == square.shape[0] and draw(st.booleans()):
            W = square                                            # a shared Param
        else:
            W = flux.param(np.random.default_rng(draw(st.integers(0, 99))).normal(
                0, 0.7, (n_in, n_out)), dtype=dtype)
            if n_in == n_out:
                square = W
        b = np.random.default_rng(draw(st.integers(0, 99))).normal(0, 0.5, n_out)
        layers.append(flux.Affine(W, flux.param(b, dtype=dtype)))   # (no relu kink at 0)
        layers.append(ACTIVATIONS[draw(st.sampled_from(sorted(ACTIVATIONS)))])
        n_in = n_out
    model = flux.Chain(*layers)
    if draw(st.booleans()):
        chain = model
        model = flux.net(lambda x: (chain(x), np.sum(chain(x) * x[..., :1])))
    batch = draw(st.one_of(st.none(), st.integers(1, 4)))
    shape = (width,) if batch is None else (batch, width)
    return model, shape


def inputs(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(dtype)


def leaves(value):
    return list(value) if isinstance(value, tuple) else [value]


OTHER_BACKENDS = [b for b in flux.backends() if b != "numpy"]


@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy backend is installed")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@SETTINGS
@given(case=models(), seed=st.integers(0, 2**16))
def test_every_backend_agrees_with_numpy(backend, case, seed):
    model, shape = case
    x = inputs(shape, seed)
    compiled = flux.compile(model, backend)
    for got, want in zip(leaves(compiled(x)), leaves(model(x))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    delta = tuple(np.ones_like(v) for v in leaves(model(x)))
    delta = delta if isinstance(model(x), tuple) else delta[0]
    (gx_numpy,) = flux.back(model, delta, x)
    grads_numpy = {k: p.grad.copy() for k, p in flux.params(model).items()}
    for p in flux.params(model).values():
        p.zero_grad()
    (gx,) = flux.back(compiled, delta, x)
    np.testing.assert_allclose(gx, gx_numpy, rtol=1e-3, atol=1e-5)
    for k, p in flux.params(model).items():
        np.testing.assert_allclose(p.grad, grads_numpy[k], rtol=1e-3, atol=1e-5, err_msg=k)


@SETTINGS
@given(case=models(dtype=np.float64), seed=st.integers(0, 2**16))
def test_gradients_match_finite_differences(case, seed):
    model, shape = case
    x = inputs(shape, seed, np.float64)
    rng = np.random.default_rng(seed + 1)
    out = model(x)
    delta = tuple(rng.normal(size=np.shape(v)) for v in leaves(out))
    delta = delta if isinstance(out, tuple) else delta[0]

    def objective():
        return sum(float(np.sum(np.asarray(v) * d)) for v, d in
                   zip(leaves(model(x)), leaves(delta)))
    (gx,) = flux.back(model, delta, x)
    for k, p in flux.params(model).items():
        # scaled by the largest entry: with squares, entries span ten orders of magnitude and
        # the small ones carry the finite differences' rounding of the large ones
        assert_grads_close(p.grad, fd_grad(objective, p.value), rtol=1e-5, what=k)
    assert_grads_close(gx, fd_grad(objective, x), rtol=1e-5, what="input gradient")


BAD = st.one_of(
    st.tuples(st.integers(1, 3), st.integers(6, 9)).map(lambda s: np.ones(s, np.float32)),
    st.just("not numbers"), st.just([["a", "b"]]), st.just({"x": 1}), st.just(None),
    st.just(np.array([object()])),
    # a rank NumPy 2 can hold but a matmul's broadcasting cannot (NumPy 1 stops at 32 axes)
    *([st.builds(lambda: np.ones((1,) * 33 + (4,), np.float32))]
      if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else []),
)


@SETTINGS
@given(bad=BAD, step=st.booleans())
def test_bad_inputs_raise_flux_errors_and_change_no_param(bad, step):
    flux.seed(0)
    model = flux.Chain(flux.Affine(4, 3), flux.relu, flux.Affine(3, 2))
    before = {k: p.value.copy() for k, p in flux.params(model).items()}
    with pytest.raises(flux.FluxError):
        if step:
            flux.train(model, [(bad, np.zeros((1, 2), np.float32))])
        else:
            model(bad)
    for k, p in flux.params(model).items():
        np.testing.assert_array_equal(p.value, before[k])


@SETTINGS
@given(value=st.sampled_from([np.nan, np.inf, -np.inf]), at=st.integers(0, 3))
def test_a_non_finite_loss_stops_training_before_its_update(value, at):
    flux.seed(0)
    model = flux.Chain(flux.Affine(4, 3), flux.tanh)
    data = [(np.ones((2, 4), np.float32), np.zeros((2, 3), np.float32)) for _ in range(4)]
    data[at] = (np.full((2, 4), value, np.float32), data[at][1])
    snapshot = {}

    def remember():
        snapshot.update({k: p.value.copy() for k, p in flux.params(model).items()})
    remember()
    with pytest.raises(flux.FluxError, match=f"step {at + 1}"):
        flux.train(model, data, cb=remember)
    for k, p in flux.params(model).items():
        np.testing.assert_array_equal(p.value, snapshot[k])
