"""flux.onnx.export of loops and hidden state, against onnxruntime: an unrolled recurrence is
one ONNX Scan (its invariants read from the outer graph), reverse and nested loops, loops of
no sequence input, FLUX_LOOPS=unroll, and stateful models, whose carried state is an input
with the initial state as default and a ``.final`` output."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import flux  # noqa: E402
import flux.onnx  # noqa: E402
from flux import Affine, Chain, net  # noqa: E402
from flux.ir import Aval, Eqn, Graph, Var  # noqa: E402
from flux.ir import primitives as P  # noqa: E402
from flux.testing import assert_close  # noqa: E402

ort.set_default_logger_severity(3)


@pytest.fixture(autouse=True)
def loops(monkeypatch):
    """Unrolled models trace as loops here (FLUX_LOOPS=unroll in the environment would make
    them copies; the test of that sets it itself)."""
    monkeypatch.delenv("FLUX_LOOPS", raising=False)


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path, *inputs, **named) -> list:
    s = session(path)
    feeds = dict(zip([i.name for i in s.get_inputs()], inputs))
    feeds.update(named)
    return s.run(None, feeds)


def sequence(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def ops(graph) -> list:
    return [n.op_type for n in graph.node]


@pytest.mark.parametrize("layer", [flux.LSTM, flux.GRU, flux.Recurrent],
                         ids=lambda c: c.__name__)
def test_an_unrolled_recurrence_is_one_scan_and_equals_flux(layer, tmp_path):
    flux.seed(0)
    model = flux.unroll(Chain(layer(3, 5), Affine(5, 2)), 6, stateful=False)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (4, 6, 3))
    assert ops(proto.graph).count("Scan") == 1
    scan = next(n for n in proto.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    states = len(scan.input) - 1
    assert len(body.input) == states + 1          # the invariants come from the outer scope
    assert {"model.layers.0.W" + ("xf" if layer is flux.LSTM else "xr" if layer is flux.GRU
                                  else "xy")} <= {i for n in body.node for i in n.input}
    for n in (1, 4, 9):
        xs = sequence(n, 6, 3, seed=n)
        assert_close(run_onnx(tmp_path / "m.onnx", xs)[0], model(xs))


def test_a_long_loop_is_no_bigger_than_a_short_one(tmp_path):
    sizes = []
    for steps in (3, 300):
        model = flux.unroll(flux.LSTM(3, 4), steps, stateful=False)
        proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, steps, 3))
        sizes.append(sum(len(n.SerializeToString()) for n in proto.graph.node))
    assert sizes[1] <= sizes[0] + 64
    xs = sequence(2, 300, 3)
    assert_close(run_onnx(tmp_path / "m.onnx", xs)[0], model(xs))


def test_fully_unrolled_with_flux_loops_unroll(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "unroll")
    model = flux.unroll(flux.LSTM(3, 4), 4, stateful=False)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 4, 3))
    assert "Scan" not in ops(proto.graph)
    assert ops(proto.graph).count("Sigmoid") == 3 * 4
    xs = sequence(5, 4, 3)
    assert_close(run_onnx(tmp_path / "m.onnx", xs)[0], model(xs))


@net
class SumOfSteps:
    """The inner recurrence over the step's own sequence, summed over its steps."""

    inner: object

    def __call__(self, x):
        return flux.sum(self.inner(x), axis=-2)


def test_a_loop_inside_a_loop_is_a_scan_inside_the_scans_body(tmp_path):
    flux.seed(1)
    inner = flux.unroll(flux.Recurrent(2, 3), 4, stateful=False)
    model = flux.unroll(Chain(SumOfSteps(inner), flux.Recurrent(3, 2)), 3, stateful=False)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 3, 4, 2))
    scan = next(n for n in proto.graph.node if n.op_type == "Scan")
    body = next(a.g for a in scan.attribute if a.name == "body")
    assert ops(body).count("Scan") == 1
    for n in (1, 3):
        xs = sequence(n, 3, 4, 2, seed=n)
        assert_close(run_onnx(tmp_path / "m.onnx", xs)[0], model(xs))


def test_a_flipped_recurrence_runs_backwards_in_time(tmp_path):
    @net
    class Both:
        forward: object
        backward: object

        def __call__(self, x):
            return flux.hcat(self.forward(x), self.backward(x))

    flux.seed(2)
    model = flux.unroll(Both(flux.Recurrent(3, 2), flux.flip(flux.Recurrent(3, 2))), 4,
                        stateful=False)
    flux.onnx.export(model, tmp_path / "m.onnx", (2, 4, 3))
    for n in (1, 3):
        xs = sequence(n, 4, 3, seed=n)
        assert_close(run_onnx(tmp_path / "m.onnx", xs)[0], model(xs))


def step_body():
    """h' = tanh(h W + x): consts (W,), carry (h,), one step of xs; carry and y are h'."""
    W, h, x = Var(Aval((3, 3), "float32")), Var(Aval((2, 3), "float32")), Var(Aval((2, 3),
                                                                                "float32"))
    hw, pre, out = (Var(Aval((2, 3), "float32")) for _ in range(3))
    eqns = [Eqn(P.matmul_p, [h, W], [hw], {}), Eqn(P.add_p, [hw, x], [pre], {}),
            Eqn(P.tanh_p, [pre], [out], {})]
    return Graph([W, h, x], [], [], [], [], eqns, [out, out])


