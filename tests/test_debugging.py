"""The debugging tools: `flux.infer`, `flux.shapes`, `flux.summary`, the model frames every error
carries (API.md "Shapes and debugging", "Errors"), and docs/debugging.md, whose examples run
here."""
import doctest
import importlib.util
import inspect
import os
import re
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import flux
from flux import (GRU, LSTM, Affine, Batch, Chain, Recurrent, Seq, flatten, hcat, net, relu,
                  softmax, unroll, vcat, σ)
from helpers import AFFINE_FILE, affine_line, line_containing, line_of as _line_of

HERE = os.path.abspath(__file__)
REPO = Path(HERE).parent.parent
RECURRENT_FILE = os.path.abspath(inspect.getsourcefile(LSTM))


def line_of(marker, path=None):
    """The line of this file (or `path`) holding the comment ``# <marker>``."""
    return _line_of(marker, path or HERE)


def lstm_forget_line():
    """The line of LSTM's forward computing the forget gate."""
    return line_containing(RECURRENT_FILE, "forget = σ(x @ self.Wxf")


def where(frames):
    """Frames as comparable tuples, files made absolute."""
    return [(f.model, f.path, os.path.abspath(f.file), f.line) for f in frames]


# The seed's two-layer perceptron, exactly as in its "Debugging" section.

@net
class TLP:
    first: object
    second: object

    def __call__(self, x):
        l1 = σ(self.first(x))  # line-l1
        l2 = softmax(self.second(l1))  # line-l2
        return l2


def typo_model():
    return TLP(Affine(10, 20), Affine(21, 15))


def fixed_model():
    return TLP(Affine(10, 20), Affine(20, 15))


def tlp_trace(path="second"):
    """The contract's trace of the typo model's ShapeError: Affine, then TLP at l2."""
    return [("Affine", path, AFFINE_FILE, affine_line()), ("TLP", "", HERE, line_of("line-l2"))]


# -- infer: infer(m, x.shape) == m(x).shape -------------------------------------------------------


@net
def two_outputs(x):
    return x * 2, np.sum(x, axis=1)


@net
def numpy_model(x):
    y = np.reshape(x, (x.shape[0], -1))  # numpy-reshape
    z = np.concatenate([y, 2 * y], axis=1)  # numpy-concatenate
    return np.sum(np.tanh(np.transpose(z)), axis=0)  # numpy-sum


def rand(*shape):
    return np.random.default_rng(0).random(shape)


def unrolled(cell, stateful):
    return lambda: unroll(cell(3, 4), 6, stateful=stateful)


INFER_CASES = {
    # id: (a model factory, the inputs)
    "Affine batch": (lambda: Affine(5, 3), [rand(8, 5)]),
    "Affine single point": (lambda: Affine(5, 3), [rand(5)]),
    "Chain with activations": (lambda: Chain(Affine(5, 5), σ, Affine(5, 4), relu, softmax),
                               [rand(8, 5)]),
    "TLP": (fixed_model, [rand(5, 10)]),
    "TLP single point": (fixed_model, [rand(10)]),
    "@net with tuple outputs": (lambda: two_outputs, [rand(3, 4)]),
    "tuple in, tuple out": (lambda: net(lambda xs: tuple(map(lambda x: x * x, xs))),
                            [(rand(2, 3), rand(4))]),
    "np.reshape": (lambda: net(lambda x: np.reshape(x, (-1, 6))), [rand(4, 3, 2)]),
    "np.transpose": (lambda: net(lambda x: np.transpose(x, (1, 0, 2))), [rand(4, 3, 2)]),
    "np.concatenate": (lambda: net(lambda x: np.concatenate([x, x], axis=1)), [rand(4, 3)]),
    "np.sum with axis": (lambda: net(lambda x: np.sum(x, axis=1)), [rand(4, 3)]),
    "NumPy functions together": (lambda: numpy_model, [rand(4, 3, 2)]),
    "flux.sum, flux.reshape": (lambda: net(lambda x: flux.reshape(flux.sum(x, axis=0), (2, -1))),
                               [rand(5, 3, 4)]),
    "flatten": (lambda: Chain(flatten, Affine(6, 2)), [rand(4, 3, 2)]),
    "hcat": (lambda: net(lambda x, y: hcat(x, y)), [rand(4, 3), rand(4, 2)]),
    "vcat": (lambda: net(lambda x, y: vcat(x, y)), [rand(4, 3), rand(2, 3)]),
    "Recurrent stateless": (unrolled(Recurrent, False), [rand(2, 6, 3)]),
    "Recurrent stateful": (unrolled(Recurrent, True), [rand(2, 6, 3)]),
    "LSTM stateless": (unrolled(LSTM, False), [rand(2, 6, 3)]),
    "LSTM stateful": (unrolled(LSTM, True), [rand(2, 6, 3)]),
    "GRU stateless": (unrolled(GRU, False), [rand(2, 6, 3)]),
    "GRU stateful": (unrolled(GRU, True), [rand(2, 6, 3)]),
    "LSTM one sequence": (unrolled(LSTM, True), [rand(6, 3)]),
    "Chain containing an unrolled model": (
        lambda: Chain(unroll(Chain(Affine(3, 5), LSTM(5, 4)), 6), flatten, Affine(24, 2), softmax),
        [rand(2, 6, 3)]),
    "compiled": (lambda: flux.compile(Chain(Affine(3, 4), relu), "numpy"), [rand(5, 3)]),
    "Batch": (lambda: Affine(3, 2), [Batch([[1., 2, 3], [4, 5, 6]])]),
    "Batch of Seq": (unrolled(LSTM, False), [Batch([Seq(rand(6, 3)), Seq(rand(6, 3) + 1)])]),
}


