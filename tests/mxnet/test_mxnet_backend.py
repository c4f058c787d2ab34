"""The MXNet backend beyond the conformance kit: the seed's backend examples, executors kept in
sync across shapes, the native Symbol/Module integration and MXNet errors as BackendErrors."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, net, param, unroll

mx = pytest.importorskip("mxnet")
flux_mxnet = pytest.importorskip("flux_mxnet")

RTOL, ATOL = 1e-5, 1e-6


def f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def mlp(seed=0):
    flux.seed(seed)
    return Chain(Affine(4, 8), flux.relu, Affine(8, 3))


# -- calling: the seed's backend examples ---------------------------------------------------------


def test_shorthand_and_compile_give_the_models_results():
    m = mlp()
    x = f32(5, 4)
    for compiled in (flux.mxnet(m), flux.compile(m, backend="mxnet", ctx=mx.cpu())):
        assert isinstance(compiled, flux_mxnet.MXNetCompiled)
        np.testing.assert_allclose(compiled(x), m(x), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(compiled(x[0]), m(x[0]), rtol=RTOL, atol=ATOL)   # one point
    assert "mxnet" in flux.backends()


def test_an_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="ctx"):
        flux.mxnet(mlp(), precision="high")


def test_tuple_inputs_and_outputs():
    @net
    class Two:
        a: Affine

        def __call__(self, x, y):
            h = self.a(x)
            return h * y, (h + y).sum(axis=-1)

    m = Two(Affine(3, 2))
    x, y = f32(4, 3, seed=1), f32(4, 2, seed=2)
    got, want = flux.mxnet(m)(x, y), m(x, y)
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_recurrence_via_unroll_carries_state_and_trains(monkeypatch):
    flux.seed(3)
    u = unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5)
    c = flux.mxnet(u)
    x = f32(2, 5, 3, seed=4)
    ref = unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5)
    for (_, p), (_, q) in zip(sorted(flux.params(u).items()), sorted(flux.params(ref).items())):
        q.value = p.value.copy()
    np.testing.assert_allclose(c(x), ref(x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c(x), ref(x), rtol=1e-4, atol=1e-5)   # state carried alike
    flux.reset(u), flux.reset(ref)
    y = f32(2, 5, 2, seed=5)
    data = [(x, y), (x[:, ::-1], y)] * 2              # the state carries across the steps
    with monkeypatch.context() as patch:          # the update runs in MXNet, not NumPy
        patch.setattr(flux.Momentum, "apply", lambda *a: pytest.fail("updated in NumPy"))
        got = flux.train(c, data, opt=flux.Momentum(0.05, 0.9), epochs=2)
    want = flux.train(ref, data, opt=flux.Momentum(0.05, 0.9), epochs=2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for (_, p), (_, q) in zip(sorted(flux.params(u).items()), sorted(flux.params(ref).items())):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c(x), ref(x), rtol=1e-4, atol=1e-5)   # and the final state


def test_backward_pass_writes_back_into_the_original_params():
    m = mlp(1)
    c = flux.mxnet(m)
    x, Δ = f32(5, 4, seed=2), f32(5, 3, seed=3)
    (dx,) = flux.back(c, Δ, x)
    grads = {k: p.grad.copy() for k, p in flux.params(m).items()}
    for p in flux.params(m).values():
        p.zero_grad()
    (dx_np,) = flux.back(m, Δ, x)
    np.testing.assert_allclose(dx, dx_np, rtol=1e-4, atol=1e-5)
    for k, p in flux.params(m).items():
        np.testing.assert_allclose(grads[k], p.grad, rtol=1e-4, atol=1e-5)
    before = {k: p.value.copy() for k, p in flux.params(m).items()}
    flux.update(c, 0.1)
    for k, p in flux.params(m).items():
        np.testing.assert_allclose(p.value, before[k] - 0.1 * grads[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c(x), m(x), rtol=RTOL, atol=ATOL)     # the executor sees them


def test_train_updates_the_original_model():
    m = mlp(2)
    c = flux.mxnet(m)
    x, y = f32(8, 4, seed=1), f32(8, 3, seed=2)
    before = m.layers[0].W.value.copy()
    losses = flux.train(c, [(x, y)] * 20, opt=flux.SGD(0.05))
    assert not np.allclose(m.layers[0].W.value, before)
    assert flux.mse(m(x), y) < losses[0]


@pytest.mark.parametrize("opt", [flux.SGD(0.1), flux.Momentum(0.05, 0.9), flux.ADAM(0.01)],
                         ids=["SGD", "Momentum", "ADAM"])
def test_train_and_update_run_the_optimiser_in_mxnet(opt, monkeypatch):
    m, ref = mlp(3), mlp(3)
    c = flux.mxnet(m)
    x, y = f32(8, 4, seed=1), f32(8, 3, seed=2)
    monkeypatch.setattr(type(opt), "apply", lambda *a: pytest.fail("updated in NumPy"))
    flux.train(c, [(x, y)] * 3, opt=opt)
    flux.back(c, np.ones((8, 3), np.float32), x)
    flux.update(c, opt)
    monkeypatch.undo()
    ref_opt = type(opt)(*opt.settings())
    flux.train(ref, [(x, y)] * 3, opt=ref_opt)
    flux.back(ref, np.ones((8, 3), np.float32), x)
    flux.update(ref, ref_opt)
    for p, q in zip(flux.params(m).values(), flux.params(ref).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-5, atol=1e-6)


def test_training_copies_nothing_back_until_a_param_is_read(monkeypatch):
    fetched = []
    fetch = flux_mxnet.ParamStore.fetch
    monkeypatch.setattr(flux_mxnet.ParamStore, "fetch",
                        lambda self, p: fetched.append(p) or fetch(self, p))
    m = mlp(4)
    kept = m.layers[0].W.value
    flux.train(flux.mxnet(m), [(f32(8, 4), f32(8, 3))] * 4, opt=flux.SGD(0.1))
    assert fetched == []
    assert m.layers[0].W.value is kept and len(fetched) == 1


def test_the_ctx_option_is_checked_when_compiling():
    m = mlp()
    x = f32(2, 4)
    np.testing.assert_allclose(flux.compile(m, "mxnet", ctx=mx.cpu(0))(x), m(x),
                               rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(flux.compile(m, "mxnet", device="cpu")(x), m(x),
                               rtol=RTOL, atol=ATOL)
    with pytest.raises(flux.FluxTypeError, match="mx.Context"):
        flux.compile(m, "mxnet", ctx="tpu")
    with pytest.raises(TypeError, match="not both"):
        flux.compile(m, "mxnet", ctx=mx.cpu(), device="cpu")
    if mx.context.num_gpus() == 0:
        with pytest.raises(flux.BackendError, match="gpu\\(0\\) cannot be used"):
            flux.compile(m, "mxnet", ctx=mx.gpu(0))
        with pytest.raises(flux.BackendError, match="gpu\\(1\\) cannot be used"):
            flux.compile(m, "mxnet", device="gpu:1")


def test_a_closure_over_a_param():
    W = param(f32(3, 2, seed=1))

    @net
    class Closure:
        def __call__(self, x):
            return np.tanh(x @ W)

    m = Closure()
    x, Δ = f32(4, 3, seed=2), f32(4, 2, seed=3)
    np.testing.assert_allclose(flux.mxnet(m)(x), m(x), rtol=RTOL, atol=ATOL)
    flux.back(flux.mxnet(m), Δ, x)
    h = np.tanh(x @ W.value)
    np.testing.assert_allclose(W.grad, x.T @ (Δ * (1 - h * h)), rtol=1e-4, atol=1e-5)


def test_a_param_shared_by_two_layers_is_one_variable():
    a = Affine(3, 3)
    m = Chain(a, flux.tanh, a)
    sym, arg_params = flux_mxnet.symbol(m, (2, 3))
    assert sorted(sym.list_arguments()) == sorted(["data", "layers.0.W", "layers.0.b"])
    x, Δ = f32(2, 3, seed=1), f32(2, 3, seed=2)
    c = flux.mxnet(m)
    np.testing.assert_allclose(c(x), m(x), rtol=RTOL, atol=ATOL)
    flux.back(c, Δ, x)
    got = a.W.grad.copy()
    a.W.zero_grad(), a.b.zero_grad()
    flux.back(m, Δ, x)
    np.testing.assert_allclose(got, a.W.grad, rtol=1e-4, atol=1e-5)


# -- executors and parameters ---------------------------------------------------------------------


def test_executors_for_two_shapes_stay_in_sync_after_an_update():
    m = mlp(3)
    c = flux.mxnet(m)
    x5, x7 = f32(5, 4, seed=1), f32(7, 4, seed=2)
    c(x5), c(x7)                               # two executors, bound and cached
    flux.train(c, [(x5, f32(5, 3, seed=3))], opt=flux.SGD(0.5))
    np.testing.assert_allclose(c(x7), m(x7), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c(x5), m(x5), rtol=RTOL, atol=ATOL)
    m.layers[2].b.value = np.ones(3, np.float32)                   # assigned
    np.testing.assert_allclose(c(x7), m(x7), rtol=RTOL, atol=ATOL)
    m.layers[0].W.value[...] += 1                                  # written in place
    np.testing.assert_allclose(c(x5), m(x5), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c(x7), m(x7), rtol=RTOL, atol=ATOL)


def test_float64_and_integer_inputs_are_converted():
    m = mlp(4)
    c = flux.mxnet(m)
    x = f32(3, 4, seed=1)
    np.testing.assert_allclose(c(x.astype(np.float64)), m(x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(c(np.arange(12).reshape(3, 4)), m(np.arange(12).reshape(3, 4)),
                               rtol=RTOL, atol=1e-5)


def test_scalar_inputs_and_outputs():
    m = flux.net(lambda x, y: np.sum(x * y) + 1)
    got = flux.mxnet(m)(np.float32(2), np.float32(3))
    assert np.shape(got) == () and got == 7


# -- native integration ---------------------------------------------------------------------------


def test_symbol_names_shapes_and_values():
    m = mlp(5)
    sym, arg_params = flux_mxnet.symbol(m, (6, 4))
    assert sym.list_arguments()[0] == "data"
    assert {k: v.shape for k, v in arg_params.items()} == {
        k: p.shape for k, p in flux.params(m).items()}
    arg_shapes, out_shapes, _ = sym.infer_shape(data=(6, 4))
    assert out_shapes == [flux.infer(m, (6, 4))]
    x = f32(6, 4, seed=1)
    ex = sym.bind(mx.cpu(), args=dict(arg_params, data=mx.nd.array(x)))
    np.testing.assert_allclose(ex.forward()[0].asnumpy(), m(x), rtol=RTOL, atol=ATOL)


def test_symbol_of_several_inputs_names_them_data0_data1():
    m = flux.net(lambda x, y: x * y + x)
    sym, _ = flux_mxnet.symbol(m, (2, 3), (2, 3))
    assert sym.list_arguments() == ["data0", "data1"]


FIT_WARNING = "ignore:Parameters already initialized:UserWarning"   # fit's own init_params


@net
class Slices:
    """Slices, Nones, Ellipsis and a where on batches: the generic Symbol's index rules."""

    a: Affine
    input_shape = (6,)

    def __init__(self):
        self.a = Affine(6, 4)

    def __call__(self, x):
        h = self.a(x)
        picked = np.concatenate([h[:, :2] * 2, h[:, None, 3].reshape(-1, 1), h[..., 1:2]], 1)
        return picked + np.where(h > 0, h, 0.0)[:, ::-1] + h[0]


