"""flux.onnx.export against onnxruntime: every case of the conformance kit and every example
model exported, run by onnxruntime (at several batch sizes where the model has a batch axis)
and compared with flux's own output, then read back with flux.onnx.load; the file's names
(initializers are the Param paths, nodes carry the user's file and line), opsets, large
models' external data, and the errors for what cannot be exported."""
import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import flux  # noqa: E402
import flux.onnx  # noqa: E402
from flux import Affine, Chain, net  # noqa: E402
from flux.ir import Primitive  # noqa: E402
from flux.ir.graph import Aval  # noqa: E402
from flux.testing import CASES, PRIMITIVE_CASES, assert_close  # noqa: E402
from helpers import line_of  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = os.path.abspath(__file__)
ort.set_default_logger_severity(3)


def leaves(value) -> list:
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in leaves(item)]
    return [np.asarray(value)]


def run_onnx(path, *inputs) -> list:
    """The outputs onnxruntime computes for the file at `path` on `inputs` (flattened, in the
    order of the graph's required inputs)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    arrays = leaves(list(inputs))
    assert len(names) == len(arrays), (names, [a.shape for a in arrays])
    return session.run(None, dict(zip(names, arrays)))


def assert_runs_like_flux(path, model, *inputs):
    """onnxruntime's outputs for `inputs` equal the model's own (float32 tolerance), leaf by
    leaf, with the same shapes and dtypes."""
    want = leaves(model(*inputs))
    got = run_onnx(path, *inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        assert_close(g, w)


# -- the conformance kit --------------------------------------------------------------------------

NOT_REIMPORTED = {
    "take_grad": "a ScatterND at indices the model computes: flux.onnx.load needs a scatter's "
                 "indices when it traces the model",
}
"""Kit cases whose export onnxruntime runs but whose import refuses to run (a FluxError)."""

BELOW_OPSET_16 = {
    "index_add": "repeated indices need ScatterND's reduction='add' (opset 16)",
    "take_grad": "rows gathered more than once need ScatterND's reduction='add' (opset 16)",
}
"""Kit cases (gradient primitives) that need opset 16: at opset 13 they are refused, naming
the opset to pass."""


def other_batches(case, inputs) -> list:
    """The case's inputs at two more batch sizes (one more point, and one point)."""
    x = inputs[0]
    return [(np.concatenate([x, x[:1]]),) + inputs[1:], (x[:1],) + inputs[1:]]


@pytest.mark.parametrize("case", CASES + PRIMITIVE_CASES, ids=lambda c: c.name)
def test_every_kit_case_exports_and_runs_on_onnxruntime_as_on_flux(case, tmp_path):
    model, _ = case.build()
    inputs = case.make_inputs()
    path = tmp_path / f"{case.name}.onnx"
    proto = flux.onnx.export(model, path, *inputs, dynamic_batch=case.batched)
    assert isinstance(proto, onnx.ModelProto) and path.exists()
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    for xs in [inputs] + (other_batches(case, inputs) if case.batched else []):
        assert_runs_like_flux(path, model, *xs)
    if case.name in NOT_REIMPORTED:
        with pytest.raises(flux.FluxError):
            flux.onnx.load(path)(*leaves(list(inputs)))
        return
    assert_close(leaves(flux.onnx.load(path)(*leaves(list(inputs)))), leaves(model(*inputs)))


