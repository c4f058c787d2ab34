"""The TensorFlow backend beyond the conformance kit: the seed's backend examples (tuples,
recurrence, stack traces, backward pass with write-back, closures), training inside TF, the
native integration (`tensor`, `keras_layer`) and errors."""
import numpy as np
import pytest
import tensorflow as tf

import flux
import flux_tf
from flux import Affine, Chain, net, softmax, σ

RNG = np.random.default_rng(0)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


@net
class TLP:
    first: object
    second: object

    def __call__(self, x):
        l1 = σ(self.first(x))
        l2 = softmax(self.second(l1))
        return l2


@net
class Pair:
    """Tuples in, tuples out."""
    a: object
    b: object

    def __call__(self, xy):
        x, y = xy
        return self.a(x) + self.b(y), self.a(x) * 2


def test_backends_lists_tf_and_shorthand_matches_the_model():
    assert "tf" in flux.backends()
    m = TLP(Affine(10, 20), Affine(20, 15))
    x = rand(4, 10)
    np.testing.assert_allclose(flux.tf(m)(x), m(x), rtol=1e-5, atol=1e-6)
    assert isinstance(flux.tf(m), flux_tf.TFCompiled)


def test_tuple_inputs_and_outputs():
    m = Pair(Affine(3, 4), Affine(5, 4))
    x, y = rand(2, 3), rand(2, 5)
    got, want = flux.tf(m)((x, y)), m((x, y))
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_recurrence_via_unroll_carries_state_and_trains():
    u = flux.unroll(flux.LSTM(3, 5), 4)
    ref = flux.unroll(flux.LSTM(3, 5), 4)
    for p, q in zip(flux.params(u).values(), flux.params(ref).values()):
        q.value = np.array(p.value)
    t = flux.tf(u)
    xs = [rand(2, 4, 3) for _ in range(2)]
    for x in xs:                                   # the second call starts from the kept state
        np.testing.assert_allclose(t(x), ref(x), rtol=1e-4, atol=1e-5)
    flux.reset(t)
    flux.reset(ref)
    y = rand(2, 4, 5)
    losses = flux.train(t, [(xs[0], y)] * 3, opt=flux.SGD(0.1))
    assert np.isfinite(losses[0])


def test_error_trace_has_model_frames():
    m = TLP(Affine(10, 20), Affine(21, 15))
    with pytest.raises(flux.ShapeError) as info:
        flux.tf(m)(rand(1, 10))
    assert [f.model for f in info.value.trace] == ["Affine", "TLP"]


def test_backward_pass_writes_back_to_params():
    m = Chain(Affine(4, 3), flux.relu, Affine(3, 2))
    ref = Chain(Affine(4, 3), flux.relu, Affine(3, 2))
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        q.value = np.array(p.value)
    x, delta = rand(5, 4), rand(5, 2)
    (gx,) = flux.back(flux.tf(m), delta, x)
    (gx_ref,) = flux.back(ref, delta, x)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-5, atol=1e-6)
    flux.update(flux.tf(m), 0.1)
    flux.update(ref, 0.1)
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6)


def test_closure_over_a_param():
    W = flux.Param(rand(3, 2))

    @net
    class Closure:
        def __call__(self, x):
            return x @ W

    m = Closure()
    x = rand(4, 3)
    t = flux.tf(m)
    np.testing.assert_allclose(t(x), x @ W.value, rtol=1e-5)
    flux.back(t, np.ones((4, 2), np.float32), x)
    np.testing.assert_allclose(W.grad, x.T @ np.ones((4, 2)), rtol=1e-5)


@pytest.mark.parametrize("opt", [flux.SGD(0.1), flux.Momentum(0.05, 0.9), flux.ADAM(0.01)],
                         ids=["SGD", "Momentum", "ADAM"])
def test_train_in_tf_matches_numpy_and_writes_back(opt):
    import copy
    m = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    ref = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        q.value = np.array(p.value)
    data = [(rand(6, 4), rand(6, 2)), (rand(4), rand(2))] * 3
    got = flux.train(flux.tf(m), data, opt=opt, epochs=2)
    want = flux.train(ref, data, opt=copy.deepcopy(opt), epochs=2)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-5)


