"""flux.onnx.load against damaged, foreign and hostile files: each is a FluxError naming the
file, raised before anything in the model runs, without reading any file outside the model's
folder, and without allocating what the file merely claims."""
import builtins
import os
import tracemalloc

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import flux  # noqa: E402
import flux.onnx  # noqa: E402
import flux.onnx.files  # noqa: E402
import flux.onnx.interpret  # noqa: E402
from flux.onnx.proto import MAX_OPSET, MIN_OPSET  # noqa: E402

FLOAT = TensorProto.FLOAT


def tensor(name, dims, elem=FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def model_of(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def affine_model():
    w = numpy_helper.from_array(np.ones((3, 2), "f"), "W")
    return model_of([helper.make_node("MatMul", ["x", "W"], ["y"])], [tensor("x", ["N", 3])],
                    [tensor("y", ["N", 2])], [w])


@pytest.fixture(autouse=True)
def nothing_runs(monkeypatch):
    """No node of a refused model is ever run (and none of these models loads at all)."""
    def ran(*args, **kwargs):
        raise AssertionError("a node ran")
    monkeypatch.setattr(flux.onnx.interpret.Program, "apply", ran)


def refused(path, match):
    with pytest.raises(flux.FluxError) as error:
        flux.onnx.load(path)
    assert str(path) in str(error.value)
    assert match in str(error.value), str(error.value)
    return error.value


# -- not an ONNX model --------------------------------------------------------------------------


def test_a_missing_file_a_folder_and_an_empty_file(tmp_path):
    refused(tmp_path / "nothing.onnx", "no such file")
    refused(tmp_path, "is not a file")
    (tmp_path / "empty.onnx").write_bytes(b"")
    refused(tmp_path / "empty.onnx", "is empty, not an ONNX model")


def test_a_truncated_model(tmp_path):
    data = affine_model().SerializeToString()
    for cut in (len(data) // 2, len(data) - 3, 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        refused(path, "is not an ONNX model")


def test_files_that_are_not_onnx(tmp_path):
    np.savez(tmp_path / "weights.npz", a=np.ones(3))
    (tmp_path / "notes.onnx").write_text("this is not a model\n" * 20)
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    for name in ("weights.npz", "notes.onnx", "noise.onnx"):
        refused(tmp_path / name, "is not an ONNX model")


def test_unknown_opsets_and_foreign_domains(tmp_path):
    for opset in (MAX_OPSET + 1, MIN_OPSET - 1):
        text = f"uses ONNX opset {opset}; flux reads opsets {MIN_OPSET} to {MAX_OPSET}"
        m = affine_model()
        m.opset_import[0].version = opset
        onnx.save(m, str(tmp_path / f"o{opset}.onnx"))
        refused(tmp_path / f"o{opset}.onnx", text)
    m = affine_model()
    m.opset_import[0].domain = "ai.onnx.ml"
    onnx.save(m, str(tmp_path / "ml.onnx"))
    refused(tmp_path / "ml.onnx", "imports no default-domain ONNX opset")


# -- graphs that are not graphs -----------------------------------------------------------------


def test_a_cycle_and_a_value_used_before_it_is_defined(tmp_path):
    cycle = model_of([helper.make_node("Add", ["x", "b"], ["a"], name="first"),
                      helper.make_node("Neg", ["a"], ["b"], name="second")],
                     [tensor("x", [2])], [tensor("b", [2])])
    onnx.save(cycle, str(tmp_path / "cycle.onnx"))
    refused(tmp_path / "cycle.onnx", "the graph has a cycle: node 'first' (Add) uses 'b'")
    order = model_of([helper.make_node("Neg", ["a"], ["y"], name="late"),
                      helper.make_node("Neg", ["x"], ["a"], name="early")],
                     [tensor("x", [2])], [tensor("y", [2])])
    onnx.save(order, str(tmp_path / "order.onnx"))
    refused(tmp_path / "order.onnx", "node 'late' (Neg) uses 'a' before node 'early' (Neg) "
                                     "defines it")


def test_undefined_values_and_repeated_names(tmp_path):
    cases = {
        "undefined.onnx": (model_of([helper.make_node("Neg", ["ghost"], ["y"])],
                                    [tensor("x", [2])], [tensor("y", [2])]),
                           "uses 'ghost', which nothing defines"),
        "no_output.onnx": (model_of([helper.make_node("Neg", ["x"], ["y"])],
                                    [tensor("x", [2])], [tensor("z", [2])]),
                           "has output 'z', which nothing defines"),
        "twice.onnx": (model_of([helper.make_node("Neg", ["x"], ["y"]),
                                 helper.make_node("Exp", ["x"], ["y"], name="again")],
                                [tensor("x", [2])], [tensor("y", [2])]),
                       "value 'y' is defined twice"),
        "outputs.onnx": (model_of([helper.make_node("Neg", ["x"], ["y"])], [tensor("x", [2])],
                                  [tensor("y", [2]), tensor("y", [2])]),
                         "lists output(s) y more than once"),
    }
    for name, (m, text) in cases.items():
        onnx.save(m, str(tmp_path / name))
        refused(tmp_path / name, text)


def test_initializers_that_contradict_the_declared_shapes(tmp_path):
    w = numpy_helper.from_array(np.ones((3, 2), "f"), "W")
    m = model_of([helper.make_node("MatMul", ["x", "W"], ["y"])],
                 [tensor("x", ["N", 3]), tensor("W", [3, 5])], [tensor("y", ["N", 2])], [w])
    onnx.save(m, str(tmp_path / "shape.onnx"))
    refused(tmp_path / "shape.onnx", "initializer 'W' has shape (3, 2), but the graph declares "
                                     "'W' with shape (3, 5)")
    m = model_of([helper.make_node("MatMul", ["x", "W"], ["y"])],
                 [tensor("x", ["N", 3])], [tensor("y", ["N", 2])], [w])
    m.graph.value_info.append(tensor("W", [3, 2], TensorProto.DOUBLE))
    onnx.save(m, str(tmp_path / "dtype.onnx"))
    refused(tmp_path / "dtype.onnx", "initializer 'W' holds FLOAT values, but the graph "
                                     "declares 'W' as DOUBLE")


# -- tensors that lie about their size ----------------------------------------------------------


def test_a_bomb_initializer_is_refused_without_allocating(tmp_path):
    bomb = TensorProto(name="W", data_type=FLOAT, dims=[1 << 20, 1 << 20], raw_data=b"\0" * 16)
    m = model_of([helper.make_node("MatMul", ["x", "W"], ["y"])], [tensor("x", ["N", 1 << 20])],
                 [tensor("y", None)], [bomb])
    onnx.save(m, str(tmp_path / "bomb.onnx"))
    tracemalloc.start()
    try:
        refused(tmp_path / "bomb.onnx", "tensor 'W' declares shape (1048576, 1048576) "
                                        "(1,099,511,627,776 values, 4,398,046,511,104 bytes) "
                                        "but holds 16 bytes")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20


def test_typed_data_of_the_wrong_length(tmp_path):
    short = TensorProto(name="W", data_type=FLOAT, dims=[3, 2], float_data=[1.0, 2.0])
    m = model_of([helper.make_node("MatMul", ["x", "W"], ["y"])], [tensor("x", ["N", 3])],
                 [tensor("y", None)], [short])
    onnx.save(m, str(tmp_path / "short.onnx"))
    refused(tmp_path / "short.onnx", "declares shape (3, 2) (6 values, 24 bytes) but holds 2 "
                                     "values")


def test_a_model_larger_than_the_free_memory(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    onnx.save(affine_model(), str(path))
    monkeypatch.setattr(flux.onnx.files, "free_memory", lambda: 64)
    refused(path, "is too large for the free memory")


def test_external_data_larger_than_the_free_memory(tmp_path):
    """A sparse file: its size is real (stat says so), its blocks are not."""
    data = tmp_path / "weights.bin"
    size = 1 << 42                                  # 4 TiB, far beyond any machine's memory
    with open(data, "wb") as f:
        try:
            f.truncate(size)
        except OSError:
            pytest.skip("this filesystem has no sparse files of 4 TiB")
    m = external_model("weights.bin", dims=[size // 4], length=size)
    onnx.save(m, str(tmp_path / "big.onnx"))
    refused(tmp_path / "big.onnx", "is too large for the free memory")


# -- external data ------------------------------------------------------------------------------


def external_model(location, dims=(3, 2), offset=None, length=None):
    w = TensorProto(name="W", data_type=FLOAT, dims=list(dims))
    w.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    for key, value in entries.items():
        w.external_data.add(key=key, value=value)
    return model_of([helper.make_node("Identity", ["W"], ["y"])], [], [tensor("y", None)], [w])


@pytest.fixture
def secret(tmp_path):
    """A folder for the model, and a marker file beside it that must never be opened."""
    folder = tmp_path / "model"
    folder.mkdir()
    marker = tmp_path / "secret.bin"
    marker.write_bytes(np.ones(6, "f").tobytes())
    return folder, marker


@pytest.fixture
def opened(monkeypatch):
    """Every path opened (builtins.open, os.open) while the test runs."""
    paths = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *args, **kwargs):
        paths.append(os.path.realpath(file) if isinstance(file, (str, os.PathLike)) else file)
        return real_open(file, *args, **kwargs)

    def spy_os_open(path, *args, **kwargs):
        paths.append(os.path.realpath(path))
        return real_os_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    return paths


def test_external_data_outside_the_folder_is_never_read(secret, opened):
    folder, marker = secret
    os.symlink(marker, folder / "link.bin")
    cases = {"absolute.onnx": (str(marker), "an absolute path"),
             "climb.onnx": ("../secret.bin", "a path that climbs out with '..'"),
             "hidden.onnx": ("sub/../../secret.bin", "climbs out"),
             "link.onnx": ("link.bin", f"which resolves to {marker}, outside it"),
             "nul.onnx": ("w\0.bin", "a path with a NUL character")}
    for name, (location, text) in cases.items():
        onnx.save(external_model(location), str(folder / name))
        error = refused(folder / name, text)
        assert "flux reads external data only from files inside the model's folder" in str(error)
    assert str(marker) not in opened and os.path.realpath(marker) not in opened


def test_external_data_that_does_not_fit(secret, opened):
    folder, _ = secret
    (folder / "w.bin").write_bytes(np.ones(6, "f").tobytes())
    cases = {"beyond.onnx": (dict(offset=16, length=24), "reads bytes 16 to 40 of 'w.bin', "
                                                         "which has 24"),
             "short.onnx": (dict(length=8), "its external data holds 8 bytes"),
             "missing.onnx": (dict(), "does not exist")}
    for name, (where, text) in cases.items():
        m = external_model("w.bin" if name != "missing.onnx" else "gone.bin", **where)
        onnx.save(m, str(folder / name))
        refused(folder / name, text)
    assert str(folder / "w.bin") not in opened


def test_external_data_inside_the_folder_loads(secret):
    folder, _ = secret
    weights = np.arange(6, dtype="f").reshape(3, 2)
    (folder / "w.bin").write_bytes(b"pad!" + weights.tobytes())
    onnx.save(external_model("w.bin", offset=4, length=24), str(folder / "ok.onnx"))
    m = flux.onnx.load(folder / "ok.onnx")
    np.testing.assert_array_equal(flux.params(m)["W"].value, weights)


def test_a_model_given_as_bytes_cannot_reference_external_data():
    m = external_model("w.bin")
    with pytest.raises(flux.FluxValueError, match="the ONNX model given as bytes: tensor 'W' "
                                                  "keeps its data in an external file"):
        flux.onnx.load(m.SerializeToString())


def test_unsupported_tensor_types_are_refused(tmp_path):
    strings = helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"b"])
    m = model_of([helper.make_node("Identity", ["x"], ["y"])], [tensor("x", [2])],
                 [tensor("y", [2])], [strings])
    onnx.save(m, str(tmp_path / "strings.onnx"))
    refused(tmp_path / "strings.onnx", "tensor 'names' has type STRING")
    m = model_of([helper.make_node("Identity", ["x"], ["y"])],
                 [tensor("x", [2], TensorProto.BFLOAT16)], [tensor("y", [2])])
    onnx.save(m, str(tmp_path / "bf16.onnx"))
    refused(tmp_path / "bf16.onnx", "graph input 'x' is a BFLOAT16 tensor")