def test_batched_kit_cases_have_a_symbolic_batch_axis(tmp_path):
    for case in [c for c in CASES if c.batched]:
        model, _ = case.build()
        proto = flux.onnx.export(model, tmp_path / "m.onnx", *case.make_inputs())
        dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
        assert dims[0] == "batch", (case.name, dims)
        out = [d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
        assert out[0] == "batch", (case.name, out)


@pytest.mark.parametrize("name", sorted(BELOW_OPSET_16))
def test_gradient_primitives_that_need_opset_16_say_so_below_it(name, tmp_path):
    case = next(c for c in PRIMITIVE_CASES if c.name == name)
    model, _ = case.build()
    with pytest.raises(flux.FluxValueError, match="opset 16") as error:
        flux.onnx.export(model, tmp_path / "m.onnx", *case.make_inputs(), dynamic_batch=False,
                         opset=13)
    assert case.name in str(error.value) and "_primitive_cases.py" in str(error.value)
    assert not (tmp_path / "m.onnx").exists()


def test_other_primitive_cases_export_at_opset_13(tmp_path):
    for case in PRIMITIVE_CASES:
        if case.name in BELOW_OPSET_16:
            continue
        model, _ = case.build()
        inputs = case.make_inputs()
        flux.onnx.export(model, tmp_path / "m.onnx", *inputs, dynamic_batch=False, opset=13)
        assert_runs_like_flux(tmp_path / "m.onnx", model, *inputs)


# -- the example models ---------------------------------------------------------------------------


def example(name):
    spec = importlib.util.spec_from_file_location(f"flux_example_{name}",
                                                  REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits():
    """examples/digits.py's MLP."""
    return Chain(Affine(64, 128), flux.relu, Affine(128, 10)), lambda rng, n: rng.random(
        (n, 64), np.float32)


def cnn_digits():
    """examples/cnn_digits.py's CNN (convolutions, BatchNorm, max pool, Dropout)."""
    model = example("cnn_digits").network()
    for layer in model.layers:                  # running statistics away from 0 and 1
        if isinstance(layer, flux.BatchNorm):
            layer.mean.value[:] = np.linspace(-0.1, 0.1, layer.mean.shape[0])
            layer.var.value[:] = np.linspace(0.5, 2, layer.var.shape[0])
    return model, lambda rng, n: rng.random((n, 8, 8, 1), np.float32)


def char_rnn():
    """examples/char_rnn.py's model, smaller: an LSTM and an Affine, unrolled (stateful)."""
    vocab, hidden, steps = 12, 16, 5
    model = flux.unroll(Chain(flux.LSTM(vocab, hidden), Affine(hidden, vocab)), steps)
    return model, lambda rng, n: rng.random((n, steps, vocab), np.float32)


def translation():
    """examples/translation.py's model: a bidirectional encoder and an attending decoder."""
    module = example("translation")
    return module.translation_model(), lambda rng, n: rng.random(
        (n, module.Nphrase, module.Nalpha), np.float32)


def transformer():
    """examples/transformer.py's Transformer, smaller."""
    module = example("transformer")
    model = module.Transformer(d=16, heads=2, width=32, depth=2)
    return model, lambda rng, n: rng.integers(0, module.DIGITS, (n, module.LENGTH))


@pytest.mark.parametrize("build", [digits, cnn_digits, char_rnn, translation, transformer],
                         ids=lambda f: f.__name__)
def test_every_example_model_exports_and_runs_on_onnxruntime_as_on_flux(build, tmp_path):
    flux.seed(0)
    model, data = build()
    rng = np.random.default_rng(0)
    path = tmp_path / "model.onnx"
    flux.onnx.export(model, path, data(rng, 4))
    for n in (1, 3, 8):
        x = data(rng, n)
        flux.reset(model)                # (the char-RNN is stateful: start each from the start)
        want = model(x)
        got = run_onnx(path, x)
        assert_close(got[0], want)
    flux.reset(model)
    x = data(rng, 2)
    assert_close(leaves(flux.onnx.load(path)(x))[0], model(x))


# -- names and source lines -----------------------------------------------------------------------


@net
class Scaled:
    """y = tanh(x W) · s, then an Affine."""

    W: flux.Param
    s: flux.Param
    head: object

    def __call__(self, x):
        h = np.tanh(x @ self.W) * self.s  # scaled line
        return self.head(h)


def test_initializers_are_the_params_by_path_and_nodes_name_the_users_line(tmp_path):
    model = Scaled(np.ones((3, 4), np.float32), np.float32(2), Affine(4, 2))
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 3))
    assert [i.name for i in proto.graph.initializer] == list(flux.params(model))
    for init in proto.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(init),
                                      np.asarray(flux.params(model)[init.name]))
    line = line_of("scaled line", HERE)
    mine = [n for n in proto.graph.node if n.op_type in ("MatMul", "Tanh", "Mul")
            and f"test_export.py:{line}" in n.name]
    assert [n.op_type for n in mine] == ["MatMul", "Tanh", "Mul"]
    for node in mine:
        assert f"{HERE}:{line}" in node.doc_string and "in Scaled at" in node.doc_string
    head = [n for n in proto.graph.node if "affine.py" in n.name]
    assert head and all("in Affine (head)" in n.name for n in head)
    assert all(f"in Scaled at {HERE}:{line + 1}" in n.doc_string for n in head)
    assert len({n.name for n in proto.graph.node}) == len(proto.graph.node)
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["output"]
    assert proto.producer_name == "flux" and proto.producer_version
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 18)]


