"""flux-cupy beyond the kit: what gets fused, the generated CUDA against NVRTC and against
the NumPy form it is generated beside, the GPU-side training step, and bad input."""
import os

import numpy as np
import pytest

import flux
import flux_cupy
from flux import Affine, Chain, LSTM, relu, softmax, unroll
from flux.testing import CASES, PRIMITIVE_CASES

STANDIN = os.environ.get("FLUX_CUPY_STANDIN", "") == "numpy"
try:
    from cupy_backends.cuda.libs import nvrtc  # noqa: F401
    HAVE_NVRTC = True
except ImportError:
    HAVE_NVRTC = False
needs_nvrtc = pytest.mark.skipif(not HAVE_NVRTC, reason="NVRTC is not installed "
                                 "(pip install cupy-cuda12x nvidia-cuda-nvrtc-cu12)")


def mlp():
    flux.seed(0)
    return Chain(Affine(64, 128), relu, Affine(128, 10), softmax)


def groups(graph):
    return [s for s in flux_cupy.schedule(graph) if isinstance(s, flux_cupy.Group)]


def test_an_mlp_forward_is_two_matmuls_and_three_kernels():
    """x @ W + b then relu is one kernel; the last bias add and softmax's elementwise parts
    fuse, with the reductions of softmax as CuPy calls in between."""
    model = mlp()
    graph = flux.cupy(model).graph(np.zeros((32, 64), np.float32))
    steps = flux_cupy.schedule(graph)
    kinds = [s.prim.name if not isinstance(s, flux_cupy.Group) else "kernel" for s in steps]
    assert kinds.count("matmul") == 2
    assert len(graph.eqns) - sum(len(g.eqns) for g in groups(graph)) == len(steps) - len(
        groups(graph))
    first = groups(graph)[0]
    assert [e.prim.name for e in first.eqns] == ["add", "relu"]     # one kernel, one write
    assert len(first.outputs) == 1


def test_an_unrolled_lstm_step_fuses_its_gates():
    flux.seed(0)
    model = unroll(LSTM(8, 16), 5, stateful=False)
    graph = flux.cupy(model).graph(np.zeros((4, 5, 8), np.float32))
    (loop,) = [e for e in graph.eqns if e.prim.name == "scan"]
    big = max(len(g.eqns) for g in groups(loop.attrs["body"]))
    assert big >= 10            # the gate nonlinearities and the state update in one kernel


@needs_nvrtc
@pytest.mark.parametrize("case", CASES + PRIMITIVE_CASES, ids=lambda c: c.name)
def test_every_kernel_for_the_kit_compiles_with_nvrtc(case):
    """Forward, `back` and training-step graphs of every kit model: each generated kernel
    compiles to PTX (the conformance run compiles them too, as they are made)."""
    model, _ = case.build()
    compiled = flux.cupy(model)
    inputs = case.make_inputs()
    graphs = [compiled.graph(*inputs)]
    if case.differentiable:
        graphs.append(flux.backends.vjp(graphs[0]))
    for graph in graphs:
        for i, source in enumerate(flux_cupy.kernel_sources(graph)):
            assert ".version" in flux_cupy.nvrtc_compile(source, f"flux_k{i}")


@needs_nvrtc
def test_kernels_of_the_examples_compile():
    """The digits demo's model and the char-rnn model, forward and training step."""
    flux.seed(0)
    for model, x, y in [
            (Chain(Affine(64, 128), relu, Affine(128, 10)), np.zeros((32, 64), np.float32),
             np.zeros((32, 10), np.float32)),
            (unroll(Chain(LSTM(20, 32), Affine(32, 20)), 6), np.zeros((4, 6, 20), np.float32),
             np.zeros((4, 6, 20), np.float32))]:
        compiled = flux.cupy(model)
        step, _ = compiled.training_step(flux.logitcrossentropy, x, y)
        for graph in (compiled.graph(x), step.graph):
            sources = flux_cupy.kernel_sources(graph)
            assert sources
            for i, source in enumerate(sources):
                flux_cupy.nvrtc_compile(source, f"flux_k{i}")


@needs_nvrtc
def test_a_kernel_that_does_not_compile_is_a_backend_error_with_nvrtcs_log():
    with pytest.raises(flux.BackendError, match="does not compile") as info:
        flux_cupy.nvrtc_compile('extern "C" __global__ void k(float* x) { x[0] = y; }', "k")
    assert "identifier" in str(info.value)


def test_the_numpy_form_is_generated_beside_the_cuda_form():
    """Each kernel's NumPy form computes the same expressions (NaN kept by max and relu,
    as NumPy's own do)."""
    net = flux.net(lambda x, y: np.maximum(x, y) * flux.relu(x) + np.logaddexp(x, y))
    graph = flux.cupy(net).graph(np.zeros((3, 4), np.float32), np.zeros((4,), np.float32))
    (group,) = groups(graph)
    source, env = flux_cupy.numpy_source(group, "k")
    exec(source, env)
    x = np.array([[np.nan, 1, -1, 3]] * 3, np.float32)
    y = np.array([0, np.nan, 2, -np.inf], np.float32)
    with np.errstate(invalid="ignore"):                   # inf - inf, in both
        (out,) = env["k"](x, y)
        expected = np.maximum(x, y) * np.maximum(x, 0) + np.logaddexp(x, y)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    cuda = flux_cupy.cuda_source(group, "k")
    assert "in1[c1]" in cuda                   # y is read with the broadcast offset


@pytest.mark.parametrize("opt", [lambda: flux.SGD(0.1), lambda: flux.Momentum(0.05, 0.9),
                                 lambda: flux.ADAM(0.01)], ids=["SGD", "Momentum", "ADAM"])
