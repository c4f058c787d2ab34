"""Batch and Seq: the seed's "Batching" page and the contract's examples, the sequence
behaviour, every utility and every error, and properties checked against `np.stack` and
plain list slicing as oracles."""
from collections import namedtuple
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import flux
from flux import FluxError, FluxTypeError, FluxValueError, ShapeError
from flux.data.batch import Batch, Seq, rawbatch
from flux.data.batching import batches, batchone, chunk, rpad, seqs, unwrap

# One-hot DNA, columns [A, T, C, G] (the seed's x1, x2)
X1 = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
X2 = [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]


# -- the seed's "Batching" page --------------------------------------------------------------

def test_seed_basics_batch_of_vectors():
    xs = Batch([[1, 2, 3], [4, 5, 6]])
    assert repr(xs) == "2-element Batch of ndarray:\n [1, 2, 3]\n [4, 5, 6]"
    np.testing.assert_array_equal(xs[0], [1, 2, 3])             # the seed's xs[1]
    assert [list(x) for x in xs] == [[1, 2, 3], [4, 5, 6]]      # iterating over them
    raw = rawbatch(xs)
    assert isinstance(raw, np.ndarray) and raw.shape == (2, 3)
    np.testing.assert_array_equal(raw, [[1, 2, 3], [4, 5, 6]])


