"""flux.save / flux.load: parameters by path in a file that cannot run code, written
atomically, checked completely before anything changes."""
import os
import pickle

import numpy as np
import pytest

import flux
from flux import Affine, Chain, relu


def mlp():
    return Chain(Affine(3, 4), relu, Affine(4, 2))


def values(model):
    return {k: p.value.copy() for k, p in flux.params(model).items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_round_trip_restores_every_parameter_and_the_outputs(tmp_path):
    flux.seed(1)
    source, target = mlp(), mlp()
    path = tmp_path / "model.flux"
    flux.save(source, path)
    flux.load(target, path)
    assert_same(values(source), values(target))
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    np.testing.assert_array_equal(source(x), target(x))


def test_written_exactly_at_the_path_and_nothing_else_is_left(tmp_path):
    path = tmp_path / "weights"          # no suffix: none is added
    flux.save(mlp(), path)
    assert os.listdir(tmp_path) == ["weights"]


def test_the_file_holds_no_pickles_and_records_dtypes_shapes_and_version(tmp_path):
    path = tmp_path / "m.flux"
    flux.save(mlp(), path)
    with np.load(path, allow_pickle=False) as archive:   # would raise on an object array
        assert set(archive.files) == {"layers.0.W", "layers.0.b", "layers.2.W", "layers.2.b",
                                      "__flux__"}
        assert archive["layers.0.W"].shape == (3, 4)
        meta = str(archive["__flux__"])
    assert '"version": 1' in meta and '"dtype": "<f4"' in meta and '"shape": [3, 4]' in meta


def test_a_shared_param_is_saved_once(tmp_path):
    W = flux.param(np.ones((2, 2)))
    model = Chain(Affine(W, np.zeros(2)), Affine(W, np.zeros(2)))
    flux.save(model, tmp_path / "m")
    with np.load(tmp_path / "m") as archive:
        assert sorted(archive.files) == ["__flux__", "layers.0.W", "layers.0.b", "layers.1.b"]


def test_compiled_and_unrolled_models(tmp_path):
    flux.seed(2)
    model = flux.unroll(flux.LSTM(3, 4), 5, stateful=False)
    flux.save(flux.compile(model, "numpy"), tmp_path / "lstm")
    other = flux.unroll(flux.LSTM(3, 4), 5, stateful=False)
    flux.load(flux.compile(other, "numpy"), tmp_path / "lstm")
    assert_same(values(model), values(other))


def test_a_compiled_model_sees_loaded_values_at_its_next_call(tmp_path):
    flux.seed(3)
    source, target = mlp(), mlp()
    compiled = flux.compile(target, "numpy")
    x = np.ones((2, 3), np.float32)
    compiled(x)
    flux.save(source, tmp_path / "m")
    flux.load(target, tmp_path / "m")
    np.testing.assert_array_equal(compiled(x), source(x))


def damaged(tmp_path, **entries):
    """A flux file of `mlp()` with entries replaced (None removes one)."""
    path = tmp_path / "good"
    flux.save(mlp(), path)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    for k, v in entries.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


@pytest.mark.parametrize("entries, words", [
    ({"layers.0.W": None}, ["no entry", "layers.0.W"]),
    ({"layers.9.W": np.zeros(2, np.float32)}, ["does not have", "layers.9.W"]),
    ({"layers.0.W": np.zeros((4, 3), np.float32)}, ["layers.0.W", "(4, 3)", "(3, 4)"]),
    ({"layers.0.b": np.zeros(4, np.float64)}, ["layers.0.b", "float64", "float32"]),
    ({"__flux__": None}, ["not a flux parameter file"]),
])
def test_a_bad_file_raises_naming_the_entry_and_changes_nothing(tmp_path, entries, words):
    bad = damaged(tmp_path, **entries)
    model = mlp()
    before = values(model)
    with pytest.raises(flux.FluxError) as info:
        flux.load(model, bad)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
    assert_same(before, values(model))


def test_a_truncated_file_raises_and_changes_nothing(tmp_path):
    path = tmp_path / "m"
    flux.save(mlp(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    model = mlp()
    before = values(model)
    with pytest.raises(flux.FluxError, match="cannot be read"):
        flux.load(model, path)
    assert_same(before, values(model))


def test_a_pickle_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    path = tmp_path / "evil.npz"
    np.savez(path, **{"layers.0.W": np.array([Boom()], dtype=object)})
    with pytest.raises(flux.FluxError):
        flux.load(mlp(), path)
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"x": 1}, f)
    with pytest.raises(flux.FluxError):
        flux.load(mlp(), tmp_path / "plain.pkl")


def test_a_crash_while_writing_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m"
    flux.seed(4)
    old = mlp()
    flux.save(old, path)
    original = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt("killed mid-write")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        flux.save(mlp(), path)
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["m"]


def test_save_and_load_refuse_what_is_not_a_model(tmp_path):
    with pytest.raises(flux.FluxError):
        flux.save(42, tmp_path / "x")
    with pytest.raises(flux.FluxError):
        flux.load("model", tmp_path / "x")