@pytest.mark.parametrize("reverse", [False, True])
def test_a_reverse_scan_walks_the_sequence_backwards(reverse, tmp_path):
    body = step_body()
    model = net(lambda W, h0, xs: tuple(P.scan_p(
        W, h0, xs, body=body, length=5, n_consts=1, n_carry=1, x_axes=(1,), y_axes=(1,),
        reverse=reverse)))
    W, h0, xs = sequence(3, 3) / 2, sequence(2, 3, seed=1), sequence(2, 5, 3, seed=2)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", W, h0, xs, dynamic_batch=False)
    scan = next(n for n in proto.graph.node if n.op_type == "Scan")
    attrs = {a.name: list(a.ints) for a in scan.attribute if a.ints}
    assert attrs["scan_input_axes"] == [1] and attrs["scan_output_axes"] == [1]
    assert attrs.get("scan_input_directions", [0]) == [int(reverse)]
    assert attrs.get("scan_output_directions", [0]) == [int(reverse)]
    final, ys = run_onnx(tmp_path / "m.onnx", W, h0, xs)
    h, steps = h0, [None] * 5                         # the loop by hand
    for t in (reversed(range(5)) if reverse else range(5)):
        h = steps[t] = np.tanh(h @ W + xs[:, t])
    assert_close(final, h)
    assert_close(ys, np.stack(steps, axis=1))
    assert_close([final, ys], list(model(W, h0, xs)))


def test_a_loop_over_one_input_fed_at_every_step(tmp_path):
    flux.seed(3)
    model = flux.unroll(flux.Recurrent(3, 4), 5, stateful=False, seq=False)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 3))
    assert "Scan" in ops(proto.graph)
    for n in (1, 6):
        x = sequence(n, 3, seed=n)
        assert_close(run_onnx(tmp_path / "m.onnx", x)[0], model(x))


# -- stateful models: the carried state in and out ------------------------------------------------


def test_a_stateful_model_takes_and_returns_its_hidden_state(tmp_path):
    flux.seed(4)
    model = flux.unroll(Chain(flux.LSTM(5, 4), Affine(4, 5)), 3)      # stateful by default
    path = tmp_path / "m.onnx"
    proto = flux.onnx.export(model, path, (2, 3, 5))
    names = ["model.layers.0.y", "model.layers.0.state"]
    assert [i.name for i in proto.graph.input] == ["input"] + names
    assert [o.name for o in proto.graph.output] == ["output"] + [n + ".final" for n in names]
    defaults = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    assert all(defaults[n].shape == (1, 4) and not defaults[n].any() for n in names)
    compiled = flux.compile(model)
    chunks = [sequence(3, 3, 5, seed=k) for k in range(3)]
    state = {}
    for chunk in chunks:                        # the state passed on, call after call
        y, *final = run_onnx(path, chunk, **state)
        assert_close(y, compiled(chunk))
        state = dict(zip(names, final))
    flux.reset(compiled)
    for n in (1, 5):                            # without the state: from the initial state
        x = sequence(n, 3, 5, seed=n)
        assert_close(run_onnx(path, x)[0], flux.compile(model)(x))


def test_a_stateful_model_of_one_sequence_has_no_batch_axis(tmp_path):
    model = flux.unroll(flux.Recurrent(3, 2), 4)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (4, 3))
    dims = [d.dim_value for d in proto.graph.input[1].type.tensor_type.shape.dim]
    assert proto.graph.input[1].name == "model.y" and dims == [2]
    x = sequence(4, 3)
    y, final = run_onnx(tmp_path / "m.onnx", x)
    assert_close(y, flux.compile(model)(x))
    assert_close(final, y[-1])


def test_unroll1_exports_one_step_with_its_state(tmp_path):
    flux.seed(5)
    step = flux.unroll1(flux.GRU(3, 4))
    proto = flux.onnx.export(step, tmp_path / "m.onnx", (2, 3))
    assert [o.name for o in proto.graph.output] == ["output", "model.y.final"]
    compiled = flux.compile(step)
    state = {}
    for k in range(3):
        x = sequence(2, 3, seed=k)
        y, final = run_onnx(tmp_path / "m.onnx", x, **state)
        assert_close(y, compiled(x))
        assert_close(final, y)
        state = {"model.y": final}


def test_fresh_random_numbers_of_a_training_mode_dropout_are_drawn_by_the_runtime(tmp_path):
    model = flux.trainmode(Chain(Affine(4, 4), flux.Dropout(0.5)))
    model.layers[0].W.value = np.eye(4, dtype=np.float32)
    model.layers[0].b.value = np.zeros(4, np.float32)
    proto = flux.onnx.export(model, tmp_path / "m.onnx", (2, 4))
    assert "RandomUniformLike" in ops(proto.graph)
    x = np.ones((2000, 4), np.float32)
    runtime = session(tmp_path / "m.onnx")
    first, second = (runtime.run(None, {"x": x})[0] for _ in range(2))
    for y in (first, second):
        assert set(np.unique(y)) <= {0.0, 2.0}        # zeroed, or scaled by 1 / (1 - p)
        assert 0.45 < (y == 0).mean() < 0.55
    assert (first != second).any()