def shape_tree(value):
    """The shape of an output, or the same structure of shapes for a tuple of outputs."""
    if isinstance(value, tuple):
        return tuple(shape_tree(v) for v in value)
    return tuple(np.shape(value))


@pytest.mark.parametrize("case", list(INFER_CASES))
def test_infer_is_the_shape_of_the_call(case):
    make, xs = INFER_CASES[case]
    model = make()
    if "stateful" in case:
        model(*xs)                   # the second call starts from a carried state
    want = shape_tree(model(*xs))
    assert flux.infer(model, *[shape_tree(x) for x in xs]) == want     # shapes as tuples
    assert flux.infer(model, *xs) == want                               # shapes of arrays


def test_infer_of_an_affine_layer_is_the_contracts():
    assert flux.infer(Affine(10, 20), (1, 10)) == (1, 20)


def test_infer_of_a_model_with_tuple_outputs_is_a_tuple_of_shapes():
    assert flux.infer(two_outputs, (3, 4)) == ((3, 4), (3,))


def test_infer_takes_data_given_as_nested_lists_as_the_model_does():
    a = Affine(2, 3)
    data = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    assert flux.infer(a, data) == a(data).shape == (3, 3)


def test_infer_does_not_change_a_stateful_models_hidden_state():
    cell = Recurrent(3, 4)
    for p in flux.params(cell).values():
        p.value = np.random.default_rng(1).standard_normal(p.shape).astype(np.float32)
    probed, untouched = unroll(cell, 6), unroll(cell, 6)   # each has its own hidden state
    x = rand(2, 6, 3)
    probed(x), untouched(x)
    flux.infer(probed, x.shape)
    flux.shapes(probed, x)
    flux.summary(probed, x.shape)
    np.testing.assert_array_equal(probed(x), untouched(x))




def test_infer_shape_error_names_both_shapes_and_carries_the_frames():
    with pytest.raises(flux.ShapeError) as info:
        flux.infer(typo_model(), (5, 10))
    error = info.value
    assert isinstance(error, flux.FluxError) and isinstance(error, ValueError)
    assert "(5, 20)" in str(error) and "(21, 15)" in str(error)
    assert where(error.trace) == tlp_trace()
    assert all(isinstance(f, flux.Frame) for f in error.trace)


def test_infer_finds_the_shape_error_without_any_array_work():
    # An input of 10**12 rows could never be allocated: only its shape is looked at.
    with pytest.raises(flux.ShapeError) as info:
        flux.infer(typo_model(), (10**12, 10))
    assert f"({10**12}, 20)" in str(info.value) and "(21, 15)" in str(info.value)
    assert flux.infer(Affine(10, 2), (10**12, 10)) == (10**12, 2)


