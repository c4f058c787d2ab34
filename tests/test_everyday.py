"""Everyday use without surprises (issue 14): what users get wrong is refused up front with an
error that says what to do, and what users of PyTorch and Keras expect works."""
import warnings

import numpy as np
import pytest

import flux
from flux import Affine, Chain, relu, softmax


def tlp():
    flux.seed(0)
    return Chain(Affine(4, 8), relu, Affine(8, 3))


X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
LABELS = np.array([0, 1, 2, 0, 1, 2])
Y = np.eye(3, dtype=np.float32)[LABELS]


# -- train and the optimisers validate what they are given --------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"data": None}, flux.FluxTypeError, "iterable of \\(x, y\\) pairs"),
    ({"loss": None}, flux.FluxTypeError, "loss= takes a function"),
    ({"loss": "mse"}, flux.FluxTypeError, "flux.mse"),
    ({"epochs": 2.5}, flux.FluxValueError, "whole number"),
    ({"epochs": -1}, flux.FluxValueError, "whole number"),
    ({"cb": [print, 3]}, flux.FluxTypeError, "callback 1"),
    ({"cb": "print"}, flux.FluxTypeError, "cb= takes a callable"),
    ({"every": 2}, flux.FluxValueError, "checkpoint="),
    ({"checkpoint": "/nonexistent-folder/run.ckpt"}, flux.FluxValueError,
     "/nonexistent-folder does not exist"),
])
def test_train_refuses_nonsense_before_any_update(kwargs, error, message):
    model = tlp()
    before = {n: np.array(p.value) for n, p in flux.params(model).items()}
    arguments = {"data": [(X, Y)] * 3, "loss": flux.mse, **kwargs}
    with pytest.raises(error, match=message):
        flux.train(model, arguments.pop("data"), **arguments)
    for name, p in flux.params(model).items():
        np.testing.assert_array_equal(p.value, before[name])


