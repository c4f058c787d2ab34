"""flux.onnx.load: the imported model as a flux model (inputs checked, Params named by their
initializers, trains, prints, saves, runs compiled), `constants=`, control flow, and the
errors for operators flux cannot import and for failures inside a node. Oracles: NumPy
written by hand, and flux's own Affine for the same weights."""
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import flux  # noqa: E402
import flux.onnx  # noqa: E402
from flux.onnx.proto import MAX_OPSET, MIN_OPSET  # noqa: E402

FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def model_of(nodes, inputs, outputs, initializers=(), opset=17, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def tensor(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def saved(model, tmp_path, name="model.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def mlp(seed=0):
    """y = max(x W1 + b1, 0) W2 + b2 (as MatMul, Add, Max), with a symbolic batch."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(3, 5)).astype("f"), rng.normal(size=5).astype("f")
    w2, b2 = rng.normal(size=(5, 2)).astype("f"), rng.normal(size=2).astype("f")
    zero = numpy_helper.from_array(np.zeros((), "f"), "zero")
    nodes = [helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "fc1.bias"], ["h1"]),
             helper.make_node("Max", ["h1", "zero"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "fc2.weight"], ["y0"], name="fc2"),
             helper.make_node("Add", ["y0", "fc2.bias"], ["y"])]
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w1, "fc1.weight"), (b1, "fc1.bias"), (w2, "fc2.weight"), (b2, "fc2.bias")]]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 3])], [tensor("y", FLOAT, ["N", 2])],
                     inits + [zero])
    return model, (w1, b1, w2, b2)


def np_mlp(x, w1, b1, w2, b2):
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


# -- the model ----------------------------------------------------------------------------------


def test_imported_mlp_gives_numpys_outputs_at_any_batch_size(tmp_path):
    model, weights = mlp()
    m = flux.onnx.load(saved(model, tmp_path))
    for n in (1, 4, 7):
        x = np.random.default_rng(n).normal(size=(n, 3)).astype("f")
        np.testing.assert_allclose(m(x), np_mlp(x, *weights), rtol=1e-5, atol=1e-6)
    assert m(x).dtype == np.float32


def test_floating_initializers_are_params_named_as_in_the_file(tmp_path):
    model, weights = mlp()
    m = flux.onnx.load(saved(model, tmp_path))
    ps = flux.params(m)
    assert list(ps) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "zero"]
    for p, w in zip(ps.values(), weights):
        np.testing.assert_array_equal(p.value, w)
    assert getattr(m, "fc1.weight") is ps["fc1.weight"]
    assert m.initializer_paths["fc2.bias"] == "fc2.bias"


def test_integer_initializers_are_constants_known_while_tracing(tmp_path):
    shape = numpy_helper.from_array(np.array([-1, 2, 3], np.int64), "shape")
    model = model_of([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                     [tensor("x", FLOAT, ["N", 6])], [tensor("y", FLOAT, None)], [shape])
    m = flux.onnx.load(saved(model, tmp_path))
    assert flux.params(m) == {}
    x = np.arange(24, dtype="f").reshape(4, 6)
    np.testing.assert_array_equal(m(x), x.reshape(4, 2, 3))


def test_names_that_cannot_be_attributes_have_a_fallback(tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=3).astype("f") for _ in range(3))
    nodes = [helper.make_node("Add", ["x", "_private"], ["h"]),
             helper.make_node("Add", ["h", "input_names"], ["k"]),
             helper.make_node("Add", ["k", "initializer_private"], ["y"])]
    inits = [numpy_helper.from_array(a, "_private"), numpy_helper.from_array(b, "input_names"),
             numpy_helper.from_array(c, "initializer_private")]
    model = model_of(nodes, [tensor("x", FLOAT, [3])], [tensor("y", FLOAT, [3])], inits)
    m = flux.onnx.load(saved(model, tmp_path))
    assert m.initializer_paths == {"_private": "initializer_private_2",
                                   "input_names": "initializer_input_names",
                                   "initializer_private": "initializer_private"}
    assert sorted(flux.params(m)) == sorted(m.initializer_paths.values())
    assert m.input_names == ["x"]
    np.testing.assert_allclose(m(np.ones(3, "f")), 1 + a + b + c, rtol=1e-6)


def test_what_the_model_says_about_itself(tmp_path):
    model, _ = mlp()
    m = flux.onnx.load(saved(model, tmp_path, "mlp.onnx"))
    assert m.input_names == ["x"] and m.output_names == ["y"]
    assert m.input_shape == (3,)
    assert m.file == str(tmp_path / "mlp.onnx")
    assert repr(m) == "OnnxModel(mlp.onnx: 5 nodes, 5 Params; (x (N, 3) float32) -> " \
                      "(y (N, 2) float32))"


def test_several_outputs_are_a_tuple(tmp_path):
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Exp", ["x"], ["b"])]
    model = model_of(nodes, [tensor("x", FLOAT, [2])],
                     [tensor("a", FLOAT, [2]), tensor("b", FLOAT, [2])])
    m = flux.onnx.load(saved(model, tmp_path))
    a, b = m(np.array([0.0, 1.0], "f"))
    np.testing.assert_allclose(a, [0, -1])
    np.testing.assert_allclose(b, np.exp([0, 1]), rtol=1e-6)
    assert m.output_names == ["a", "b"]


# -- inputs checked -----------------------------------------------------------------------------


def test_the_number_of_inputs_is_checked_naming_them(tmp_path):
    model, _ = mlp()
    m = flux.onnx.load(saved(model, tmp_path, "mlp.onnx"))
    with pytest.raises(flux.FluxTypeError, match=r"OnnxModel\(mlp.onnx\) takes 1 input\(s\) "
                                                 r"\(x \(N, 3\) float32\), given 2"):
        m(np.ones((2, 3), "f"), np.ones((2, 3), "f"))


def test_the_declared_sizes_are_checked(tmp_path):
    model, _ = mlp()
    m = flux.onnx.load(saved(model, tmp_path, "mlp.onnx"))
    with pytest.raises(flux.ShapeError, match=r"input 'x' is declared as x \(N, 3\) float32, "
                                              r"given a value of shape \(2, 4\)"):
        m(np.ones((2, 4), "f"))
    with pytest.raises(flux.ShapeError, match=r"given a value of shape \(3,\)"):
        m(np.ones(3, "f"))


def test_inputs_take_the_declared_dtype(tmp_path):
    model, weights = mlp()
    m = flux.onnx.load(saved(model, tmp_path))
    x = np.arange(6).reshape(2, 3)
    np.testing.assert_allclose(m(x), np_mlp(x.astype("f"), *weights), rtol=1e-5)
    np.testing.assert_allclose(m(x.astype(np.float64)), np_mlp(x.astype("f"), *weights),
                               rtol=1e-5)
    indices = model_of([helper.make_node("Gather", ["table", "i"], ["y"])],
                       [tensor("i", INT64, [2])], [tensor("y", FLOAT, [2, 2])],
                       [numpy_helper.from_array(np.eye(3, 2, dtype="f"), "table")])
    g = flux.onnx.load(saved(indices, tmp_path, "gather.onnx"))
    np.testing.assert_array_equal(g(np.array([2, 0])), np.eye(3, 2)[[2, 0]])
    with pytest.raises(flux.FluxTypeError, match="input 'i' is declared as int64 values, "
                                                 "given float32 ones"):
        g(np.array([2.0, 0.0], "f"))


# -- flux's machinery: compile, train, print, save ----------------------------------------------


def test_it_compiles_and_its_graph_points_at_the_onnx_nodes(tmp_path):
    model, weights = mlp()
    m = flux.onnx.load(saved(model, tmp_path, "mlp.onnx"))
    x = np.ones((4, 3), "f")
    compiled = flux.compile(m, "numpy")
    np.testing.assert_allclose(compiled(x), np_mlp(x, *weights), rtol=1e-5)
    text = str(compiled.graph(x))
    assert "matmul x0 fc1.weight" in text
    assert "# mlp.onnx:1 in OnnxModel" in text      # node 1 of the file: fc1
    assert "# mlp.onnx:5 in OnnxModel" in text


def test_it_trains_with_flux_train(tmp_path):
    model, _ = mlp()
    m = flux.onnx.load(saved(model, tmp_path))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(32, 3)).astype("f")
    y = (x @ rng.normal(size=(3, 2))).astype("f")
    before = flux.mse(m(x), y)
    w = np.array(flux.params(m)["fc1.weight"].value)
    flux.train(m, [(x, y)] * 30, loss=flux.mse, opt=flux.SGD(lr=0.01))
    after = flux.mse(m(x), y)
    assert after < 0.5 * before
    assert not np.array_equal(flux.params(m)["fc1.weight"].value, w)


def test_its_gradients_are_those_of_the_same_affine_layers(tmp_path):
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(3, 2)).astype("f"), rng.normal(size=2).astype("f")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "b"], ["y"])]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 3])], [tensor("y", FLOAT, ["N", 2])],
                     [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "b")])
    m = flux.onnx.load(saved(model, tmp_path))
    a = flux.Affine(w, b)
    x = rng.normal(size=(5, 3)).astype("f")
    dy = rng.normal(size=(5, 2)).astype("f")
    (dx_m,) = flux.back(m, dy, x)
    (dx_a,) = flux.back(a, dy, x)
    np.testing.assert_allclose(dx_m, dx_a, rtol=1e-5)
    np.testing.assert_allclose(flux.params(m)["W"].grad, a.W.grad, rtol=1e-5)
    np.testing.assert_allclose(flux.params(m)["b"].grad, a.b.grad, rtol=1e-5)


def test_shapes_and_summary_print_it(tmp_path):
    model, _ = mlp()
    m = flux.onnx.load(saved(model, tmp_path, "mlp.onnx"))
    report = str(flux.shapes(m, (4, 3)))           # one ONNX node per "line" of the file
    assert "# mlp.onnx, line 1:\n" in report and "@ fc1.weight::(3, 5)::(4, 5)" in report
    assert report.endswith("+ fc2.bias::(2,)::(4, 2)")
    table = flux.summary(m, (4, 3))
    assert table.total == 3 * 5 + 5 + 5 * 2 + 2 + 1
    assert table.rows[0].type == "OnnxModel" and table.rows[0].output == (4, 2)


def test_save_and_load_keep_the_initializer_names(tmp_path):
    model, weights = mlp()
    path = saved(model, tmp_path)
    m = flux.onnx.load(path)
    flux.params(m)["fc1.bias"].value = np.full(5, 3.0, "f")
    flux.save(m, tmp_path / "trained.flux")
    fresh = flux.onnx.load(path)
    flux.load(fresh, tmp_path / "trained.flux")
    np.testing.assert_array_equal(flux.params(fresh)["fc1.bias"].value, np.full(5, 3.0))
    x = np.ones((2, 3), "f")
    np.testing.assert_array_equal(fresh(x), m(x))


def batchnorm_model(rng):
    stats = {"scale": rng.uniform(0.5, 1.5, 3), "bias": rng.normal(size=3),
             "mean": rng.normal(size=3), "var": rng.uniform(0.5, 2.0, 3)}
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"],
                              ["y"], epsilon=1e-5)]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 3, 4])], [tensor("y", FLOAT, ["N", 3, 4])],
                     [numpy_helper.from_array(v.astype("f"), k) for k, v in stats.items()])
    return model, stats


def np_batchnorm(x, s):
    c = (slice(None), None)          # per channel, the axis after the batch
    return (x - s["mean"][c]) / np.sqrt(s["var"][c] + 1e-5) * s["scale"][c] + s["bias"][c]


def test_batchnorm_statistics_are_buffers_not_trained_but_saved(tmp_path):
    rng = np.random.default_rng(5)
    model, stats = batchnorm_model(rng)
    path = saved(model, tmp_path)
    m = flux.onnx.load(path)
    assert sorted(flux.params(m)) == ["bias", "scale"]          # mean and var: not trained
    x = rng.normal(size=(6, 3, 4)).astype("f")
    compiled = flux.compile(m)
    np.testing.assert_allclose(compiled(x), np_batchnorm(x, stats), rtol=1e-5, atol=1e-6)
    flux.train(compiled, [(x, np.zeros_like(x))] * 3, loss=flux.mse, opt=flux.SGD(0.1))
    np.testing.assert_array_equal(m.var.value, stats["var"].astype("f"))
    # a new value (here from a saved file) is seen by the compiled model without a new trace
    m.mean.value = np.full(3, 2.0, "f")
    flux.save(m, tmp_path / "m.flux")
    fresh = flux.onnx.load(path)
    compiled_fresh = flux.compile(fresh)
    before = compiled_fresh(x)
    flux.load(fresh, tmp_path / "m.flux")
    after = compiled_fresh(x)
    np.testing.assert_array_equal(fresh.mean.value, np.full(3, 2.0))
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, compiled(x), rtol=1e-6)


def test_it_loads_from_a_model_proto_and_from_bytes(tmp_path):
    model, weights = mlp()
    x = np.ones((2, 3), "f")
    for source in (model, model.SerializeToString()):
        np.testing.assert_allclose(flux.onnx.load(source)(x), np_mlp(x, *weights), rtol=1e-5)
    assert len(model.graph.initializer) == 5       # the caller's proto is left as it was


# -- constants= and what must be known while tracing ---------------------------------------------


def reshape_by_input():
    return model_of([helper.make_node("Reshape", ["x", "shape"], ["y"], name="to_rows")],
                    [tensor("x", FLOAT, [6]), tensor("shape", INT64, [2])],
                    [tensor("y", FLOAT, None)])


def test_an_input_that_must_be_known_says_so_and_constants_fix_it(tmp_path):
    path = saved(reshape_by_input(), tmp_path, "reshape.onnx")
    m = flux.onnx.load(path)
    x = np.arange(6, dtype="f")
    with pytest.raises(flux.FluxValueError) as error:
        m(x, np.array([2, 3]))
    message = str(error.value)
    assert f"{path}: ONNX node 'to_rows' (Reshape):" in message
    assert "its input shape must be known when the model is traced" in message
    assert "flux.onnx.load(path, constants={name: array})" in message
    fixed = flux.onnx.load(path, constants={"shape": np.array([2, 3])})
    assert fixed.input_names == ["x"]
    np.testing.assert_array_equal(fixed(x), x.reshape(2, 3))


def test_constants_are_checked(tmp_path):
    path = saved(reshape_by_input(), tmp_path, "reshape.onnx")
    with pytest.raises(flux.FluxValueError, match="constants= names 'shap', which is not an "
                                                  "input of .*reshape.onnx; its inputs are "
                                                  "x, shape"):
        flux.onnx.load(path, constants={"shap": [2, 3]})
    with pytest.raises(flux.ShapeError, match=r"constants\['shape'\] has shape \(3,\)"):
        flux.onnx.load(path, constants={"shape": [1, 2, 3]})


def test_shape_arithmetic_folds_into_a_static_reshape(tmp_path):
    """Shape → Gather → Unsqueeze → Concat → Reshape: computed while tracing, for any batch."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "rest"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "rest")]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 2, 3])], [tensor("y", FLOAT, None)],
                     inits)
    m = flux.onnx.load(saved(model, tmp_path))
    for n in (2, 5):
        x = np.random.default_rng(n).normal(size=(n, 2, 3)).astype("f")
        np.testing.assert_array_equal(m(x), x.reshape(n, 6))
    graph = flux.compile(m).graph(np.ones((5, 2, 3), "f"))
    assert [e.prim.name for e in graph.eqns] == ["reshape"]


def test_a_constant_of_the_batchs_shape_stays_a_broadcast(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["ones"],
                              value=numpy_helper.from_array(np.ones(1, "f"))),
             helper.make_node("Add", ["x", "ones"], ["y"])]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 4])], [tensor("y", FLOAT, ["N", 4])])
    m = flux.onnx.load(saved(model, tmp_path))
    x = np.arange(12, dtype="f").reshape(3, 4)
    np.testing.assert_array_equal(m(x), x + 1)
    graph = flux.compile(m).graph(x)
    assert all(np.size(c) <= 1 for c in graph.const_values)       # no (3, 4) constant
    assert "broadcast_to" in [e.prim.name for e in graph.eqns]