@pytest.mark.parametrize("tool", [flux.infer, flux.shapes, flux.summary],
                         ids=["infer", "shapes", "summary"])
def test_a_huge_input_shape_allocates_nothing_big(tool):
    model = Affine(10, 2)
    tool(model, (2, 10))                          # warm: imports and caches are not counted
    tracemalloc.start()
    try:
        started = time.perf_counter()
        tool(model, (10**6, 10))                  # as an array: 80 MB of float64
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000, f"peak {peak:,} bytes"
    assert elapsed < 2.0


# -- bad input: a clear FluxError from infer, shapes and summary alike ----------------------------

TOOLS = pytest.mark.parametrize("tool", [flux.infer, flux.shapes, flux.summary],
                                ids=["infer", "shapes", "summary"])


@TOOLS
@pytest.mark.parametrize("shapes,given", [((), 0), (((1, 10), (1, 10)), 2)],
                         ids=["no inputs", "two inputs"])
def test_wrong_number_of_inputs_says_how_many_the_model_takes(tool, shapes, given):
    with pytest.raises(flux.FluxError) as info:
        tool(Affine(10, 20), *shapes)
    error = info.value
    assert isinstance(error, TypeError)
    assert "takes 1 input" in str(error) and f"given {given}" in str(error)
    assert tool.__name__ in str(error)


@TOOLS
def test_too_few_inputs_for_a_two_input_model(tool):
    with pytest.raises(flux.FluxError) as info:
        tool(net(lambda x, y: hcat(x, y)), (4, 3))
    assert isinstance(info.value, TypeError)
    assert "takes 2 inputs" in str(info.value) and "given 1" in str(info.value)


@TOOLS
@pytest.mark.parametrize("bad,words", [
    ("hello", ["str", "'hello'"]),
    ({"x": "y"}, ["str"]),
    (None, ["None"]),
    ((1.5, 10), ["(1.5, 10)"]),
], ids=["str", "dict", "None", "float size"])
def test_a_non_shape_input_is_a_type_error_saying_what_was_found(tool, bad, words):
    with pytest.raises(flux.FluxError) as info:
        tool(Affine(10, 20), bad)
    error = info.value
    assert isinstance(error, TypeError)
    assert "shape" in str(error)                      # what was expected
    for word in words:                                # what was found
        assert word in str(error)


@TOOLS
def test_a_bare_int_is_reported_as_the_int_it_is(tool):
    with pytest.raises(flux.FluxError) as info:
        tool(Affine(10, 20), 10)
    assert isinstance(info.value, TypeError)
    assert "found int" in str(info.value)


@TOOLS
def test_a_negative_size_is_an_error_naming_the_shape(tool):
    with pytest.raises(flux.FluxError) as info:
        tool(Affine(10, 20), (-1, 10))
    assert "(-1, 10)" in str(info.value)


@TOOLS
@pytest.mark.parametrize("not_a_model,found", [(5, "int"), (Affine, "type"), ("Affine", "str")],
                         ids=["int", "class", "str"])
def test_something_that_is_not_a_model_is_a_type_error(tool, not_a_model, found):
    with pytest.raises(flux.FluxError) as info:
        tool(not_a_model, (1, 10))
    assert isinstance(info.value, TypeError)
    assert "model" in str(info.value) and found in str(info.value)


# -- shapes: the seed's @shapes printout ----------------------------------------------------------

COMMENT = re.compile(r"^# (.+), line (\d+):$")


def comments(report):
    """The ``# file, line N:`` comments of the printout, as (absolute file, line)."""
    found = [COMMENT.match(line) for line in str(report).splitlines()]
    return [(os.path.abspath(m[1]), int(m[2])) for m in found if m]