def test_a_param_changed_by_the_user_is_seen():
    m = Affine(3, 2)
    t = flux.tf(m)
    x = rand(3)
    t(x)
    m.W.value = np.zeros((3, 2), np.float32)
    np.testing.assert_allclose(t(x), m.b.value, rtol=1e-6)
    m.b.value[...] = 7
    np.testing.assert_allclose(t(x), np.full(2, 7, np.float32))


def test_non_finite_loss_stops_training_without_updating():
    m = Affine(2, 1)
    before = np.array(m.W.value)
    with pytest.raises(flux.FluxError, match="loss is nan"):
        flux.train(flux.tf(m), [(rand(2), np.array([np.nan], np.float32))])
    np.testing.assert_array_equal(m.W.value, before)


def test_jit_compile_option_and_unknown_options():
    m = Chain(Affine(4, 3), flux.tanh)
    x = rand(2, 4)
    np.testing.assert_allclose(flux.compile(m, "tf", jit_compile=True)(x), m(x),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="jit_compile"):
        flux.compile(m, "tf", precision="high")


def test_the_device_option_places_variables_and_is_checked():
    m = Chain(Affine(4, 3), flux.tanh)
    x = rand(2, 4)
    t = flux.compile(m, "tf", device="cpu")
    np.testing.assert_allclose(t(x), m(x), rtol=1e-5, atol=1e-6)
    flux.train(t, [(x, rand(2, 3))], opt=flux.Momentum(0.1))
    assert all(v.device.endswith("CPU:0") for v in flux_tf.variables(m) + [
        rec.array for rec in t.variables._records.values()])
    with pytest.raises(flux.BackendError, match="no device /GPU:7"):
        flux.compile(m, "tf", device="gpu:7")
    with pytest.raises(flux.FluxValueError, match="device="):
        flux.compile(m, "tf", device="the fast one")


def test_tensor_eager_and_in_tf_function_with_gradient_tape():
    m = Chain(Affine(4, 3), flux.relu, Affine(3, 2))
    x = rand(5, 4)
    y = flux_tf.tensor(m, tf.constant(x))
    assert isinstance(y, tf.Tensor)
    np.testing.assert_allclose(y.numpy(), m(x), rtol=1e-5, atol=1e-6)
    variables = flux_tf.variables(m)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(flux_tf.tensor(m, tf.constant(x)))
    grads = tape.gradient(loss, variables)
    assert all(g is not None for g in grads)
    flux.back(m, np.ones((5, 2), np.float32), x)
    for g, p in zip(grads, flux.params(m).values()):
        np.testing.assert_allclose(g.numpy(), p.grad, rtol=1e-5, atol=1e-6)

    f = tf.function(lambda t: flux_tf.tensor(m, t) * 2)
    np.testing.assert_allclose(f(tf.constant(x)).numpy(), 2 * m(x), rtol=1e-5, atol=1e-6)
    variables[0].assign_sub(tf.ones_like(variables[0]))
    flux_tf.write_back(m)
    np.testing.assert_allclose(flux.params(m)["layers.0.W"].value, variables[0].numpy())