def test_inputs_are_named_after_the_forward_arguments_else_input_input1(tmp_path):
    pair = net(lambda x, y: x * y)
    proto = flux.onnx.export(pair, tmp_path / "m.onnx", (2, 3), (2, 3))
    assert [i.name for i in proto.graph.input] == ["x", "y"]
    tupled = net(lambda xs: xs[0] + xs[1])
    proto = flux.onnx.export(tupled, tmp_path / "m.onnx", ((2, 3), (2, 3)))
    assert [i.name for i in proto.graph.input] == ["input", "input1"]
    two = net(lambda x: (x + 1, x * 2))
    proto = flux.onnx.export(two, tmp_path / "m.onnx", (2, 3))
    assert [o.name for o in proto.graph.output] == ["output", "output1"]


def test_running_statistics_and_constants_are_constant_nodes_not_initializers(tmp_path):
    model = Chain(Affine(3, 4), flux.BatchNorm(4))
    model.layers[1].mean.value[:] = [1, 2, 3, 4]
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 3))
    assert {i.name for i in proto.graph.initializer} == set(flux.params(model))
    constants = {n.output[0] for n in proto.graph.node if n.op_type == "Constant"}
    assert "layers.1.mean" in constants
    x = np.random.default_rng(0).random((5, 3), np.float32)
    assert_runs_like_flux(tmp_path / "m.onnx", model, x)


def test_a_reexported_imported_model_keeps_its_names(tmp_path):
    model = Chain(Affine(5, 3), flux.relu, Affine(3, 2))
    flux.onnx.export(model, tmp_path / "a.onnx", (2, 5))
    loaded = flux.onnx.load(tmp_path / "a.onnx")
    proto = flux.onnx.export(loaded, tmp_path / "b.onnx", (2, 5))
    assert [i.name for i in proto.graph.initializer] == list(flux.params(model))
    x = np.random.default_rng(0).random((4, 5), np.float32)
    assert_close(run_onnx(tmp_path / "b.onnx", x)[0], model(x))


def test_a_compiled_model_exports_its_model(tmp_path):
    model = Chain(Affine(5, 3), flux.softmax)
    proto = flux.onnx.export(flux.compile(model), tmp_path / "m.onnx", (2, 5))
    assert [i.name for i in proto.graph.initializer] == ["layers.0.W", "layers.0.b"]
    assert_runs_like_flux(tmp_path / "m.onnx", model, np.ones((3, 5), np.float32))


def test_a_model_that_knows_its_input_shape_needs_no_example(tmp_path):
    model = Chain(Affine(5, 3), flux.relu)
    proto = flux.onnx.export(model, tmp_path / "m.onnx")
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 5]
    assert_runs_like_flux(tmp_path / "m.onnx", model, np.ones((6, 5), np.float32))


# -- opsets and files -----------------------------------------------------------------------------