@pytest.mark.parametrize("make, error, message", [
    (lambda: flux.SGD("0.1"), flux.FluxTypeError, "lr must be a number"),
    (lambda: flux.SGD(-0.1), flux.FluxValueError, "lr must be ≥ 0"),
    (lambda: flux.SGD(float("nan")), flux.FluxValueError, "lr"),
    (lambda: flux.Momentum(0.1, rho=1), flux.FluxValueError, "rho must be in \\[0, 1\\)"),
    (lambda: flux.ADAM(beta1=1), flux.FluxValueError, "beta1 must be in \\[0, 1\\)"),
    (lambda: flux.ADAM(beta2=-0.5), flux.FluxValueError, "beta2"),
    (lambda: flux.ADAM(eps=0), flux.FluxValueError, "eps must be > 0"),
    (lambda: flux.ADAM(lr=True), flux.FluxTypeError, "lr must be a number"),
])
def test_optimisers_check_their_hyperparameters_as_pytorch_does(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_overriding_deltas_or_rule_of_sgd_is_what_train_runs():
    class Halved(flux.SGD):
        def deltas(self, params, grads):
            steps, commit = super().deltas(params, grads)
            return [s / 2 for s in steps], commit

    class HalvedRule(flux.SGD):
        def rule(self, g, slots, h, sqrt=np.sqrt):
            return g * (h["lr"] / 2), ()

    reference = tlp()
    flux.train(reference, [(X, Y)], loss=flux.mse, opt=flux.SGD(0.05))
    for opt in (Halved(0.1), HalvedRule(0.1)):
        model = tlp()
        flux.train(model, [(X, Y)], loss=flux.mse, opt=opt)
        for p, q in zip(flux.params(model).values(), flux.params(reference).values()):
            np.testing.assert_allclose(p.value, q.value, rtol=1e-6)


# -- losses, back, clip ----------------------------------------------------------------------


@pytest.mark.parametrize("loss", [flux.crossentropy, flux.logitcrossentropy])
def test_losses_take_class_indices_as_pytorch_does(loss):
    z = tlp()(X)
    ŷ = softmax(z) if loss is flux.crossentropy else z
    assert float(loss(ŷ, LABELS)) == pytest.approx(float(loss(ŷ, Y)), rel=1e-6)
    assert float(loss(ŷ[0], LABELS[0])) == pytest.approx(float(loss(ŷ[0], Y[0])), rel=1e-6)
    a, b = tlp(), tlp()
    with_labels = flux.train(a, [(X, LABELS)] * 3, loss=flux.logitcrossentropy)
    with_onehot = flux.train(b, [(X, Y)] * 3, loss=flux.logitcrossentropy)
    assert with_labels == pytest.approx(with_onehot, rel=1e-6)


def test_back_works_on_a_plain_function():
    """A plain function is a model with no parameters (the seed), `flux.back` included."""
    ŷ, y = np.array([1.0, 2.0]), np.array([0.0, 0.0])
    dŷ, dy = flux.back(flux.mse, np.float64(-1), ŷ, y)
    np.testing.assert_allclose(dŷ, -(ŷ - y))          # d mse/dŷ = (ŷ − y) for 2 elements
    np.testing.assert_allclose(dy, ŷ - y)
    (dx,) = flux.back(np.tanh, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(dx, np.ones(3))


def test_clip_passes_the_gradient_through_at_its_bounds():
    """As PyTorch's clamp and TensorFlow's clip_by_value: 1 inside and at the bounds."""
    clipped = flux.net(lambda x: np.clip(x, 0.0, 1.0))
    (dx,) = flux.back(clipped, np.ones(5), np.array([-1.0, 0.0, 0.5, 1.0, 2.0]))
    np.testing.assert_array_equal(dx, [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(clipped(np.array([np.nan, -3.0, 3.0])),
                                  np.clip(np.array([np.nan, -3.0, 3.0]), 0, 1))


# -- constructors and arrays -------------------------------------------------------------------


def test_a_chain_of_a_list_says_to_pass_the_layers():
    with pytest.raises(flux.FluxTypeError, match="pass the layers themselves"):
        Chain([Affine(2, 3), relu])


def test_a_fieldwise_constructor_given_sizes_says_to_write_an_init():
    @flux.net
    class Dense:
        W: flux.Param
        b: flux.Param

        def __call__(self, x):
            return x @ self.W + self.b

    with pytest.raises(flux.FluxTypeError, match="write an __init__"):
        Dense(64, 64)


def test_summary_without_an_input_shape_says_to_pass_one():
    with pytest.raises(flux.FluxTypeError, match="pass example inputs .* or their shapes"):
        flux.summary(tlp())


def test_np_array_of_a_param_is_a_snapshot_and_np_asarray_the_array():
    p = flux.param(np.zeros(3))
    snapshot, alias = np.array(p), np.asarray(p)
    p.value[...] = 1
    np.testing.assert_array_equal(snapshot, 0)
    np.testing.assert_array_equal(alias, 1)


# -- the compile cache, stateful unrolling, plugins ----------------------------------------------


def test_the_compile_cache_is_bounded_and_keeps_the_shapes_in_use():
    from flux.backends.compiled import MAX_SIGNATURES
    model = tlp()
    compiled = flux.compile(model)
    for n in range(1, MAX_SIGNATURES + 20):
        compiled(np.zeros((n, 4), np.float32))
        compiled(np.zeros((1, 4), np.float32))          # in use all along
    assert len(compiled._entries) <= MAX_SIGNATURES
    graph = compiled.graph(np.zeros((1, 4), np.float32))
    compiled(np.zeros((1, 4), np.float32))
    assert compiled.graph(np.zeros((1, 4), np.float32)) is graph   # not traced again


def test_a_stateful_unroll_on_a_smaller_batch_says_what_to_do():
    flux.seed(0)
    model = flux.unroll(flux.LSTM(2, 3), 4)
    model(np.zeros((8, 4, 2), np.float32))
    with pytest.raises(flux.ShapeError, match="stateful=False.*flux.reset"):
        model(np.zeros((5, 4, 2), np.float32))


# -- minibatches, callbacks with the state, early stopping, schedules ----------------------------


def test_minibatches_shuffle_every_pass_and_keep_the_last_partial_batch():
    X, Y = np.arange(20).reshape(10, 2), np.arange(10)
    data = flux.batches((X, Y), 4, shuffle=np.random.default_rng(0))
    assert len(data) == 3
    first, second = [y.tolist() for _, y in data], [y.tolist() for _, y in data]
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10)) and first != second   # a new order
    for x, y in data:
        np.testing.assert_array_equal(x[:, 0] // 2, y)                     # rows stay paired
    assert [len(y) for _, y in flux.batches((X, Y), 4, drop_last=True)] == [4, 4]
    with pytest.raises(flux.ShapeError, match="same number of rows"):
        flux.batches((X, Y[:5]), 4)
    with pytest.raises(flux.FluxTypeError, match="shuffle= takes"):
        flux.batches((X, Y), 4, shuffle="yes")


def test_one_parameter_callbacks_get_the_state_and_can_stop_training():
    events = []
    plain = []

    def watch(state):
        events.append((state.event, state.epoch, state.step, state.updates))
        if state.updates == 5:
            state.stop = True

    history = flux.train(tlp(), [(X, Y)] * 3, loss=flux.mse, epochs=4,
                         cb=[watch, lambda: plain.append(1)])
    assert events[0] == ("begin", 0, 0, 0)
    assert ("epoch", 0, 3, 3) in events and events[-1][0] == "epoch"
    assert [e for e in events if e[0] == "step"][-1] == ("step", 1, 2, 5)   # then it stopped
    assert len(history) == 2 and len(plain) == 5
    with pytest.raises(flux.FluxTypeError, match="takes no parameter or one"):
        flux.train(tlp(), [(X, Y)], loss=flux.mse, cb=lambda a, b: None)


def test_early_stopping_waits_patience_epochs_without_improvement():
    values = iter([3.0, 2.0, 2.5, 2.2, 1.0])
    stop = flux.EarlyStopping(patience=2, monitor=lambda state: next(values))
    history = flux.train(tlp(), [(X, Y)], loss=flux.mse, epochs=10, cb=stop)
    assert len(history) == 4 and stop.stopped_epoch == 4 and stop.best == 2.0
    with pytest.raises(flux.FluxValueError, match="patience"):
        flux.EarlyStopping(patience=0)


def test_schedules_set_the_learning_rate_before_every_update():
    opt = flux.SGD(1.0)
    rates = []
    flux.train(tlp(), [(X, Y)] * 5, loss=flux.mse, opt=opt,
               cb=[flux.lr_schedule(flux.step_decay(0.1, every=2, factor=0.5)),
                   lambda s: rates.append(s.opt.lr) if s.event == "step" else None])
    # after update k the rate is set for update k (counted from 0): 0.1 · 0.5^⌊k/2⌋
    assert rates == pytest.approx([0.1, 0.05, 0.05, 0.025, 0.025])
    assert flux.exponential_decay(1.0, 0.5)(3) == 0.125
    cosine = flux.cosine_decay(1.0, 10, lr_min=0.1)
    assert cosine(0) == 1.0 and cosine(10) == pytest.approx(0.1) and cosine(99) == cosine(10)
    assert [flux.warmup(0.4, 4)(t) for t in range(5)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4])


def test_a_schedule_trains_the_same_on_every_installed_backend():
    """Hyper-parameters are read at every update on every backend: the same schedule gives
    the same Params on each."""
    results = {}
    for backend in flux.backends():
        model = tlp()
        compiled = flux.compile(model, backend)
        flux.train(compiled, [(X, Y)] * 6, loss=flux.mse, opt=flux.ADAM(0.05),
                   cb=flux.lr_schedule(flux.exponential_decay(0.05, 0.5)))
        results[backend] = {n: np.array(p.value) for n, p in flux.params(model).items()}
    reference = results.pop("numpy")
    for backend, got in results.items():
        for name, value in got.items():
            np.testing.assert_allclose(value, reference[name], rtol=1e-4, atol=1e-6,
                                       err_msg=f"{backend}: {name}")


# -- gradient clipping and decoupled weight decay -------------------------------------------------


def _one_step(opt):
    """A model's Params after one update by `opt`, with the gradients it was given."""
    model = tlp()
    before = {n: np.array(p.value) for n, p in flux.params(model).items()}
    flux.back(model, np.ones((6, 3), np.float32), X)
    grads = {n: np.array(p.grad) for n, p in flux.params(model).items()}
    flux.update(model, opt)
    return before, grads, {n: np.array(p.value) for n, p in flux.params(model).items()}


def test_clip_norm_scales_all_gradients_as_torch_clip_grad_norm():
    before, grads, after = _one_step(flux.SGD(0.1, clip_norm=0.5))
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    assert norm > 0.5                                  # so the clipping matters here
    scale = min(1.0, 0.5 / (norm + 1e-6))
    for name in before:
        np.testing.assert_allclose(after[name], before[name] - 0.1 * scale * grads[name],
                                   rtol=1e-5, atol=1e-7)


def test_clip_value_clips_each_element():
    before, grads, after = _one_step(flux.SGD(0.1, clip_value=0.01))
    for name in before:
        np.testing.assert_allclose(after[name],
                                   before[name] - 0.1 * np.clip(grads[name], -0.01, 0.01),
                                   rtol=1e-6, atol=1e-8)


def test_adam_with_weight_decay_is_adamw():
    """p ← p − η (m̂/(√v̂ + ε) + λ p), with the first step's m̂ = g and v̂ = g² (as AdamW)."""
    before, grads, after = _one_step(flux.ADAM(0.01, weight_decay=0.1))
    for name in before:
        g = grads[name].astype(np.float64)
        expected = before[name] - 0.01 * (g / (np.abs(g) + 1e-8) + 0.1 * before[name])
        np.testing.assert_allclose(after[name], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: flux.SGD(0.1, clip_norm=0), "clip_norm must be > 0"),
    (lambda: flux.ADAM(clip_value=-1), "clip_value must be > 0"),
    (lambda: flux.Momentum(0.1, weight_decay=-0.1), "weight_decay must be ≥ 0"),
])
def test_the_options_are_checked(make, message):
    with pytest.raises(flux.FluxValueError, match=message):
        make()