def test_keras_layer_in_sequential_fit_and_write_back():
    keras = pytest.importorskip("keras")
    m = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    layer = flux_tf.keras_layer(m)
    assert len(layer.trainable_weights) == 4
    x, y = rand(32, 4), rand(32, 2)
    np.testing.assert_allclose(np.asarray(layer(tf.constant(x))), m(x), rtol=1e-5, atol=1e-6)
    model = keras.Sequential([keras.Input((4,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[layer.write_back_callback()])
    after = model.evaluate(x, y, verbose=0)
    assert after < before
    np.testing.assert_allclose(m(x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


def test_tf_error_is_a_backend_error_with_model_frames():
    m = TLP(Affine(3, 4), Affine(4, 2))
    x = rand(2, 3)
    m.first.W.value[...] = np.nan
    t = flux.compile(m, "tf", check_numerics=True)
    with pytest.raises(flux.BackendError) as info:
        t(x)
    error = info.value
    assert isinstance(error.__cause__, tf.errors.InvalidArgumentError)
    assert error.trace and error.trace[0].model == "Affine" and error.trace[-1].model == "TLP"


def test_bad_inputs_are_flux_errors():
    t = flux.tf(Affine(3, 2))
    with pytest.raises(flux.FluxError):
        t(np.array(["a", "b", "c"]))
    with pytest.raises(flux.FluxError):
        t(object())
    with pytest.raises(flux.ShapeError):
        t(np.ones((2, 2, 5), np.float32))


def test_a_numpy_function_the_backend_cannot_take_names_it_the_backend_and_the_line():
    @net
    class Decomposed:
        def __init__(self):
            self.W = flux.param(np.eye(3))

        def __call__(self, x):
            return np.linalg.svd(x @ self.W)[0]

    with pytest.raises(flux.TraceError) as info:
        flux.tf(Decomposed())(rand(3, 3))
    message = str(info.value)
    assert "np.linalg.svd" in message and "tf backend" in message
    assert f"{__file__}:" in message


def counting_fetches(monkeypatch):
    calls = []
    fetch = flux_tf.Variables.fetch

    def counted(self, p):
        calls.append(p)
        return fetch(self, p)
    monkeypatch.setattr(flux_tf.Variables, "fetch", counted)
    return calls


def test_training_copies_nothing_back_until_a_param_is_read(monkeypatch):
    fetches = counting_fetches(monkeypatch)
    m = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    ref = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    kept = []
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        q.value = np.array(p.value)
        kept.append(p.value)             # arrays handed out before training
    data = [(rand(6, 4), rand(6, 2))] * 5
    flux.train(flux.tf(m), data, opt=flux.SGD(0.1))
    assert fetches == []
    flux.train(ref, data, opt=flux.SGD(0.1))
    for p, q, array in zip(flux.params(m).values(), flux.params(ref).values(), kept):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6)
        assert p.value is array          # refreshed in place when read
    assert len(fetches) == 4


def test_two_compiled_copies_see_each_others_training():
    m = Affine(3, 2)
    a, b = flux.tf(m), flux.compile(m, "tf")
    x, y = rand(4, 3), rand(4, 2)
    b(x)                                 # b's variables hold the initial values
    flux.train(a, [(x, y)] * 3, opt=flux.SGD(0.1))
    np.testing.assert_allclose(b(x), a(x), rtol=1e-6)
    flux.train(b, [(x, y)] * 3, opt=flux.SGD(0.1))
    np.testing.assert_allclose(a(x), b(x), rtol=1e-6)
    np.testing.assert_allclose(m(x), b(x), rtol=1e-5, atol=1e-6)


def test_numpy_updates_after_tf_training_start_from_the_trained_values(tmp_path):
    m = Affine(3, 2)
    t = flux.tf(m)
    x, y = rand(4, 3), rand(4, 2)
    flux.train(t, [(x, y)] * 3, opt=flux.SGD(0.1))
    trained = t(x)
    flux.save(m, tmp_path / "m.npz")     # saves the trained values
    flux.back(m, np.ones((4, 2), np.float32), x)
    grad = m.W.grad.copy()
    W = np.array(t.variables.fetch(m.W))
    flux.update(m, flux.SGD(0.5))
    np.testing.assert_allclose(m.W.value, W - 0.5 * grad, rtol=1e-5, atol=1e-6)
    assert not np.allclose(t(x), trained)          # tf sees the NumPy update
    np.testing.assert_allclose(t(x), m(x), rtol=1e-5, atol=1e-6)
    fresh = Affine(3, 2)
    flux.load(fresh, tmp_path / "m.npz")
    np.testing.assert_allclose(fresh(x), trained, rtol=1e-5, atol=1e-6)


def twins():
    """A small model and a NumPy-trained twin with the same starting values."""
    m = Chain(Affine(4, 8), flux.tanh, Affine(8, 2))
    ref = Chain(Affine(4, 8), flux.tanh, Affine(8, 2))
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        q.value = np.array(p.value)
    return m, ref


def test_keras_saving_round_trip_with_the_model_given_back(tmp_path):
    keras = pytest.importorskip("keras")
    m = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    layer = flux_tf.keras_layer(m, name="flux_mlp")
    model = keras.Sequential([keras.Input((4,)), layer, keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = rand(16, 4), rand(16, 3)
    model.fit(x, y, epochs=3, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    expected = model.predict(x, verbose=0)

    fresh = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    loaded = keras.models.load_model(path, custom_objects=flux_tf.keras_objects(fresh))
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    layer.write_back()
    np.testing.assert_allclose(fresh(x), m(x), rtol=1e-6)     # the Params got the weights

    named = Chain(Affine(4, 8), flux.relu, Affine(8, 2))
    keras.models.load_model(path, custom_objects=flux_tf.keras_objects(flux_mlp=named))
    np.testing.assert_allclose(named(x), m(x), rtol=1e-6)

    with pytest.raises(Exception, match="FluxLayer"):          # Keras: class not found
        keras.models.load_model(path)
    wrong = Chain(Affine(4, 5), flux.relu, Affine(5, 2))
    with pytest.raises(flux.FluxError, match=r"layers.0.W: \(4, 8\)"):
        keras.models.load_model(path, custom_objects=flux_tf.keras_objects(wrong))


def test_keras_load_weights_writes_into_the_params(tmp_path):
    keras = pytest.importorskip("keras")
    m = Affine(3, 2)
    model = keras.Sequential([keras.Input((3,)), flux_tf.keras_layer(m)])
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    saved = np.array(m.W.value)
    m.W.value = np.zeros((3, 2), np.float32)
    model.load_weights(path)
    np.testing.assert_array_equal(m.W.value, saved)


@pytest.mark.parametrize("make", [lambda: flux.SGD(0.1), lambda: flux.Momentum(0.05, 0.9),
                                  lambda: flux.ADAM(0.01)], ids=["SGD", "Momentum", "ADAM"])
def test_update_on_a_tf_model_runs_the_optimiser_in_tf(make, monkeypatch):
    m, ref = twins()
    x = rand(6, 4)
    opt, ref_opt = make(), make()
    t = flux.tf(m)
    for _ in range(3):
        flux.back(ref, np.ones((6, 2), np.float32), x)
        flux.update(ref, ref_opt)
    monkeypatch.setattr(type(opt), "apply", lambda *a: pytest.fail("updated in NumPy"))
    for _ in range(3):
        flux.back(t, np.ones((6, 2), np.float32), x)
        flux.update(t, opt)
        assert all(p._grad is None for p in flux.params(m).values())    # cleared
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t(x), ref(x), rtol=1e-5, atol=1e-6)


def test_a_model_trained_on_tf_copies_and_pickles_with_its_trained_values():
    import copy
    import pickle
    m, _ = twins()
    opt = flux.ADAM(0.01)
    x, y = rand(6, 4), rand(6, 2)
    t = flux.tf(m)
    flux.train(t, [(x, y)] * 3, opt=opt)
    trained = t(x)
    np.testing.assert_allclose(copy.deepcopy(m)(x), trained, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(m))(x), trained, rtol=1e-5, atol=1e-6)
    twin = copy.deepcopy(opt)                 # the TF-side moments come along
    assert sorted(twin.state_arrays({id(p): n for n, p in flux.params(m).items()}))


def test_a_transposed_matmul_plus_a_row_of_bias_runs():
    """TF's graph optimiser fuses MatMul + Add into a kernel that takes a vector bias and fails
    at run time on a (1, n) one (ONNX's Gemm with transA gives this graph): flux-tf passes the
    row as a vector."""
    model = net(lambda a, b, c: a.T @ b + c)
    args = [RNG.normal(size=s).astype(np.float32) for s in [(5, 3), (5, 4), (1, 4)]]
    np.testing.assert_allclose(flux.tf(model)(*args), model(*args), rtol=1e-5, atol=1e-6)
    delta = np.ones((3, 4), np.float32)
    *_, dc = flux.back(flux.tf(model), delta, *args)
    np.testing.assert_allclose(dc, delta.sum(0, keepdims=True), rtol=1e-5)


def test_a_broadcast_to_eight_axes_runs():
    """TF's BroadcastTo handles at most 5 axes; flux-tf tiles beyond (ONNX's Tile node test
    broadcasts (1, 2, 1, 3, 1, 4, 1, 5))."""
    x = RNG.normal(size=(1, 2, 1, 3, 1, 4, 1, 5)).astype(np.float32)
    model = net(lambda x: np.broadcast_to(x, (2, 2, 2, 3, 2, 4, 2, 5)) * 2)
    np.testing.assert_allclose(flux.tf(model)(x), model(x))
    (dx,) = flux.back(flux.tf(model), np.ones((2, 2, 2, 3, 2, 4, 2, 5), np.float32), x)
    np.testing.assert_allclose(dx, np.full(x.shape, 32.0))