@pytest.mark.parametrize("opset", range(13, 24))
def test_every_opset_from_13_to_23_runs_on_onnxruntime(opset, tmp_path):
    flux.seed(0)
    model = Chain(flux.Conv((3, 3), 2, 4, padding="same"), flux.relu, flux.MaxPool((2, 2)),
                  flux.AvgPool((2, 2)), flux.Reshape(-1), Affine(4, 3), flux.logsoftmax)
    x = np.random.default_rng(opset).random((3, 4, 4, 2), np.float32)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", x, opset=opset)
    assert proto.opset_import[0].version == opset
    assert_runs_like_flux(tmp_path / "m.onnx", model, x)
    rnn = flux.unroll(flux.GRU(3, 4), 3, stateful=False)
    xs = np.random.default_rng(opset).random((2, 3, 3), np.float32)
    flux.onnx.export(rnn, tmp_path / "r.onnx", xs, opset=opset)
    assert_runs_like_flux(tmp_path / "r.onnx", rnn, xs)


def test_a_large_model_keeps_its_weights_in_a_data_file_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.import_module("flux.onnx.export"), "EXTERNAL_DATA_BYTES", 0)
    model = Chain(Affine(40, 50), flux.tanh, Affine(50, 3))
    flux.onnx.export(model, tmp_path / "big.onnx", (2, 40))
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    assert (tmp_path / "big.onnx.data").stat().st_size >= 4 * 40 * 50
    assert_runs_like_flux(tmp_path / "big.onnx", model, np.ones((3, 40), np.float32))


def test_export_overwrites_a_file_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    flux.onnx.export(Affine(3, 2), str(path), (1, 3))
    assert os.listdir(tmp_path) == ["m.onnx"]
    assert onnx.load(str(path)).producer_name == "flux"


# -- errors ---------------------------------------------------------------------------------------


def test_errors_name_what_was_wrong_and_write_nothing(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(flux.FluxTypeError, match="takes a flux model"):
        flux.onnx.export(42, path, (1, 3))
    with pytest.raises(flux.ShapeError, match=r"\(2, 4\)"):
        flux.onnx.export(Affine(5, 3), path, (2, 4))
    with pytest.raises(flux.FluxValueError, match="does not exist"):
        flux.onnx.export(Affine(5, 3), tmp_path / "missing" / "m.onnx", (2, 5))
    with pytest.raises(flux.FluxValueError, match="is a folder"):
        flux.onnx.export(Affine(5, 3), tmp_path, (2, 5))
    with pytest.raises(flux.FluxTypeError, match="path"):
        flux.onnx.export(Affine(5, 3), 3.5, (2, 5))
    for opset in (12, 24, 7):
        with pytest.raises(flux.FluxValueError, match=f"opset {opset} .* 13 to 23"):
            flux.onnx.export(Affine(5, 3), path, (2, 5), opset=opset)
    for opset in ("18", True, 18.0):
        with pytest.raises(flux.FluxTypeError, match="opset is an int"):
            flux.onnx.export(Affine(5, 3), path, (2, 5), opset=opset)
    with pytest.raises(flux.FluxTypeError, match="takes 1 input"):
        flux.onnx.export(Affine(5, 3), path, (2, 5), (2, 5))
    assert os.listdir(tmp_path) == []


mystery_p = Primitive("mystery", impl=lambda x: x, shape_rule=lambda x: Aval(x.shape, x.dtype))
"""A primitive outside flux's set, with no ONNX form."""


def test_a_primitive_with_no_onnx_form_is_named_with_its_line(tmp_path):
    model = net(lambda x: mystery_p(x) + 1)  # mystery line
    with pytest.raises(flux.FluxValueError) as error:
        flux.onnx.export(model, tmp_path / "m.onnx", (2, 3))
    text = str(error.value)
    assert "primitive mystery has no ONNX form" in text
    assert f"{HERE}:{line_of('mystery line', HERE)}" in text
    assert not os.listdir(tmp_path)