def test_options_are_part_of_the_settings_a_checkpoint_compares():
    assert flux.ADAM(0.01).settings() == [0.01, 0.9, 0.999, 1e-8]          # unchanged
    assert flux.ADAM(0.01, weight_decay=0.1).settings()[-1] == ["weight_decay", 0.1]
    assert repr(flux.SGD(0.1, clip_norm=1.0)) == "SGD(0.1, clip_norm=1.0)"


# -- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda d: Affine(3, 2, dtype=d),
                                  lambda d: flux.unroll(flux.Recurrent(3, 2, dtype=d), 4),
                                  lambda d: flux.unroll(flux.GRU(3, 2, dtype=d), 4),
                                  lambda d: flux.unroll(flux.LSTM(3, 2, dtype=d), 4)],
                         ids=["Affine", "Recurrent", "GRU", "LSTM"])
def test_layers_take_a_dtype_and_compute_in_it(make):
    model = make(np.float64)
    assert {p.dtype for p in flux.params(model).values()} == {np.dtype(np.float64)}
    x = np.ones((2, 4, 3)) if "unroll" in repr(model) else np.ones((2, 3))
    assert model(x).dtype == np.float64
    assert flux.train(model, [(x, np.zeros_like(model(x)))], loss=flux.mse)[0] >= 0


