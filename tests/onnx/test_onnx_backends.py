"""ONNX models on every installed backend (flux-tf, flux-mxnet, flux-cupy's stand-in): models
read by `flux.onnx.load`, from files built here with `onnx.helper` and from files flux exports,
compute on each backend what they compute on NumPy, differentiate alike, and train alike.
In the core environment only NumPy is installed and these tests are skipped; the backend
environments run them (tools/dev.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

import flux

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import node_suite  # noqa: E402  (tests/onnx is on sys.path, as in test_node_suite.py)

OTHER_BACKENDS = [b for b in flux.backends() if b != "numpy"]
pytestmark = pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy backend is installed")
RTOL, ATOL = 1e-4, 1e-5


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def _model(nodes, inputs, outputs, initializers, opset=18):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp_file(tmp_path, rng):
    """Gemm → Relu → Gemm → Softmax, a symbolic batch axis."""
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    inits = [_init("W1", rng.normal(0, 0.5, (8, 5))), _init("b1", rng.normal(0, 0.1, 8)),
             _init("W2", rng.normal(0, 0.5, (8, 3))), _init("b2", rng.normal(0, 0.1, 3))]
    path = tmp_path / "mlp.onnx"
    onnx.save(_model(nodes, [_value("x", ["N", 5])], [_value("y", ["N", 3])], inits), path)
    return path, (4, 5)


def cnn_file(tmp_path, rng):
    """Conv → BatchNormalization → Relu → MaxPool → Flatten → Gemm (NCHW, as ONNX is)."""
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"],
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"])]
    inits = [_init("w", rng.normal(0, 0.3, (4, 2, 3, 3))), _init("cb", rng.normal(0, 0.1, 4)),
             _init("s", rng.uniform(0.5, 1.5, 4)), _init("o", rng.normal(0, 0.1, 4)),
             _init("m", rng.normal(0, 0.1, 4)), _init("v", rng.uniform(0.5, 1.5, 4)),
             _init("W", rng.normal(0, 0.3, (4 * 3 * 3, 3))), _init("b", np.zeros(3))]
    path = tmp_path / "cnn.onnx"
    onnx.save(_model(nodes, [_value("x", ["N", 2, 6, 6])], [_value("y", ["N", 3])], inits),
              path)
    return path, (3, 2, 6, 6)


def lstm_file(tmp_path, rng):
    """ONNX's own LSTM operator over 5 steps (layout 0: time first), its last hidden state."""
    hidden, n_in = 4, 3
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["Y", "Y_h"], hidden_size=hidden),
             helper.make_node("Squeeze", ["Y_h", "axes"], ["h"])]
    inits = [_init("W", rng.normal(0, 0.4, (1, 4 * hidden, n_in))),
             _init("R", rng.normal(0, 0.4, (1, 4 * hidden, hidden))),
             _init("B", rng.normal(0, 0.1, (1, 8 * hidden))),
             numpy_helper.from_array(np.array([0], np.int64), "axes")]
    path = tmp_path / "lstm.onnx"
    model = _model(nodes, [_value("x", [5, "N", n_in])], [_value("h", ["N", hidden])], inits)
    onnx.save(model, path)
    return path, (5, 2, n_in)


def exported_file(tmp_path, rng):
    """A flux model (Affine, tanh, an unrolled GRU) exported by flux, read back."""
    flux.seed(3)
    model = flux.Chain(flux.unroll(flux.GRU(3, 4), 6, stateful=False),
                       lambda hs: hs[:, -1], flux.Affine(4, 2), flux.tanh)
    path = tmp_path / "exported.onnx"
    flux.onnx.export(model, path, (2, 6, 3))
    return path, (2, 6, 3)


FILES = [mlp_file, cnn_file, lstm_file, exported_file]


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("make", FILES, ids=lambda f: f.__name__)
def test_a_loaded_model_runs_differentiates_and_trains_alike(backend, make, tmp_path):
    rng = np.random.default_rng(0)
    path, shape = make(tmp_path, rng)
    x = rng.normal(size=shape).astype(np.float32)
    on_numpy, on_backend = flux.onnx.load(path), flux.onnx.load(path)
    compiled = flux.compile(on_backend, backend)
    np.testing.assert_allclose(compiled(x), on_numpy(x), rtol=RTOL, atol=ATOL)
    # one training step each: the same loss and the same Params after it
    y = np.zeros_like(on_numpy(x))
    opt = dict(loss=flux.mse, opt=flux.SGD(0.1))
    flux.train(on_numpy, [(x, y)], **opt)
    flux.train(compiled, [(x, y)], **opt)
    got, want = flux.params(on_backend), flux.params(on_numpy)
    assert got.keys() == want.keys() and got
    for name in want:
        np.testing.assert_allclose(got[name].value, want[name].value, rtol=RTOL, atol=ATOL,
                                   err_msg=name)



# -- ONNX's node tests, on each backend --------------------------

RECORDED = json.loads((Path(__file__).resolve().parents[2] / node_suite.COUNTS_FILE).read_text())
OPERATOR = node_suite.operators_of(node_suite.cases())
PASSING_CASES = [c for c in node_suite.cases()
                 if node_suite.imported(OPERATOR[c.name])
                 and c.name not in RECORDED["known_failures"]]
"""The node tests that pass on NumPy (every case of an imported operator but the known
failures)."""



def _failures(backend: str) -> dict:
    path = Path(__file__).resolve().parents[2] / node_suite.failures_file(backend)
    return json.loads(path.read_text()) if path.exists() else {}


BACKEND_FAILURES = {backend: _failures(backend) for backend in OTHER_BACKENDS}
"""``backend -> {case name: the reason it fails}``: node tests that pass on NumPy and fail on
a backend, for a limit of that engine, recorded by ``tools/onnx_coverage.py --backend`` (MXNet
1.9: no int16/uint16/uint32/uint64 arrays, arrays with a size-0 axis, float16 products on the
CPU, pools of integers; TF: float16 attention products rounded otherwise)."""


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("case", PASSING_CASES, ids=lambda c: c.name)
def test_onnx_node_tests_pass_on_every_backend(backend, case):
    outcome = node_suite.run(case, OPERATOR[case.name], backend)
    known = BACKEND_FAILURES.get(backend, {}).get(case.name)
    if known is not None:
        assert not outcome.passed and known in outcome.reason, outcome.reason
    else:
        assert outcome.passed, outcome.reason