def test_shapes_on_the_seeds_typo_model_reports_without_raising():
    report = flux.shapes(typo_model(), np.random.rand(5, 10))
    assert isinstance(report, flux.ShapesReport)
    assert isinstance(report.error, flux.ShapeError)
    assert "(5, 20)" in str(report.error) and "(21, 15)" in str(report.error)
    assert where(report.error.trace) == tlp_trace()

    first, failing, last = report.statements
    assert (os.path.abspath(first.file), first.line) == (HERE, line_of("line-l1"))
    assert "Affine(10, 20)(Input()[0]::(5, 10))" in first.expr
    assert first.expr.startswith("σ(")
    assert first.shape == (5, 20) and str(first).endswith("::(5, 20)")
    assert not first.fails

    # the failing Affine is inlined: its own line, in terms of the TLP's parameter paths
    assert (os.path.abspath(failing.file), failing.line) == (AFFINE_FILE, affine_line())
    assert "second.W::(21, 15)" in failing.expr and "second.b::(15,)" in failing.expr
    assert failing.expr.startswith(f"{first.name} @ ")
    assert failing.fails and "(5, 20)" in failing.fails and "(21, 15)" in failing.fails

    assert (os.path.abspath(last.file), last.line) == (HERE, line_of("line-l2"))
    assert last.expr == f"softmax({failing.name})"
    assert not last.fails

    assert (os.path.abspath(report.failing[0]), report.failing[1]) == (AFFINE_FILE, affine_line())
    lines = str(report).splitlines()
    after = lines[lines.index(str(failing)) + 1]
    assert after.startswith("#") and "ShapeError" in after and "(21, 15)" in after
    assert comments(report) == [(HERE, line_of("line-l1")), (AFFINE_FILE, affine_line()),
                                (HERE, line_of("line-l2"))]
    names = [st.name for st in report.statements]
    assert all(re.fullmatch("[a-z]+", name) for name in names), names
    assert len(set(names)) == len(names)


def test_shapes_on_the_fixed_model_shows_two_lines_and_no_error():
    report = flux.shapes(fixed_model(), np.random.rand(5, 10))
    assert report.error is None and report.failing is None
    first, second = report.statements
    assert (os.path.abspath(first.file), first.line) == (HERE, line_of("line-l1"))
    assert "Affine(10, 20)(Input()[0]::(5, 10))::(5, 20)" in first.expr
    assert first.shape == (5, 20)
    assert (os.path.abspath(second.file), second.line) == (HERE, line_of("line-l2"))
    assert second.expr == f"softmax(Affine(20, 15)({first.name})::(5, 15))"
    assert second.shape == (5, 15) and str(second).endswith("::(5, 15)")
    assert not any(st.fails for st in report.statements)
    assert "ShapeError" not in str(report)
    assert comments(report) == [(HERE, line_of("line-l1")), (HERE, line_of("line-l2"))]
    assert report.outputs == [second.name]


@pytest.mark.parametrize("make", [typo_model, fixed_model], ids=["typo", "fixed"])
def test_shapes_given_as_tuples_and_as_arrays_give_the_same_report(make):
    model = make()
    assert str(flux.shapes(model, (5, 10))) == str(flux.shapes(model, np.random.rand(5, 10)))
    assert str(flux.shapes(model, (5, 10))) == str(flux.shapes(model, (5, 10)))   # repeatable


def test_shapes_of_a_chain_is_one_layer_per_line():
    report = flux.shapes(Chain(Affine(64, 128), relu, Affine(128, 32), σ, Affine(32, 10)),
                         (16, 64))
    assert report.error is None
    assert [st.expr.count("Affine(") for st in report.statements] == [1, 1, 1]
    assert [st.shape for st in report.statements] == [(16, 128), (16, 32), (16, 10)]
    assert "Input()[0]::(16, 64)" in report.statements[0].expr
    assert "relu(" in report.statements[0].expr and "σ(" in report.statements[1].expr
    for previous, st in zip(report.statements, report.statements[1:]):
        assert f"({previous.name})" in st.expr


def test_shapes_of_a_numpy_model_shows_the_numpy_functions_on_their_lines():
    report = flux.shapes(numpy_model, (4, 3, 2))
    assert report.error is None
    at = {}
    for st in report.statements:
        assert os.path.abspath(st.file) == HERE
        at.setdefault(st.line, []).append(st)
    assert "reshape(Input()[0]::(4, 3, 2)" in at[line_of("numpy-reshape")][0].expr
    assert at[line_of("numpy-reshape")][-1].shape == (4, 6)
    (concatenate,) = at[line_of("numpy-concatenate")]
    assert concatenate.expr.startswith("concatenate(") and concatenate.shape == (4, 12)
    (total,) = at[line_of("numpy-sum")]
    assert total.expr.startswith("sum(tanh(transpose(") and total.shape == (4,)