def _forward(sym, arg_params, x):
    ex = sym.simple_bind(mx.cpu(), grad_req="null", data=x.shape)
    for name, value in arg_params.items():
        ex.arg_dict[name][:] = value
    ex.arg_dict["data"][:] = x
    return ex.forward(is_train=False)[0].asnumpy()


@pytest.mark.parametrize("make", [
    lambda: mlp(3),
    lambda: unroll(Chain(flux.LSTM(4, 5), Affine(5, 2)), 7, stateful=False),
    lambda: unroll(flux.GRU(3, 4), 5),
    lambda: flux.mxnet(unroll(Chain(flux.Recurrent(3, 2), np.tanh), 4, stateful=False)),
    Slices,
], ids=["mlp", "lstm-seq", "gru-stateful", "compiled-recurrent", "slices"])
def test_symbol_without_inputs_serves_every_batch_size(make):
    m = make()
    sym, arg_params = flux_mxnet.symbol(m)
    point = flux.backends.input_shape(m)
    assert sym.infer_shape(data=(13,) + point)[1][0] == (13,) + flux.infer(m, (1,) + point)[1:]
    for n in (1, 4, 9):
        x = f32(n, *point, seed=n)
        flux.reset(m) if hasattr(m, "stateful") else None
        np.testing.assert_allclose(_forward(sym, arg_params, x), m(x), rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings(FIT_WARNING)
def test_a_module_of_the_batch_free_symbol_fits_any_batch_size():
    m = mlp(9)
    sym, arg_params = flux_mxnet.symbol(m)
    x = f32(60, 4, seed=1)
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 1] > 0)
    mod = mx.mod.Module(mx.sym.SoftmaxOutput(sym, mx.sym.Variable("label"), name="output"),
                        label_names=["label"], context=mx.cpu())
    losses = []
    for batch in (12, 20, 30):         # one Symbol, bound for each batch size in turn
        it = mx.io.NDArrayIter(x, y, batch_size=batch, label_name="label")
        mod.fit(it, num_epoch=3, arg_params=arg_params, optimizer="sgd", force_rebind=True,
                optimizer_params={"learning_rate": 0.2}, force_init=True)
        losses.append(mod.score(it, "ce")[0][1])
        arg_params = mod.get_params()[0]
    assert losses[0] > losses[1] > losses[2]
    flux_mxnet.set_params(m, arg_params)
    np.testing.assert_allclose(flux.softmax(m(x)), mod.predict(it).asnumpy(), rtol=1e-4,
                               atol=1e-5)