def test_cast_gives_a_model_another_dtype_and_its_graphs_follow():
    model = tlp()
    assert model(X).dtype == np.float32
    assert flux.cast(model, np.float64) is model
    assert model(X).dtype == np.float64 and model[0].W.dtype == np.float64
    with pytest.raises(flux.FluxTypeError, match="floating dtype"):
        model[0].W.cast(np.int32)


def test_assigning_an_array_keeps_the_params_dtype_as_documented():
    p = flux.param(np.zeros(3))
    p.value = np.ones(3, np.float64)
    assert p.dtype == np.float32 and "keeps the Param's dtype" in flux.Param.value.__doc__


def test_numpy_randomness_drawn_while_tracing_is_reported():
    """np.random.* inside a forward function runs once, when the graph is traced: flux says
    so (every call would otherwise silently reuse one mask)."""
    dropout_by_hand = flux.net(lambda x: x * (np.random.rand(*x.shape) > 0.5))
    before = np.random.get_state()
    with pytest.warns(RuntimeWarning, match="drawn once.*same values") as caught:
        dropout_by_hand(np.ones(4))
    line = dropout_by_hand.fn.__code__.co_firstlineno
    assert f"{__file__}:{line}, the first operation after the draw" in str(caught[0].message)
    after = np.random.get_state()
    np.random.set_state(before)
    np.random.rand(4)           # what the trace drew; finding the line drew no more
    assert np.array_equal(np.random.get_state()[1], after[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flux.net(lambda x: x * 2)(np.ones(4))             # no randomness, no warning