def test_seed_batch_of_matrices():
    xs = Batch([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    assert repr(xs) == "2-element Batch of ndarray:\n [[1, 2], [3, 4]]\n [[5, 6], [7, 8]]"
    raw = rawbatch(xs)
    assert raw.shape == (2, 2, 2)
    np.testing.assert_array_equal(raw[1], [[5, 6], [7, 8]])     # np.stack, not column-major
    np.testing.assert_array_equal(raw, np.stack([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]))


def test_seed_map_flatten():
    xs = Batch([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    flat = xs.map(np.ravel)
    assert type(flat) is Batch
    assert flat == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # flattening each point is the batched flatten, which keeps the first axis
    np.testing.assert_array_equal(rawbatch(flat), flux.flatten(rawbatch(xs)))


def test_seed_dna_seq():
    x1, x2 = Seq(X1), Seq(X2)
    np.testing.assert_array_equal(rawbatch(x1), X1)
    assert rawbatch(x1).shape == (3, 4) and rawbatch(x2).shape == (3, 4)
    assert repr(x1) == "3-element Seq of ndarray:\n [0, 1, 0, 0]\n [1, 0, 0, 0]\n [0, 0, 0, 1]"


def test_seed_nesting():
    x1, x2 = Seq(X1), Seq(X2)
    xs = Batch([x1, x2])
    assert repr(xs) == ("2-element Batch of Seq of ndarray:\n"
                        " [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]\n"
                        " [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]")
    assert rawbatch(xs).shape == (2, 3, 4)
    assert xs == [X1, X2]                                       # a list of lists of lists
    assert type(xs[0]) is Seq and xs[0] == x1 and xs[1] == x2
    np.testing.assert_array_equal(xs[1][2], [0, 0, 1, 0])
    np.testing.assert_array_equal(rawbatch(xs), np.stack([X1, X2]))


# -- the contract's examples, verbatim --------------------------------------------------------

def test_contract_examples():
    xs = Batch([[1, 2, 3], [4, 5, 6]])
    assert (xs == [[1, 2, 3], [4, 5, 6]]) is True
    assert len(xs) == 2
    assert repr(xs[0]) == "array([1, 2, 3])"
    assert rawbatch(xs).shape == (2, 3)
    bs = Batch([Seq([[1, 2, 3], [4, 5, 6]]), Seq([[7, 8, 9], [10, 11, 12]])])
    assert rawbatch(bs).shape == (2, 2, 3)
    assert rawbatch(bs)[1, 1, 0] == 10
    ys = Batch([np.ones((2, 2)), np.zeros((2, 2))]).map(np.ravel)
    assert type(ys) is Batch and ys == [[1, 1, 1, 1], [0, 0, 0, 0]]
    assert repr(bs).startswith("2-element Batch of Seq of ndarray")


# -- the sequence ----------------------------------------------------------------------------

def test_indexing_gives_arrays_and_inner_kinds():
    xs = Batch([[1, 2], [3, 4], [5, 6]])
    assert type(xs[0]) is np.ndarray
    np.testing.assert_array_equal(xs[-1], [5, 6])
    numbers = Batch([1, 2, 3])
    assert type(numbers[0]) is np.ndarray and numbers[0].shape == () and numbers[0] == 1
    np.testing.assert_array_equal(xs[np.int64(1)], [3, 4])
    with pytest.raises(IndexError):
        xs[3]


def test_slices_keep_the_kind_and_share_memory():
    bs = Batch([Seq(X1), Seq(X2), Seq(X1)])
    part = bs[1:]
    assert type(part) is Batch and len(part) == 2 and type(part[0]) is Seq
    assert part == [X2, X1]
    assert np.shares_memory(rawbatch(part), rawbatch(bs))
    assert Seq(X1)[::2] == [X1[0], X1[2]] and type(Seq(X1)[::2]) is Seq
    assert len(bs[5:]) == 0


@pytest.mark.parametrize("index", [(0, 1), [0, 1], np.array([0]), 1.0, "0"])
def test_other_indices_are_refused(index):
    xs = Batch([[1, 2], [3, 4]])
    with pytest.raises(FluxTypeError, match=r"rawbatch\(xs\)\[\.\.\.\]") as info:
        xs[index]
    assert isinstance(info.value, TypeError)


def test_sequence_protocol():
    xs = Batch([[1, 2], [3, 4], [1, 2]])
    assert isinstance(xs, Sequence)
    assert [1, 2] in xs and [9, 9] not in xs and np.array([3, 4]) in xs
    assert xs.index([3, 4]) == 1 and xs.count([1, 2]) == 2
    with pytest.raises(ValueError):
        xs.index([9, 9])
    assert [list(x) for x in reversed(xs)] == [[1, 2], [3, 4], [1, 2]]
    assert Seq(X1) in Batch([Seq(X2), Seq(X1)])


def test_read_only():
    source = np.arange(6).reshape(2, 3)
    xs = Batch.from_raw(source)
    with pytest.raises(TypeError):
        xs[0] = [0, 0, 0]
    with pytest.raises(ValueError):
        xs[0][0] = 7
    with pytest.raises(ValueError):
        rawbatch(xs)[0, 0] = 7
    assert source.flags.writeable                          # the caller's array is untouched


def test_construction_copies_items_but_from_raw_does_not():
    a = np.arange(3)
    xs = Batch([a, a])
    a[0] = 99
    assert xs == [[0, 1, 2], [0, 1, 2]]
    stacked = np.zeros((2, 3))
    assert np.shares_memory(rawbatch(Batch.from_raw(stacked)), stacked)
    assert not np.shares_memory(rawbatch(Batch(stacked)), stacked)


def test_construction_from_arrays_iterables_and_other_kinds():
    assert Batch(np.arange(6).reshape(3, 2)) == [[0, 1], [2, 3], [4, 5]]
    assert Batch(x for x in [[1], [2]]) == [[1], [2]]
    xs = Batch(Seq(X1))                                     # the Seq's items, as a Batch
    assert type(xs) is Batch and xs == X1
    bs = Batch([Seq(X1), Seq(X2)])
    assert Seq(bs)._kinds() == (Seq, Seq) and Seq(bs) == [X1, X2]
    assert Batch([np.float32(1.5), 2]).dtype == np.float64
    assert Batch([[True, False]]).dtype == np.bool_


def test_from_raw_nesting():
    raw = np.arange(24).reshape(2, 3, 4)
    bs = Batch.from_raw(raw, inner=Seq)
    assert bs == Batch([Seq(raw[0]), Seq(raw[1])])
    assert Batch.from_raw(raw, inner=(Seq,)) == bs
    deep = Seq.from_raw(raw, inner=(Batch, Seq))
    assert repr(deep).startswith("2-element Seq of Batch of Seq of ndarray:")
    assert type(deep[0]) is Batch and type(deep[0][1]) is Seq
    np.testing.assert_array_equal(deep[1][2][3], raw[1, 2, 3])
    assert Batch.from_raw(raw, inner=None) == Batch.from_raw(raw)
    assert Batch.from_raw([[1, 2]]) == [[1, 2]]             # array-likes too


def test_from_raw_errors():
    with pytest.raises(ShapeError, match=r"Batch of Seq of ndarray needs an array of rank at "
                                         r"least 2.*got shape \(3,\)"):
        Batch.from_raw(np.zeros(3), inner=Seq)
    with pytest.raises(ShapeError, match=r"got shape \(\)"):
        Seq.from_raw(np.float64(1))
    with pytest.raises(FluxTypeError, match="array of numbers, got dtype <U1"):
        Batch.from_raw(np.array(["a", "b"]))
    with pytest.raises(FluxTypeError, match="inner must be Batch, Seq"):
        Batch.from_raw(np.zeros((2, 2)), inner=list)


def test_empty_batches_come_from_raw_arrays():
    empty = Batch.from_raw(np.zeros((0, 3)))
    assert len(empty) == 0 and empty.shape == (0, 3) and list(empty) == []
    assert repr(empty) == "0-element Batch of ndarray"
    assert empty == [] and empty == np.zeros((0, 3)) and not empty == np.zeros((0, 4))


def test_shape_dtype_and_array_protocol():
    xs = Batch([[1, 2, 3], [4, 5, 6]])
    assert xs.shape == (2, 3) and xs.dtype == np.int64
    assert np.asarray(xs) is rawbatch(xs)
    assert np.asarray(xs, dtype=np.float32).dtype == np.float32
    copied = np.array(xs)
    assert copied.flags.writeable and not np.shares_memory(copied, rawbatch(xs))
    np.testing.assert_array_equal(np.stack([xs, xs]), [rawbatch(xs)] * 2)
    if np.lib.NumpyVersion(np.__version__) >= "2.0.0":   # asarray(copy=) is NumPy 2's
        with pytest.raises(ValueError, match="needs a copy"):
            np.asarray(xs, dtype=np.float32, copy=False)


def test_no_elementwise_arithmetic():
    xs = Batch([[1, 2], [3, 4]])
    with pytest.raises(TypeError):
        xs + 1
    with pytest.raises(TypeError):
        np.exp(xs)
    np.testing.assert_array_equal(np.exp(rawbatch(xs)), np.exp([[1, 2], [3, 4]]))


# -- equality ---------------------------------------------------------------------------------

def test_equality_is_a_bool_item_by_item():
    xs = Batch([[1, 2, 3], [4, 5, 6]])
    for other, expected in [([[1, 2, 3], [4, 5, 6]], True), (((1, 2, 3), (4, 5, 6)), True),
                            ([[1.0, 2.0, 3.0], [4, 5, 6]], True), ([[1, 2, 3]], False),
                            ([[1, 2, 3], [4, 5, 7]], False), ([[1, 2], [4, 5]], False),
                            ([[1, 2, 3], [4, 5]], False), ([["a", "b", "c"], [4, 5, 6]], False),
                            (np.array([[1, 2, 3], [4, 5, 6]]), True),
                            (np.array([[1, 2, 3]]), False), (5, False), ("ab", False)]:
        assert (xs == other) is expected, other
        assert (xs != other) is (not expected), other
    assert ([[1, 2, 3], [4, 5, 6]] == xs) is True
    assert (np.array([[1, 2, 3], [4, 5, 6]]) == xs) is True      # NumPy defers to the Batch
    assert (np.array([[1, 2, 3], [4, 5, 6]]) != xs) is False


def test_equality_between_kinds():
    assert Batch([[1, 2]]) == Batch([[1.0, 2.0]])
    assert Batch([[1, 2]]) != Seq([[1, 2]])                  # a batch is not a sequence
    bs = Batch([Seq(X1), Seq(X2)])
    assert bs == Batch.from_raw(np.stack([X1, X2]), inner=Seq)
    assert bs != Batch.from_raw(np.stack([X1, X2]))          # nesting differs
    assert bs == [Seq(X1), Seq(X2)] and bs == [X1, np.array(X2)]
    assert bs != [Batch(X1), Batch(X2)]
    assert Batch([[np.nan]]) != Batch([[np.nan]])            # NaN is not equal to itself


# -- repr -------------------------------------------------------------------------------------

def test_repr_of_floats_numbers_and_long_batches():
    assert repr(Batch([[0.5, 1.0], [-2.25, 1e-9]])) == ("2-element Batch of ndarray:\n"
                                                       " [0.5, 1.0]\n [-2.25, 1e-09]")
    assert repr(Batch([1, 2])) == "2-element Batch of ndarray:\n 1\n 2"
    lines = repr(Seq(np.arange(25))).split("\n")
    assert lines[0] == "25-element Seq of ndarray:"
    assert [line.strip() for line in lines[1:]] == ["0", "1", "2", "3", "4", "...",
                                                    "20", "21", "22", "23", "24"]


# -- map --------------------------------------------------------------------------------------

def test_map_keeps_the_kind_and_nests():
    assert type(Seq(X1).map(np.argmax)) is Seq and Seq(X1).map(np.argmax) == [1, 0, 3]
    bs = Batch([Seq(X1), Seq(X2)])
    assert bs.map(lambda s: s.map(np.argmax)) == [[1, 0, 3], [2, 3, 2]]
    assert bs.map(lambda s: s.map(np.argmax))._kinds() == (Batch, Seq)
    assert bs.map(rawbatch)._kinds() == (Batch,)


def test_map_with_results_of_different_shapes():
    xs = Batch([[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ShapeError, match=r"Batch\.map: item 1 has shape \(1,\), item 0 has "
                                         r"shape \(2,\)"):
        xs.map(lambda x: x[: 2 if x[0] == 1 else 1])
    with pytest.raises(FluxValueError, match="Batch.map: no items"):
        Batch.from_raw(np.zeros((0, 2))).map(np.ravel)


# -- construction errors ------------------------------------------------------------------------

def test_mismatched_shapes_name_the_item_and_both_shapes():
    with pytest.raises(ShapeError) as info:
        Batch([[1, 2, 3], [4, 5, 6], [7, 8, 9, 10]])
    message = str(info.value)
    assert "item 2 has shape (4,), item 0 has shape (3,)" in message
    assert message.startswith("Batch:")
    assert isinstance(info.value, FluxError) and isinstance(info.value, ValueError)
    with pytest.raises(ShapeError, match=r"Seq: item 1 has shape \(2, 2\), item 0 has shape "
                                         r"\(3, 4\)"):
        Seq([np.zeros((3, 4)), np.zeros((2, 2))])
    with pytest.raises(ShapeError, match=r"Batch: item 1 has shape \(2, 4\), item 0 has shape "
                                         r"\(3, 4\)"):
        Batch([Seq(X1), Seq(X2[:2])])                         # sequences of different lengths
    with pytest.raises(ShapeError, match=r"item 1 has shape \(\), item 0 has shape \(2,\)"):
        Batch([[1, 2], 3])


def test_ragged_item():
    with pytest.raises(ShapeError, match="Batch: item 1 is a ragged nested list") as info:
        Batch([[[1, 2], [3, 4]], [[1, 2], [3]]])
    assert isinstance(info.value, ValueError)


def test_mixed_nesting():
    with pytest.raises(FluxTypeError, match="Batch: item 1 is an ndarray, item 0 is a Seq of "
                                            "ndarray") as info:
        Batch([Seq(X1), np.array(X2)])
    assert isinstance(info.value, TypeError)
    with pytest.raises(FluxTypeError, match="item 1 is a Batch of ndarray, item 0 is a Seq"):
        Batch([Seq(X1), Batch(X2)])


@pytest.mark.parametrize("item, shown", [("abc", "a str ('abc')"), (None, "a NoneType (None)"),
                                         ({"a": 1}, "a dict"), ([1, "x"], "a list ([1, 'x'])")])
def test_items_that_are_not_numbers(item, shown):
    with pytest.raises(FluxTypeError, match=r"Batch: item 1 is ") as info:
        Batch([[1], item])
    assert shown in str(info.value) and "not numbers" in str(info.value)
    assert isinstance(info.value, TypeError)


@pytest.mark.parametrize("items", [5, "abc", None, np.float64(2.0)])
def test_not_a_sequence(items):
    with pytest.raises(FluxTypeError, match="expected a sequence of items"):
        Batch(items)


def test_empty_batch_is_refused_with_a_way_out():
    with pytest.raises(FluxValueError, match=r"Seq: no items .*Seq\.from_raw\(np\.zeros") as info:
        Seq([])
    assert isinstance(info.value, ValueError)
    with pytest.raises(FluxTypeError, match="dtype <U1"):
        Batch(np.array(["a"]))


# -- utilities ----------------------------------------------------------------------------------

def test_rawbatch():
    a = np.zeros((2, 3))
    assert rawbatch(a) is a
    np.testing.assert_array_equal(rawbatch([[1, 2]]), [[1, 2]])
    np.testing.assert_array_equal(rawbatch(Batch([Seq(X1), Seq(X2)])), np.stack([X1, X2]))


def test_batchone():
    b = batchone([1, 2, 3])
    assert type(b) is Batch and b == [[1, 2, 3]] and rawbatch(b).shape == (1, 3)
    nested = batchone(Seq(X1))
    assert nested._kinds() == (Batch, Seq) and rawbatch(nested).shape == (1, 3, 4)
    assert batchone(7) == [7] and rawbatch(batchone(7)).shape == (1,)


def test_batches_and_seqs():
    xs = [[i, -i] for i in range(7)]
    out = list(batches(xs, 3))
    assert [type(b) for b in out] == [Batch, Batch]
    assert out[0] == xs[0:3] and out[1] == xs[3:6]               # [6, -6] dropped
    out = list(seqs(xs, 2))
    assert [type(s) for s in out] == [Seq] * 3 and out[2] == xs[4:6]
    assert list(batches(xs, 8)) == [] and list(batches([], 2)) == []


def test_batches_of_arrays_are_views_and_keep_nesting():
    a = np.arange(12).reshape(6, 2)
    out = list(batches(a, 2))
    assert len(out) == 3 and all(np.shares_memory(rawbatch(b), a) for b in out)
    bs = Batch([Seq(X1), Seq(X2), Seq(X1)])
    out = list(batches(bs, 2))
    assert len(out) == 1 and out[0]._kinds() == (Batch, Seq) and out[0] == [X1, X2]
    out = list(seqs(Batch(X1), 3))
    assert len(out) == 1 and type(out[0]) is Seq and out[0] == X1


@pytest.mark.parametrize("fn", [batches, seqs, chunk])
def test_counts_are_checked_at_the_call(fn):
    for bad in (0, -1):
        with pytest.raises(FluxValueError, match="at least 1") as info:
            fn([1, 2, 3], bad)                 # raised now, not when iterated
        assert isinstance(info.value, ValueError)
    with pytest.raises(FluxTypeError, match="integer, got a float"):
        fn([1, 2, 3], 1.5)


def test_batches_name_the_mismatching_item():
    with pytest.raises(ShapeError, match=r"batches: item 3 has shape \(1,\), item 0 has shape "
                                         r"\(2,\)"):
        batches([[1, 2], [3, 4], [5, 6], [7]], 2)


def test_chunk():
    xs = list(range(10))
    assert chunk(xs, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]   # 9 dropped
    assert chunk(xs, 10) == [[i] for i in xs] and chunk(xs, 1) == [xs]
    assert chunk(tuple(xs), 2) == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]
    assert chunk("abcdefg", 3) == ["ab", "cd", "ef"]
    assert chunk(iter(xs), 5)[4] == [8, 9]
    parts = chunk(np.arange(10), 2)
    assert all(type(p) is np.ndarray and p.shape == (5,) for p in parts)
    parts = chunk(Batch([Seq(X1), Seq(X2), Seq(X1)]), 3)
    assert all(type(p) is Batch and p._kinds() == (Batch, Seq) and len(p) == 1 for p in parts)
    with pytest.raises(FluxValueError, match="cannot split 3 items into 4 non-empty chunks"):
        chunk([1, 2, 3], 4)


def test_rpad():
    s = Seq([[1, 2], [3, 4]])
    padded = rpad(s, 4, 0)
    assert type(padded) is Seq and padded == [[1, 2], [3, 4], [0, 0], [0, 0]]
    assert padded.dtype == s.dtype
    assert rpad(s, 3, [9, 8]) == [[1, 2], [3, 4], [9, 8]]
    assert rpad(s, 3, np.array([9, 8])) == [[1, 2], [3, 4], [9, 8]]
    assert rpad(Seq(np.float32([[1, 2]])), 2, 0.5).dtype == np.float32
    halves = rpad(s, 3, 0.5)
    assert halves.dtype == np.float64 and halves[2] == pytest.approx([0.5, 0.5])
    assert rpad(s, 2, 0) is s and rpad(s, 1, 0) is s           # long enough: unchanged
    assert rpad(s, 0, 0) is s
    assert rpad([1, 2], 3, 0) == [1, 2, 0] and type(rpad([1, 2], 3, 0)) is Seq
    empty = Seq.from_raw(np.zeros((0, 4)))
    assert rpad(empty, 2, 1) == [[1, 1, 1, 1]] * 2


def test_rpad_nested_and_batches():
    bs = Batch([Seq(X1), Seq(X2)])
    padded = rpad(bs, 3, 0)
    assert padded._kinds() == (Batch, Seq) and padded[2] == np.zeros((3, 4))
    assert rpad(bs, 3, Seq(X1))[2] == X1
    assert type(rpad(Batch([[1]]), 2, 0)) is Batch


def test_rpad_errors():
    s = Seq([[1, 2], [3, 4]])
    with pytest.raises(ShapeError, match=r"padding value has shape \(3,\), the items have "
                                         r"shape \(2,\)"):
        rpad(s, 4, [1, 2, 3])
    with pytest.raises(FluxValueError, match="at least 0, got -1"):
        rpad(s, -1, 0)
    with pytest.raises(FluxTypeError, match="padding value must be a number"):
        rpad(s, 4, "x")
    with pytest.raises(FluxTypeError, match="integer"):
        rpad(s, 4.0, 0)


def test_char_rnn_pipeline():
    """The seed-era data pipeline: one-hot a text, `chunk` it into streams, cut each stream
    into `seqs`, and zip the streams into Batches of Seqs."""
    text = "the quick brown fox jumps over the lazy dog"
    alphabet = sorted(set(text))
    onehots = [flux.onehot(c, alphabet) for c in text]
    nbatch, nunroll = 4, 3
    streams = chunk(onehots, nbatch)                       # 4 streams of 10 characters
    xs = [Batch(step) for step in zip(*[seqs(stream, nunroll) for stream in streams])]
    assert len(xs) == 10 // nunroll
    for k, b in enumerate(xs):
        assert b._kinds() == (Batch, Seq) and b.shape == (nbatch, nunroll, len(alphabet))
        for i in range(nbatch):
            for t in range(nunroll):
                character = text[i * 10 + k * nunroll + t]
                assert flux.onecold(b[i][t], alphabet) == character


# -- unwrap -------------------------------------------------------------------------------------

def test_unwrap_without_batches_is_the_identity():
    x = np.zeros(3)
    raw, wrap = unwrap((x, [1, 2]))
    assert raw[0] is x and raw[1] == [1, 2]
    out = (np.zeros((2, 3)),)
    assert wrap(out) is out


def test_unwrap_replaces_batches_anywhere():
    Pair = namedtuple("Pair", "a b")
    xs, s = Batch([[1, 2], [3, 4]]), Seq(X1)
    raw, wrap = unwrap((xs, [s, {"k": xs}], Pair(s, 3)))
    assert raw[0] is rawbatch(xs)
    assert type(raw[1]) is list and raw[1][0] is rawbatch(s) and raw[1][1]["k"] is rawbatch(xs)
    assert type(raw[2]) is Pair and raw[2].a is rawbatch(s) and raw[2].b == 3


def test_wrap_follows_the_first_batch():
    bs = Batch([Seq(X1), Seq(X2)])                         # (batch 2, time 3, 4)
    raw, wrap = unwrap((np.ones(4), bs, Seq(np.zeros((5, 1)))))
    sequence = np.zeros((2, 3, 7))
    y = wrap(sequence)
    assert y._kinds() == (Batch, Seq) and np.shares_memory(rawbatch(y), sequence)
    assert wrap(np.zeros((2, 7)))._kinds() == (Batch,)        # (batch, out)
    assert type(wrap(np.zeros((2, 7)))[0]) is np.ndarray
    assert wrap(np.zeros((2, 3, 4, 5)))._kinds() == (Batch, Seq)
    numbers = wrap(np.arange(2))                              # (batch,): a Batch of numbers
    assert numbers._kinds() == (Batch,) and numbers == [0, 1]
    other = np.zeros((5, 7))
    assert wrap(other) is other                               # a different first axis
    assert wrap(3.0) == 3.0 and wrap(np.float64(2)) == 2
    strings = np.array(["a", "b"])
    assert wrap(strings) is strings
    y, (z, w) = wrap((np.zeros((2, 3, 1)), [np.zeros((2, 1)), {"k": np.zeros(9)}]))
    assert y._kinds() == (Batch, Seq) and z._kinds() == (Batch,) and type(w["k"]) is np.ndarray


def test_wrap_from_a_plain_batch_or_seq():
    _, wrap = unwrap((Batch([[1, 2], [3, 4], [5, 6]]),))
    assert wrap(np.zeros((3, 2, 2)))._kinds() == (Batch,)
    _, wrap = unwrap([Seq(X1)])
    assert wrap(np.zeros((3, 10)))._kinds() == (Seq,)


# -- properties, against np.stack and list slicing -------------------------------------------------

item_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
dtypes = st.sampled_from([np.float32, np.float64, np.int32, np.int64, np.bool_])


@st.composite
def item_lists(draw, min_size=1, max_size=6):
    """A list of arrays of one shape and dtype."""
    shape, dtype = draw(item_shapes), draw(dtypes)
    elements = st.integers(-9, 9) if dtype != np.bool_ else st.booleans()
    n = draw(st.integers(min_size, max_size))
    return [draw(hnp.arrays(dtype, shape, elements=elements)) for _ in range(n)]


@settings(max_examples=60, deadline=None)
@given(item_lists(), st.sampled_from([Batch, Seq]))
def test_stacking_is_np_stack(items, kind):
    xs = kind(items)
    stacked = np.stack(items)
    raw = rawbatch(xs)
    assert raw.shape == stacked.shape and raw.dtype == stacked.dtype
    np.testing.assert_array_equal(raw, stacked)
    assert len(xs) == len(items) and xs == items
    if 0 not in stacked.shape:                               # tolist() loses empty axes
        assert xs == [a.tolist() for a in items]
    assert all(np.array_equal(x, a) for x, a in zip(xs, items))
    assert kind.from_raw(stacked) == xs and Batch([xs])._kinds() == (Batch, kind)


@settings(max_examples=60, deadline=None)
@given(item_lists(max_size=8), st.integers(-10, 10), st.integers(-10, 10),
       st.sampled_from([None, 1, 2, -1, 3]))
def test_slicing_is_list_slicing(items, start, stop, step):
    xs = Batch(items)
    part = xs[start:stop:step]
    assert type(part) is Batch and part == items[start:stop:step]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 20), st.integers(1, 7), st.sampled_from([batches, seqs]))
def test_runs_concatenate_to_the_truncated_input(length, n, runs):
    xs = np.arange(length * 2).reshape(length, 2)
    out = list(runs(xs, n))
    assert len(out) == length // n and all(len(r) == n for r in out)
    assert all(type(r) is (Batch if runs is batches else Seq) for r in out)
    joined = np.concatenate([rawbatch(r) for r in out]) if out else np.zeros((0, 2))
    np.testing.assert_array_equal(joined, xs[: length // n * n])
    from_list = list(runs(list(xs), n))
    assert len(from_list) == len(out) and all(a == b for a, b in zip(from_list, out))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30))
def test_chunk_sizes(length, n):
    xs = list(range(length))
    if n > length:
        with pytest.raises(FluxValueError):
            chunk(xs, n)
        return
    parts = chunk(xs, n)
    assert len(parts) == n and all(len(p) == length // n for p in parts)
    assert sum(parts, []) == xs[: n * (length // n)]


@settings(max_examples=60, deadline=None)
@given(item_lists(), st.integers(0, 10), st.integers(-5, 5))
def test_rpad_property(items, n, value):
    padded = rpad(Seq(items), n, value)
    assert len(padded) == max(n, len(items))
    assert padded[: len(items)] == items
    assert all(np.all(item == np.asarray(value).astype(padded.dtype)) for item in
               padded[len(items):])


@settings(max_examples=60, deadline=None)
@given(item_lists(min_size=2), st.data())
def test_the_first_mismatch_is_named(items, data):
    k = data.draw(st.integers(1, len(items) - 1))
    first = items[0].shape
    other = data.draw(item_shapes.filter(lambda s: s != first))
    items[k] = np.zeros(other, items[0].dtype)
    for later in range(k + 1, len(items)):                   # later mismatches are not named
        items[later] = np.zeros(other + (1,))
    with pytest.raises(ShapeError) as info:
        Batch(items)
    assert f"item {k} has shape {other}, item 0 has shape {first}" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([Batch, Seq]), min_size=1, max_size=3),
       hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=3))
def test_unwrap_then_wrap_round_trips(kinds, shape):
    """Exact when the innermost items have an axis (the rule keeps one there)."""
    kinds = kinds[:len(shape) - 1] or kinds[:1]
    xs = kinds[0].from_raw(np.zeros(shape), inner=tuple(kinds[1:]))
    (raw,), wrap = unwrap((xs,))
    assert raw is rawbatch(xs)
    back = wrap(raw)
    assert back == xs and back._kinds() == xs._kinds()