# -- control flow -------------------------------------------------------------------------------


def body_graph(nodes, inputs, outputs, name="body"):
    return helper.make_graph(nodes, name, inputs, outputs)


def test_if_on_a_known_condition_runs_one_branch_and_on_a_traced_one_selects(tmp_path):
    then = body_graph([helper.make_node("Neg", ["x"], ["t"])], [], [tensor("t", FLOAT, [2])])
    other = body_graph([helper.make_node("Exp", ["x"], ["e"])], [], [tensor("e", FLOAT, [2])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=then, else_branch=other),
             helper.make_node("If", ["yes"], ["z"], then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(np.zeros((), "f"), "zero"),
             numpy_helper.from_array(np.array(True), "yes")]
    model = model_of(nodes, [tensor("x", FLOAT, [2])],
                     [tensor("y", FLOAT, [2]), tensor("z", FLOAT, [2])], inits, opset=13)
    m = flux.onnx.load(saved(model, tmp_path))
    for x in (np.array([1.0, 2.0], "f"), np.array([-1.0, -2.0], "f")):
        y, z = m(x)
        np.testing.assert_allclose(y, -x if x.sum() > 0 else np.exp(x), rtol=1e-6)
        np.testing.assert_array_equal(z, -x)


def test_loop_and_scan_are_unrolled(tmp_path):
    # Loop: h ← h·2 + x, 3 times, with the iteration number as a scan output
    loop_body = body_graph(
        [helper.make_node("Mul", ["h_in", "two"], ["h2"]),
         helper.make_node("Add", ["h2", "x"], ["h_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["i"], ["i_out"])],
        [tensor("i", INT64, []), tensor("cond_in", TensorProto.BOOL, []),
         tensor("h_in", FLOAT, [2])],
        [tensor("cond_out", TensorProto.BOOL, []), tensor("h_out", FLOAT, [2]),
         tensor("i_out", INT64, [])])
    # Scan: running sums of the rows of x
    scan_body = body_graph(
        [helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["sum"])],
        [tensor("acc_in", FLOAT, [2]), tensor("row", FLOAT, [2])],
        [tensor("acc_out", FLOAT, [2]), tensor("sum", FLOAT, [2])])
    nodes = [helper.make_node("Loop", ["three", "", "zeros"], ["h", "steps"], body=loop_body),
             helper.make_node("Scan", ["zeros", "rows"], ["total", "sums"], body=scan_body,
                              num_scan_inputs=1)]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "three"),
             numpy_helper.from_array(np.zeros(2, "f"), "zeros"),
             numpy_helper.from_array(np.array(2.0, "f"), "two")]
    model = model_of(nodes, [tensor("x", FLOAT, [2]), tensor("rows", FLOAT, [4, 2])],
                     [tensor("h", FLOAT, [2]), tensor("steps", INT64, [3]),
                      tensor("total", FLOAT, [2]), tensor("sums", FLOAT, [4, 2])], inits)
    m = flux.onnx.load(saved(model, tmp_path))
    x = np.array([1.0, -1.0], "f")
    rows = np.arange(8, dtype="f").reshape(4, 2)
    h, steps, total, sums = m(x, rows)
    np.testing.assert_allclose(h, 7 * x)                      # ((x·2 + x)·2 + x)
    np.testing.assert_array_equal(steps, [0, 1, 2])
    np.testing.assert_allclose(total, rows.sum(0))
    np.testing.assert_allclose(sums, np.cumsum(rows, 0))


# -- errors -------------------------------------------------------------------------------------


def test_an_unknown_operator_is_refused_at_load_naming_it_and_its_inputs(tmp_path):
    nodes = [helper.make_node("Neg", ["x"], ["h"]),
             helper.make_node("Frobnicate", ["h", "x"], ["y"], name="weird")]
    model = model_of(nodes, [tensor("x", FLOAT, ["N", 3])], [tensor("y", FLOAT, None)])
    path = saved(model, tmp_path, "weird.onnx")
    with pytest.raises(flux.FluxValueError) as error:
        flux.onnx.load(path)
    message = str(error.value)
    assert message.startswith(f"{path}: flux cannot import node 'weird' (Frobnicate): ONNX "
                              f"operator Frobnicate (opset 17) is not in flux's table")
    assert "Its inputs: h (N, 3) float32, x (N, 3) float32." in message


def test_an_unknown_operator_inside_a_subgraph_is_refused_at_load(tmp_path):
    then = body_graph([helper.make_node("Frobnicate", ["x"], ["t"], name="deep")], [],
                      [tensor("t", FLOAT, [2])])
    other = body_graph([helper.make_node("Neg", ["x"], ["e"])], [], [tensor("e", FLOAT, [2])])
    model = model_of([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                     [tensor("x", FLOAT, [2]), tensor("c", TensorProto.BOOL, [])],
                     [tensor("y", FLOAT, [2])])
    with pytest.raises(flux.FluxValueError, match=r"cannot import node 'deep' \(Frobnicate\)"):
        flux.onnx.load(saved(model, tmp_path))


def test_an_error_inside_a_node_names_the_node_and_the_original_message(tmp_path):
    target = numpy_helper.from_array(np.array([4, 4], np.int64), "target")
    model = model_of([helper.make_node("Neg", ["x"], ["h"]),
                      helper.make_node("Reshape", ["h", "target"], ["y"], name="square")],
                     [tensor("x", FLOAT, [6])], [tensor("y", FLOAT, None)], [target])
    path = saved(model, tmp_path, "bad.onnx")
    m = flux.onnx.load(path)
    with pytest.raises(flux.FluxValueError) as error:
        m(np.ones(6, "f"))
    message = str(error.value)
    assert f"{path}: ONNX node 'square' (Reshape): cannot reshape a value of shape (6,) " \
           f"(6 elements) to [4, 4]" in message
    assert "(inputs: h (6,) float32, target (2,) int64 = [4, 4])" in message


def test_a_shape_error_of_flux_inside_a_node_names_it_too(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 2), "f"), "W")
    model = model_of([helper.make_node("MatMul", ["x", "W"], ["y"], name="proj")],
                     [tensor("x", FLOAT, None)], [tensor("y", FLOAT, None)], [w])
    m = flux.onnx.load(saved(model, tmp_path, "proj.onnx"))
    with pytest.raises(flux.ShapeError, match=r"proj.onnx: ONNX node 'proj' \(MatMul\): "
                                              r"matmul: cannot multiply \(2, 3\) by \(4, 2\)"):
        m(np.ones((2, 3), "f"))