def test_shapes_of_a_loop_shows_its_step_once_with_the_step_count():
    model = unroll(Chain(Affine(3, 5), LSTM(5, 4)), 6)
    report = flux.shapes(model, (2, 6, 3))
    assert report.error is None
    step = "Chain(Affine(3, 5), LSTM(5, 4))(step(Input()[0]::(2, 6, 3))::(2, 3))::(2, 4)"
    (last,) = [st for st in report.statements if step in st.expr]
    assert last.expr.startswith("over_6_steps(") and last.shape == (2, 6, 4)
    assert len(str(report).splitlines()) < 8
    table = flux.summary(model, (2, 6, 3))
    assert [(r.path, r.calls) for r in table.rows] == [("", 1), ("model", 6)]


def test_shapes_of_an_unrolled_model_calls_its_step_model_once_per_step(monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "unroll")        # full unrolling: one call per step
    model = unroll(Chain(Affine(3, 5), LSTM(5, 4)), 6)
    report = flux.shapes(model, (2, 6, 3))
    assert report.error is None
    step = "Chain(Affine(3, 5), LSTM(5, 4))("
    calls = [st for st in report.statements if st.expr.startswith(step)]
    assert len(calls) == 6 and all(st.shape == (2, 4) for st in calls)
    assert report.statements[-1].shape == (2, 6, 4)
    names = [st.name for st in report.statements]
    assert len(set(names)) == len(names)


def test_shapes_of_a_long_unrolled_model_keeps_names_distinct(monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "unroll")
    report = flux.shapes(unroll(Chain(LSTM(20, 16), Affine(16, 20)), 70), (4, 70, 20))
    names = [st.name for st in report.statements]
    assert len(names) > 60 and len(set(names)) == len(names)
    assert report.statements[-1].shape == (4, 70, 20)


def test_shapes_of_a_flipped_recurrence_shows_each_step_once():
    translation = load_translation()
    model = unroll(translation.Encoder(3, 4), 5, stateful=False)
    report = flux.shapes(model, (2, 5, 3))
    assert report.error is None
    calls = [st for st in report.statements if st.expr.startswith("Encoder(")]
    assert len(calls) == 5, str(report)           # one Encoder step per time step


def test_shapes_inlines_the_failing_layer_inside_an_unrolled_model():
    model = unroll(Chain(Affine(3, 5), LSTM(6, 4)), 6)
    report = flux.shapes(model, (2, 6, 3))
    assert isinstance(report.error, flux.ShapeError)
    assert (os.path.abspath(report.failing[0]), report.failing[1]) == \
        (RECURRENT_FILE, lstm_forget_line())
    (failing,) = [st for st in report.statements if st.fails]
    assert "model.layers.1.Wxf::(6, 4)" in failing.expr
    assert "(2, 5)" in failing.fails and "(6, 4)" in failing.fails


def test_shapes_of_a_model_that_cannot_be_traced_names_the_real_error():
    @net
    class Branchy:
        W: flux.Param

        def __call__(self, x):
            y = x @ self.W
            if y.sum() > 0:  # shapes-branchy-if
                return y
            return -y

    model = TLP(Affine(3, 3), Branchy(np.ones((3, 3))))
    try:
        report = flux.shapes(model, (2, 3))
    except flux.TraceError as error:           # raising it is fine
        assert ("Branchy", "second") in [(f.model, f.path) for f in error.trace]
        return
    assert isinstance(report.error, flux.TraceError)   # or reporting it, as what it is
    text = str(report)
    assert "TraceError" in text and "ShapeError" not in text
    for line in text.splitlines():             # still a printout: comments and statements
        assert line.startswith("#") or re.match(r"^[a-z0-9]+ = ", line), line


# -- summary --------------------------------------------------------------------------------------


def rows(summary):
    return [(r.path, r.type, r.output, r.params, r.depth, r.calls) for r in summary.rows]


def param_count(model):
    return sum(int(np.prod(p.shape)) for p in flux.params(model).values())