def test_symbol_without_inputs_says_what_it_needs():
    @net
    def centred(x):
        return x - np.mean(x, axis=0)

    with pytest.raises(flux.FluxValueError, match=r"centred does not determine the shape of "
                                                  r"its input.*symbol\(model, \(32, 10\)\)"):
        flux_mxnet.symbol(centred)
    with pytest.raises(flux.FluxValueError, match="not the same for every batch size") as info:
        flux_mxnet.symbol(Chain(Affine(3, 2), centred))
    assert "a mean or count over the batch" in str(info.value)
    assert any(f.file == __file__ for f in info.value.trace)            # the user's line
    with pytest.raises(flux.FluxValueError, match="bound for one batch size"):
        flux_mxnet.module(mlp())


@pytest.mark.filterwarnings(FIT_WARNING)
def test_module_fits_one_epoch_with_an_ndarray_iter():
    m = mlp(6)
    x = f32(40, 4, seed=1)
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 1] > 0)            # classes 0, 1, 2
    mod = flux_mxnet.module(m, (10, 4), loss="softmax")
    np.testing.assert_allclose(mod.get_params()[0]["layers.0.W"].asnumpy(),
                               m.layers[0].W.value)
    it = mx.io.NDArrayIter(x, y, batch_size=10)
    before = mod.score(it, "ce")[0][1]
    it.reset()
    mod.fit(it, num_epoch=1, optimizer="sgd", optimizer_params={"learning_rate": 0.5})
    it.reset()
    assert mod.score(it, "ce")[0][1] < before
    flux_mxnet.set_params(m, mod.get_params()[0])
    np.testing.assert_allclose(m.layers[0].W.value,
                               mod.get_params()[0]["layers.0.W"].asnumpy())