def test_other_domains_and_opsets_are_refused_naming_the_file(tmp_path):
    custom = model_of([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")],
                      [tensor("x", FLOAT, [2])], [tensor("y", FLOAT, [2])])
    custom.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    path = saved(custom, tmp_path, "ms.onnx")
    with pytest.raises(flux.FluxValueError, match=f"{path}: node 'Gelu' is Gelu, an operator "
                                                  f"of the domain 'com.microsoft'"):
        flux.onnx.load(path)
    for opset in (MIN_OPSET - 1, MAX_OPSET + 1):
        old = model_of([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", FLOAT, [2])],
                       [tensor("y", FLOAT, [2])], opset=opset)
        path = saved(old, tmp_path, f"opset{opset}.onnx")
        with pytest.raises(flux.FluxValueError, match=f"{path} uses ONNX opset {opset}; flux "
                                                      f"reads opsets {MIN_OPSET} to {MAX_OPSET}"):
            flux.onnx.load(path)


def test_a_model_path_that_is_not_a_string_is_a_type_error():
    with pytest.raises(flux.FluxTypeError, match="takes a path .*found int"):
        flux.onnx.load(42)


def test_load_reads_only_what_it_is_given(tmp_path):
    model, _ = mlp()
    path = saved(model, tmp_path)
    assert os.listdir(tmp_path) == ["model.onnx"]
    flux.onnx.load(path)
    assert os.listdir(tmp_path) == ["model.onnx"]


# -- round trips with flux.onnx.export ----------------------------------------------------------


def ort_outputs(path, *xs):
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs)})