def assert_table_shows_rows(summary):
    text = str(summary)
    assert "Total params" in text and f"{summary.total:,}" in text
    for r in summary.rows:
        line = next(line for line in text.splitlines()
                    if re.search(rf"(^|\s){re.escape(r.path or '(model)')}\s", line))
        assert r.type in line and str(r.output) in line and f"{r.params:,}" in line, line
        if r.calls > 1:
            assert f"×{r.calls}" in line


def test_summary_of_the_tlp():
    model = fixed_model()
    s = flux.summary(model, (5, 10))
    assert isinstance(s, flux.Summary)
    assert rows(s) == [("", "TLP", (5, 15), 535, 1, 1),
                       ("first", "Affine", (5, 20), 220, 2, 1),
                       ("second", "Affine", (5, 15), 315, 2, 1)]
    assert s.total == param_count(model) == 535
    assert_table_shows_rows(s)


def test_summary_takes_arrays_as_well_as_shapes():
    model = fixed_model()
    assert rows(flux.summary(model, np.random.rand(5, 10))) == rows(flux.summary(model, (5, 10)))


def test_summary_raises_the_shape_error_with_its_frames():
    with pytest.raises(flux.ShapeError) as info:
        flux.summary(typo_model(), (5, 10))
    assert where(info.value.trace) == tlp_trace()


def test_summary_counts_a_shared_param_once():
    a1 = Affine(4, 4)
    a2 = Affine(a1.W, flux.param(np.zeros(4, np.float32)))     # W shared with a1
    model = Chain(a1, relu, a2, a1)                            # a1 also used twice
    s = flux.summary(model, (2, 4))
    assert s.total == param_count(model) == 16 + 4 + 4
    by_path = {r.path: r for r in s.rows}
    assert by_path["layers.0"].calls == 2 and by_path["layers.0"].params == 20
    assert "layers.3" not in by_path                           # the same layer: one row
    assert by_path["layers.2"].params == 4                     # only its own b: W is counted
    assert sum(r.params for r in s.rows if r.depth == 2) == s.total     # where it first appears


def test_summary_depth_lists_nested_models():
    model = TLP(Chain(Affine(3, 5), relu, Affine(5, 5)), TLP(Affine(5, 4), Affine(4, 2)))
    everything = [("", "TLP", (7, 2), 84, 1, 1),
                  ("first", "Chain", (7, 5), 50, 2, 1),
                  ("first.layers.0", "Affine", (7, 5), 20, 3, 1),
                  ("first.layers.2", "Affine", (7, 5), 30, 3, 1),
                  ("second", "TLP", (7, 2), 34, 2, 1),
                  ("second.first", "Affine", (7, 4), 24, 3, 1),
                  ("second.second", "Affine", (7, 2), 10, 3, 1)]
    assert rows(flux.summary(model, (7, 3), depth=None)) == everything
    assert rows(flux.summary(model, (7, 3), depth=3)) == everything
    assert rows(flux.summary(model, (7, 3))) == [r for r in everything if r[4] <= 2]
    assert rows(flux.summary(model, (7, 3), depth=1)) == everything[:1]
    s = flux.summary(model, (7, 3), depth=None)
    assert s.total == param_count(model) == 84
    assert_table_shows_rows(s)


def lstm_params(n_in, n_out):
    return 4 * (n_in * n_out + n_out * n_out + n_out)


def test_summary_of_the_digits_mlp():
    model = Chain(Affine(64, 128), relu, Affine(128, 10))
    s = flux.summary(model, (32, 64))
    assert rows(s) == [("", "Chain", (32, 10), 9610, 1, 1),
                       ("layers.0", "Affine", (32, 128), 64 * 128 + 128, 2, 1),
                       ("layers.2", "Affine", (32, 10), 128 * 10 + 10, 2, 1)]
    assert s.total == param_count(model) == 9610
    assert_table_shows_rows(s)