@pytest.mark.filterwarnings(FIT_WARNING)
@pytest.mark.parametrize("kvstore", ["local", "device", "kvstore object"])
def test_module_fits_through_a_kvstore(kvstore):
    m = mlp(8)
    x = f32(40, 4, seed=3)
    y = (x[:, 0] > 0).astype(np.float32) + (x[:, 2] > 0)
    mod = flux_mxnet.module(m, (10, 4), loss="softmax")
    store = mx.kv.create("local") if kvstore == "kvstore object" else kvstore
    it = mx.io.NDArrayIter(x, y, batch_size=10)
    before = mod.score(it, "ce")[0][1]
    it.reset()
    mod.fit(it, num_epoch=3, kvstore=store, optimizer="sgd",
            optimizer_params={"learning_rate": 0.5})
    it.reset()
    assert mod.score(it, "ce")[0][1] < before
    flux_mxnet.set_params(m, mod.get_params()[0])
    it.reset()
    logits = mod.predict(it).asnumpy()
    np.testing.assert_allclose(flux.softmax(m(x)), logits, rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings(FIT_WARNING)
def test_module_mse_regression():
    m = mlp(7)
    mod = flux_mxnet.module(m, (8, 4), loss="mse")
    x, y = f32(16, 4, seed=1), f32(16, 3, seed=2)
    mod.fit(mx.io.NDArrayIter(x, y, batch_size=8, label_name="label"), num_epoch=1)
    with pytest.raises(flux.FluxValueError, match="loss"):
        flux_mxnet.module(m, (8, 4), loss="hinge")


# -- errors ---------------------------------------------------------------------------------------


def test_an_mxnet_error_is_a_backend_error_at_the_equation(monkeypatch):
    from flux.ir import primitives as P
    from flux_mxnet import _symbol

    def broken(r, x):       # a lowering that MXNet's own shape inference rejects
        return mx.sym.dot(x, x, name=r.name)         # (4, 2) . (4, 2)

    monkeypatch.setitem(_symbol.RULES, P.tanh_p, broken)

    @net
    class Tanh:
        a: Affine

        def __call__(self, x):
            return np.tanh(self.a(x))  # the tanh line

    m = Tanh(Affine(3, 2))
    with pytest.raises(flux.BackendError) as info:
        flux.mxnet(m)(f32(4, 3))
    error = info.value
    assert "tanh" in str(error) and isinstance(error.__cause__, mx.base.MXNetError)
    assert error.trace and error.trace[0].model == "Tanh"
    assert "the tanh line" in open(error.trace[0].file).read().splitlines()[error.trace[0].line - 1]


def test_a_shape_error_is_found_before_mxnet_runs():
    with pytest.raises(flux.ShapeError):
        flux.mxnet(mlp())(f32(3, 5))


def test_a_numpy_function_the_backend_cannot_take_names_it_the_backend_and_the_line():
    @net
    class Sorted:
        def __init__(self):
            self.W = param(np.eye(3))

        def __call__(self, x):
            return np.sort(x @ self.W)

    with pytest.raises(flux.TraceError) as info:
        flux.mxnet(Sorted())(f32(3, 3))
    message = str(info.value)
    assert "np.sort" in message and "mxnet backend" in message
    assert f"{__file__}:" in message


OUT_OF_MEMORY = """
import numpy as np, flux
from flux import net

@net
class Outer:
    def __call__(self, x):
        return x @ x.T

try:
    flux.mxnet(Outer())(np.zeros((300000, 2), np.float32))
except flux.BackendError as error:
    print("FIRST:", str(error).splitlines()[0])
    print("FRAME:", error.trace[0].model if error.trace else None)
"""


def test_out_of_memory_in_mxnet_is_a_backend_error_with_its_message_and_the_model_frame():
    """MXNet refusing a 360 GB result (too large to allocate, or to index with its 32-bit
    sizes) keeps MXNet's real message, not the first line of its C++ traceback, and points at
    the model. (In a subprocess: MXNet's engine reports the failure again at exit.)"""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True,
                         timeout=120)
    first = next(line for line in run.stdout.splitlines() if line.startswith("FIRST:"))
    assert "Traceback" not in first and ("Failed to allocate" in first or "Check failed" in first)
    assert "FRAME: Outer" in run.stdout