def test_an_imported_model_exports_again(tmp_path):
    model, weights = mlp()
    m = flux.onnx.load(saved(model, tmp_path))
    again = flux.onnx.export(m, tmp_path / "again.onnx", (2, 3))
    assert {t.name for t in again.graph.initializer} >= {"fc1.weight", "fc1.bias",
                                                         "fc2.weight", "fc2.bias"}
    for n in (2, 5):
        x = np.random.default_rng(n).normal(size=(n, 3)).astype("f")
        (y,) = ort_outputs(tmp_path / "again.onnx", x)
        np.testing.assert_allclose(y, np_mlp(x, *weights), rtol=1e-5, atol=1e-6)


def test_a_flux_loop_comes_back_as_a_flux_loop(tmp_path):
    """An unrolled LSTM exports as one ONNX Scan; imported, the Scan is one flux `scan`
    again (not 20 copies of the step), with flux's numbers; its hidden state, an input with
    a default, may be passed."""
    flux.seed(0)
    unrolled = flux.unroll(flux.Chain(flux.LSTM(6, 8), flux.Affine(8, 6)), 20)
    x = np.random.default_rng(0).normal(size=(3, 20, 6)).astype("f")
    flux.onnx.export(unrolled, tmp_path / "rnn.onnx", x)
    expected = flux.compile(unrolled)(x)
    m = flux.onnx.load(tmp_path / "rnn.onnx")
    y, h, c = m(x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert [e.prim.name for e in flux.compile(m).graph(x).eqns].count("scan") == 1
    assert m.default_inputs == ["model.layers.0.y", "model.layers.0.state"]
    y2, _, _ = m(x, h, c)                         # the next chunk, from the final state
    assert not np.allclose(y2, y)


# -- operators written out of others ------------------------------------------------------------


def test_an_operator_onnx_defines_as_a_function_is_expanded(tmp_path):
    """RMSNormalization is not in flux's table: ONNX's own definition of it (a function of
    ReduceMean, Sqrt, Div ...) runs instead, its equations pointing at the node."""
    scale = np.array([1.0, 2.0, 0.5, -1.0], "f")
    model = model_of([helper.make_node("RMSNormalization", ["x", "scale"], ["y"], name="rms",
                                       epsilon=1e-5)],
                     [tensor("x", FLOAT, ["N", 4])], [tensor("y", FLOAT, ["N", 4])],
                     [numpy_helper.from_array(scale, "scale")], opset=23)
    m = flux.onnx.load(saved(model, tmp_path, "rms.onnx"))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype("f")
    expected = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(m(x), expected, rtol=1e-5, atol=1e-6)
    graph = flux.compile(m).graph(x)
    assert all(e.source.file == "rms.onnx" and e.source.line == 1 for e in graph.eqns)


def test_top_k_of_a_traced_value_gives_numpys_answer_and_a_gradient(tmp_path):
    k = numpy_helper.from_array(np.array([2], np.int64), "k")
    model = model_of([helper.make_node("TopK", ["x", "k"], ["values", "indices"], axis=1)],
                     [tensor("x", FLOAT, [2, 5])],
                     [tensor("values", FLOAT, [2, 2]), tensor("indices", INT64, [2, 2])], [k])
    m = flux.onnx.load(saved(model, tmp_path))
    x = np.array([[1, 5, 3, 5, 2], [0, -1, 4, 2, 4]], "f")
    values, indices = m(x)
    np.testing.assert_array_equal(indices, [[1, 3], [2, 4]])      # ties: the lower index first
    np.testing.assert_array_equal(values, [[5, 5], [4, 4]])
    dx, = flux.back(lambda x: m(x)[0], np.ones((2, 2), "f"), x)
    np.testing.assert_array_equal(dx, [[0, 1, 0, 1, 0], [0, 0, 1, 0, 1]])


@pytest.mark.parametrize("directions", [(1, 1), (1, 0), (0, 1)])
def test_scan_directions(directions, tmp_path):
    """Scan inputs read from the end (direction 1) and outputs stacked from the end: one flux
    loop running backwards when both are, unrolled steps otherwise; oracle: NumPy."""
    body = body_graph([helper.make_node("Add", ["acc_in", "row"], ["acc_out"]),
                       helper.make_node("Identity", ["acc_out"], ["sum"])],
                      [tensor("acc_in", FLOAT, [2]), tensor("row", FLOAT, [2])],
                      [tensor("acc_out", FLOAT, [2]), tensor("sum", FLOAT, [2])])
    node = helper.make_node("Scan", ["zeros", "rows"], ["total", "sums"], body=body,
                            num_scan_inputs=1, scan_input_directions=[directions[0]],
                            scan_output_directions=[directions[1]])
    model = model_of([node], [tensor("rows", FLOAT, [4, 2])],
                     [tensor("total", FLOAT, [2]), tensor("sums", FLOAT, [4, 2])],
                     [numpy_helper.from_array(np.zeros(2, "f"), "zeros")])
    m = flux.onnx.load(saved(model, tmp_path))
    rows = np.arange(8, dtype="f").reshape(4, 2) ** 2
    steps = np.cumsum(rows[::-1] if directions[0] else rows, axis=0)   # in the order run
    total, sums = m(rows)
    np.testing.assert_allclose(total, rows.sum(0))
    np.testing.assert_allclose(sums, steps[::-1] if directions[1] else steps)
    loops = [e.prim.name for e in flux.compile(m).graph(rows).eqns].count("scan")
    assert loops == (1 if directions == (1, 1) else 0)