def test_summary_of_the_char_rnn_model_counts_calls_per_step():
    V, H, T = 30, 16, 8
    model = unroll(Chain(LSTM(V, H), Affine(H, V)), T)
    s = flux.summary(model, (4, T, V), depth=None)
    total = lstm_params(V, H) + H * V + V
    assert rows(s) == [("", "Unrolled", (4, T, V), total, 1, 1),
                       ("model", "Chain", (4, V), total, 2, T),
                       ("model.layers.0", "LSTM", (4, H), lstm_params(V, H), 3, T),
                       ("model.layers.1", "Affine", (4, V), H * V + V, 3, T)]
    assert s.total == param_count(model) == total
    assert_table_shows_rows(s)


def load_translation():
    """examples/translation.py as a module (its training runs only under ``__main__``)."""
    spec = importlib.util.spec_from_file_location("flux_example_translation",
                                                  REPO / "examples" / "translation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_of_the_seeds_translation_model():
    translation = load_translation()
    model = translation.translation_model()
    N, A, H = translation.Nphrase, translation.Nalpha, translation.Nhidden
    s = flux.summary(model, (3, N, A), depth=None)
    assert s.total == param_count(model)
    top, encoder, decoder = [r for r in s.rows if r.depth <= 2]
    assert (top.type, top.output, top.params) == ("Chain", (3, N, A), s.total)
    assert (encoder.path, encoder.type, encoder.output) == ("layers.0", "Unrolled", (3, N, H))
    assert (decoder.path, decoder.type, decoder.output) == ("layers.1", "Unrolled", (3, N, A))
    assert encoder.params + decoder.params == s.total
    by_path = {r.path: r for r in s.rows}
    assert by_path["layers.1.model.layers.0.attend"].calls == N * N    # N annotations per step
    assert by_path["layers.1.model.layers.0"].type == "Decoder"
    assert by_path["layers.1.model.layers.0"].calls == N
    assert by_path["layers.0.model"].type == "Encoder"
    assert_table_shows_rows(s)


def test_summary_of_the_translation_encoder_counts_one_call_per_step():
    translation = load_translation()
    N = translation.Nphrase
    s = flux.summary(translation.translation_model(), (3, N, translation.Nalpha), depth=None)
    calls = {r.path: r.calls for r in s.rows}
    assert calls["layers.0.model"] == N                    # the Encoder runs once per step,
    assert calls["layers.0.model.forward"] == N            # so do its forward LSTM
    assert calls["layers.0.model.backward"] == N           # and its flipped one
    assert calls["layers.0.model.backward.model"] == N


# -- error traces everywhere ----------------------------------------------------------------------


def test_tlp_shape_error_on_a_direct_call_has_the_contracts_trace():
    with pytest.raises(flux.ShapeError) as info:
        typo_model()(np.random.rand(1, 10))
    error = info.value
    assert where(error.trace) == tlp_trace()
    assert error.trace[0].file.endswith("affine.py")
    assert f"in Affine (second) at {error.trace[0].file}:{affine_line()}" in str(error)
    assert f"in TLP at {error.trace[1].file}:{line_of('line-l2')}" in str(error)
    assert "(1, 20)" in str(error) and "(21, 15)" in str(error)


def test_the_same_trace_from_a_direct_call_infer_shapes_and_compile():
    model = typo_model()
    found = []
    for attempt in (lambda: model(np.random.rand(1, 10)), lambda: flux.infer(model, (1, 10)),
                    lambda: flux.compile(model, "numpy")(np.random.rand(1, 10))):
        with pytest.raises(flux.ShapeError) as info:
            attempt()
        found.append(where(info.value.trace))
    found.append(where(flux.shapes(model, (1, 10)).error.trace))
    assert found == [tlp_trace()] * 4


@net
class Outer:
    inner: object

    def __call__(self, x):
        return softmax(self.inner(x))  # outer-call


@net
class Branchy:
    W: flux.Param

    def __call__(self, x):
        y = x @ self.W
        if y.sum() > 0:  # branchy-if
            return y
        return -y


@pytest.mark.parametrize("run", [lambda m: m(np.ones((2, 3))), lambda m: flux.infer(m, (2, 3)),
                                 lambda m: flux.summary(m, (2, 3))],
                         ids=["call", "infer", "summary"])
def test_a_python_if_on_a_traced_value_carries_the_model_frames(run):
    model = Outer(Chain(Affine(3, 3), Branchy(np.ones((3, 3)))))
    with pytest.raises(flux.TraceError) as info:
        run(model)
    error = info.value
    assert "if" in str(error) and "np.where" in str(error)
    assert where(error.trace) == [
        ("Branchy", "inner.layers.1", HERE, line_of("branchy-if")),
        ("Chain", "inner", os.path.abspath(inspect.getsourcefile(Chain)), error.trace[1].line),
        ("Outer", "", HERE, line_of("outer-call"))]
    assert f"in Branchy (inner.layers.1) at {HERE}:{line_of('branchy-if')}" in str(error)


@pytest.mark.parametrize("run", [lambda m: m(np.ones((2, 3))), lambda m: flux.infer(m, (2, 3))],
                         ids=["call", "infer"])
def test_a_numpy_function_without_translation_carries_the_model_frames(run):
    model = Outer(net(lambda x: np.fft.fft(x)))  # untranslated
    with pytest.raises(flux.TraceError) as info:
        run(model)
    error = info.value
    assert "np.fft.fft" in str(error) and "no IR translation" in str(error)
    assert [(f.path, os.path.abspath(f.file), f.line) for f in error.trace] == \
        [("inner", HERE, line_of("untranslated")), ("", HERE, line_of("outer-call"))]
    assert error.trace[1].model == "Outer"


@pytest.mark.parametrize("run", [lambda m: m(rand(2, 6, 3)), lambda m: flux.infer(m, (2, 6, 3)),
                                 lambda m: flux.shapes(m, (2, 6, 3)).error],
                         ids=["call", "infer", "shapes"])
def test_a_shape_error_inside_an_unrolled_model_shows_unrolled_chain_and_layer(run):
    model = unroll(Chain(Affine(3, 5), LSTM(6, 4)), 6)
    try:
        error = run(model)
    except flux.ShapeError as raised:
        error = raised
    assert isinstance(error, flux.ShapeError)
    assert "(2, 5)" in str(error) and "(6, 4)" in str(error)
    assert [(f.model, f.path) for f in error.trace] == \
        [("LSTM", "model.layers.1"), ("Chain", "model"), ("Unrolled", "")]
    assert (os.path.abspath(error.trace[0].file), error.trace[0].line) == \
        (RECURRENT_FILE, lstm_forget_line())
    assert f"in LSTM (model.layers.1) at {error.trace[0].file}:{lstm_forget_line()}" in str(error)


# -- docs/debugging.md: its examples run and print what the page shows ----------------------------

DOCS = REPO / "docs" / "debugging.md"


class _PathsShortened(doctest.OutputChecker):
    """Compares output with the example file's directory dropped and flux's own directory
    written ``.../flux/``, as the page shows paths."""

    def __init__(self, example_dir: str):
        self.replacements = [(example_dir + os.sep, ""),
                             (os.path.dirname(os.path.abspath(flux.__file__)) + os.sep,
                              ".../flux/")]

    def check_output(self, want, got, optionflags):
        for old, new in self.replacements:
            got = got.replace(old, new)
        return super().check_output(want, got, optionflags)

    def output_difference(self, example, got, optionflags):
        for old, new in self.replacements:
            got = got.replace(old, new)
        return super().output_difference(example, got, optionflags)


def test_the_debugging_page_shows_what_flux_prints(tmp_path, monkeypatch):
    text = DOCS.read_text(encoding="utf-8")
    script = re.search(r"`tlp\.py`.*?\n```python\n(.*?)```", text, re.DOTALL)
    assert script, "docs/debugging.md: the example file tlp.py is missing"
    (tmp_path / "tlp.py").write_text(script[1], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tlp", raising=False)
    sessions = "\n".join(re.findall(r"```pycon\n(.*?)```", text, re.DOTALL))
    test = doctest.DocTestParser().get_doctest(sessions, {}, "docs/debugging.md", str(DOCS), 0)
    assert len(test.examples) >= 8
    runner = doctest.DocTestRunner(checker=_PathsShortened(str(tmp_path)),
                                   optionflags=doctest.ELLIPSIS)
    failures = []
    try:
        runner.run(test, out=failures.append)
    finally:
        sys.modules.pop("tlp", None)
    assert runner.failures == 0, "docs/debugging.md is out of date:\n" + "".join(failures)