def test_training_runs_on_the_device_and_matches_numpy(opt):
    """The whole step on the backend (planned gradient graph, fused update with the GPU-side
    finiteness flag): losses and Params equal to NumPy's, state shared with opt.state."""
    x = np.random.default_rng(0).standard_normal((16, 64)).astype(np.float32)
    y = flux.onehot(np.arange(16) % 10, list(range(10))).astype(np.float32)
    on_gpu, on_cpu = mlp(), mlp()
    gpu_opt, cpu_opt = opt(), opt()
    compiled = flux.cupy(on_gpu)
    a = flux.train(compiled, [(x, y)] * 5, loss=flux.crossentropy, opt=gpu_opt, epochs=2)
    b = flux.train(on_cpu, [(x, y)] * 5, loss=flux.crossentropy, opt=cpu_opt, epochs=2)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for (name, p), q in zip(flux.params(on_gpu).items(), flux.params(on_cpu).values()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-6, err_msg=name)
    assert compiled.optimiser_mirror(gpu_opt).trainers      # it ran as the backend's step
    for key, value in cpu_opt.state_arrays({id(q): n for n, q in
                                            flux.params(on_cpu).items()}).items():
        got = gpu_opt.state_arrays({id(p): n for n, p in flux.params(on_gpu).items()})[key]
        np.testing.assert_allclose(got, value, rtol=1e-4, atol=1e-7, err_msg=key)


def test_a_non_finite_loss_changes_nothing_on_the_device():
    model = mlp()
    compiled = flux.cupy(model)
    x = np.full((4, 64), np.nan, np.float32)
    y = np.zeros((4, 10), np.float32)
    before = {n: np.array(p.value) for n, p in flux.params(model).items()}
    with pytest.raises(flux.FluxError, match="loss"):
        flux.train(compiled, [(x, y)], loss=flux.mse, opt=flux.ADAM(0.01))
    for name, p in flux.params(model).items():
        np.testing.assert_array_equal(p.value, before[name])


def test_running_out_of_memory_is_a_backend_error_at_the_model_line():
    """A result that cannot be allocated: a BackendError naming the size, at the user's line
    (on the stand-in NumPy's MemoryError; on a GPU CuPy's OutOfMemoryError)."""
    outer = flux.net(lambda x: x @ x.T)                       # (10⁶, 10⁶) float32: 4 TB
    with pytest.raises(flux.BackendError, match="4,000,000,000,000 bytes") as info:
        flux.cupy(outer)(np.zeros((10**6, 2), np.float32))
    assert "test_cupy_backend.py" in str(info.value)


def test_unknown_options_and_devices_are_refused():
    with pytest.raises(TypeError, match="device, standin, cuda_graphs"):
        flux.cupy(mlp(), ctx=0)
    with pytest.raises(flux.BackendError, match="names a GPU"):
        flux.cupy(mlp(), device="cpu", standin=False)


@pytest.mark.skipif(not STANDIN, reason="this machine's GPU is usable")
def test_without_a_usable_gpu_compiling_says_so():
    """On this machine CuPy imports but has no driver (or no GPU): compiling for the real
    backend is a BackendError that says so and how to test without one."""
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        pytest.skip("a GPU is usable here")
    except ImportError:
        with pytest.raises(flux.BackendNotInstalled, match="cupy-cuda12x"):
            flux.cupy(mlp(), standin=False)
        return
    except Exception:
        pass
    with pytest.raises(flux.BackendError, match="no usable GPU") as info:
        flux.cupy(mlp(), standin=False)
    assert "FLUX_CUPY_STANDIN=numpy" in str(info.value)


# -- loops ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stateful", [False, True])
def test_a_loop_on_the_gpu_gives_what_full_unrolling_gives(monkeypatch, stateful):
    """The scan runs the body's plan once per step (carried values in the loop's buffers,
    a carried value that is the previous step's another one copied first): outputs, input and
    Param gradients and SGD training equal the fully unrolled graph's."""
    x = np.random.default_rng(1).random((2, 5, 3), dtype=np.float32)
    delta = np.random.default_rng(2).random((2, 5, 2), dtype=np.float32)
    results = []
    for mode in ("scan", "unroll"):
        monkeypatch.setenv("FLUX_LOOPS", mode)
        flux.seed(0)
        model = unroll(Chain(LSTM(3, 4), flux.GRU(4, 3), Affine(3, 2)), 5, stateful=stateful)
        gpu = flux.cupy(model)
        names = [e.prim.name for e in gpu.graph(x).eqns]
        assert names.count("scan") == (1 if mode == "scan" else 0)
        y = gpu(x)
        (dx,) = gpu.back(delta, x)
        grads = [p.grad.copy() for p in flux.params(model).values()]
        flux.train(gpu, [(x, delta)] * 3, loss=flux.mse, opt=flux.SGD(0.5))
        results.append((y, dx, grads, [p.value.copy() for p in flux.params(model).values()]))
    (y, dx, grads, values), (y0, dx0, grads0, values0) = results
    np.testing.assert_allclose(y, y0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dx, dx0, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads + values, grads0 + values0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@needs_nvrtc
def test_the_kernels_of_a_loop_body_compile_with_nvrtc():
    gpu = flux.cupy(unroll(LSTM(3, 4), 6, stateful=False))
    graph = gpu.graph(np.zeros((2, 6, 3), np.float32))
    sources = flux_cupy.kernel_sources(graph)
    assert sources and all("flux_k" in s for s in sources)
    for i, source in enumerate(sources):
        assert ".version" in flux_cupy.nvrtc_compile(source, f"loop_body_{i}")
