"""flux.onnx.export's dynamic batch, against onnxruntime: graphs that depend on the batch size
only through it run at every batch size (reshapes folding the batch, constants of batch
shape, values with two batch axes, a single point), and those that depend on it otherwise
are refused naming the user's line, and export with ``dynamic_batch=False``."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import flux  # noqa: E402
import flux.onnx  # noqa: E402
from flux import Affine, Chain, net  # noqa: E402
from flux.ir import primitives as P  # noqa: E402
from flux.testing import assert_close  # noqa: E402
from helpers import line_of  # noqa: E402

HERE = os.path.abspath(__file__)
ort.set_default_logger_severity(3)


def run_onnx(path, *inputs) -> list:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip([i.name for i in session.get_inputs()], inputs)))


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def input_dims(proto, k=0) -> list:
    return [d.dim_param or d.dim_value for d in proto.graph.input[k].type.tensor_type.shape.dim]


def assert_every_batch(path, model, point, sizes=(1, 2, 3, 7)):
    for n in sizes:
        x = data(n, *point, seed=n)
        assert_close(run_onnx(path, x)[0], model(x))


GENERIC = {
    "fold the batch into rows": lambda x: np.reshape(x, (-1, 2)) * 2,         # (3n, 2)
    "keep the batch, flatten the rest": lambda x: x.reshape(x.shape[0], -1),
    "a constant of batch shape": lambda x: x + np.ones(x.shape, np.float32),
    "zeros like the input": lambda x: np.zeros_like(x) - x,
    "two batch axes": lambda x: (x[:, None, :] * x[None, :, :]).reshape(
        x.shape[0], x.shape[0] * x.shape[1]),
    "a row repeated over the batch": lambda x: np.broadcast_to(
        np.arange(6, dtype=np.float32), x.shape) * x,
    "index the batch axis": lambda x: x[:, ::-1][:, 1:] + x[-1:, None, 0].reshape(1, 1),
    "a mean over the points": lambda x: x - x.mean(axis=1, keepdims=True),
}
"""Models whose graph depends on the batch size only through the batch axis (x: (n, 6))."""


@pytest.mark.parametrize("name", sorted(GENERIC))
def test_graphs_that_scale_with_the_batch_run_at_every_batch_size(name, tmp_path):
    model = net(GENERIC[name])
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (4, 6))
    assert input_dims(proto) == ["batch", 6]
    assert_every_batch(tmp_path / "m.onnx", model, (6,))


def test_the_examples_batch_size_does_not_matter(tmp_path):
    model = Chain(Affine(6, 3), flux.softmax)
    for n in (1, 2, 5):
        flux.onnx.export(model, tmp_path / f"m{n}.onnx", (n, 6))
        assert_every_batch(tmp_path / f"m{n}.onnx", model, (6,))


def test_a_single_point_of_a_model_that_knows_its_input_has_no_batch_axis(tmp_path):
    model = Chain(Affine(6, 3), flux.relu)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (6,))
    assert input_dims(proto) == [6]
    x = data(6)
    assert_close(run_onnx(tmp_path / "m.onnx", x)[0], model(x))


def test_a_sequence_model_has_a_batch_axis_first(tmp_path):
    model = flux.unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5, stateful=False)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (8, 5, 3))
    assert input_dims(proto) == ["batch", 5, 3]
    assert_every_batch(tmp_path / "m.onnx", model, (5, 3))


@net
class Grouped:
    """Regroups the batch in fours: depends on the batch size."""

    W: flux.Param

    def __call__(self, x):
        return np.reshape(x @ self.W, (4, -1))  # regroup line


@net
class Centred:
    """Subtracts the mean over the batch: the literal 1/n depends on it."""

    W: flux.Param

    def __call__(self, x):
        h = x @ self.W
        return h - np.mean(h, axis=0)  # batch mean line


@net
class CountsRows:
    """A Python loop over the rows: its graph has more equations for more rows."""

    def __call__(self, x):
        total = x[0]
        for i in range(1, x.shape[0]):
            total = total + x[i]  # loop line
        return total


@pytest.mark.parametrize("model, marker, says", [
    (Grouped(np.ones((3, 2), np.float32)), "regroup line", "does not trace at batch size"),
    (Centred(np.ones((3, 2), np.float32)), "batch mean line", "a number in it changes"),
    (CountsRows(), "loop line", "number of eqns changes"),
], ids=["reshape(4, -1)", "mean over axis 0", "loop over the batch"])
def test_graphs_that_depend_on_the_batch_size_are_refused_naming_the_line(
        model, marker, says, tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(flux.FluxValueError) as error:
        flux.onnx.export(model, path, (8, 3))
    text = str(error.value)
    assert says in text and "dynamic_batch=False" in text
    assert f"{HERE}:{line_of(marker, HERE)}" in text
    assert error.value.trace and error.value.trace[0].model == type(model).__name__
    assert not path.exists()
    flux.onnx.export(model, path, (8, 3), dynamic_batch=False)     # one batch size: fine
    x = data(8, 3)
    assert_close(run_onnx(path, x)[0], model(x))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [8, 3]


def test_the_refusal_names_the_equation_and_its_primitive(tmp_path):
    with pytest.raises(flux.FluxValueError, match=r"at the equation div of .* at .*"
                                                  r"test_export_batch.py:\d+: a number in it "
                                                  r"changes with the batch size \(8.0 at batch 8, "
                                                  r"9.0 at 9"):
        flux.onnx.export(Centred(np.ones((3, 2), np.float32)), tmp_path / "m.onnx", (8, 3))


def test_inputs_without_a_batch_axis_are_refused_with_the_reason(tmp_path):
    model = net(lambda x, W: x @ W)
    with pytest.raises(flux.FluxValueError, match="first axis of every input is its batch axis"):
        flux.onnx.export(model, tmp_path / "m.onnx", (4, 3), (3, 2))
    flux.onnx.export(model, tmp_path / "m.onnx", (4, 3), (3, 2), dynamic_batch=False)
    x, W = data(4, 3), data(3, 2, seed=1)
    assert_close(run_onnx(tmp_path / "m.onnx", x, W)[0], model(x, W))


def test_gradient_primitives_scale_with_the_batch_too(tmp_path):
    """index_add of a contiguous index is a Pad; a convolution's input gradient and a pool's
    gradients take the batch from their inputs."""
    index = (slice(None), slice(1, 4), None)
    model = net(lambda g: P.index_add_p(g, index=index, shape=(g.shape[0], 6)))
    flux.onnx.export(model, tmp_path / "m.onnx", (4, 3, 1))
    assert_every_batch(tmp_path / "m.onnx", model, (3, 1))
    pool = dict(window=(2, 2), strides=(1, 2), padding=((0, 1), (1, 0)))
    model = net(lambda g: P.window_sum_grad_p(g, **pool, shape=(g.shape[0], 5, 4, 3)))
    flux.onnx.export(model, tmp_path / "m.onnx", (2, 5, 2, 3))
    assert_every_batch(tmp_path / "m.onnx", model, (5, 2, 3))
