"""ONNX's node tests (`onnx.backend.test.case.node.collect_testcases()`) through
`flux.onnx.load` on the NumPy backend: the runner shared by `test_node_suite.py` and
`tools/onnx_coverage.py`.

Each case is one small model (usually one node) and its data sets of inputs and expected
outputs. `run(case)` loads the model, calls it on each data set's inputs and compares the
outputs with the expected ones at the case's rtol/atol (NaNs equal, shapes and dtypes
matching). Inputs an operator needs known while tracing (a Reshape's shape, a reduction's
axes) are bound with ``flux.onnx.load(model, constants=...)`` when the first attempt says
so: first the integer and bool inputs, then all but the first (an operator's data), then
all of them (`binding` records which). ONNX computes infinities and NaNs quietly, so
NumPy's warnings are off.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx.backend.test.case.node import collect_testcases

import flux
import flux.onnx
from flux.onnx.functions import expandable
from flux.onnx.operators import OPERATORS
from flux.onnx.proto import MAX_OPSET

KNOWN_WHILE_TRACED = "must be known when the model is traced"
COUNTS_FILE = "tests/onnx/node_counts.json"


def failures_file(backend: str) -> str:
    """Where tools/onnx_coverage.py --backend records the cases failing on `backend`."""
    return f"tests/onnx/node_failures_{backend}.json"


REAL_MODELS_USE = [
    "Gemm", "MatMul", "Add", "Relu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Conv",
    "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "LayerNormalization",
    "Dropout", "Gather", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze",
    "Unsqueeze", "Flatten", "ReduceMean", "ReduceSum", "ReduceMax", "Einsum", "LSTM", "GRU",
    "RNN", "Where", "Cast", "Clip", "Pow", "Sqrt", "Exp", "Log", "Erf", "Gelu"]
"""The operators of the models people export (issue 17): each must be imported."""


@dataclass
class Outcome:
    """One case's result: `passed`, why not (`reason`, one line), and the `binding` that ran
    it ("none", "integer inputs", "all inputs but the first", "all inputs")."""

    name: str
    operator: str
    passed: bool
    reason: str = ""
    binding: str = "none"


_CASES = None


def cases() -> list:
    """Every node test case (collected once; collecting takes a few seconds)."""
    global _CASES
    if _CASES is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _CASES = [c for c in collect_testcases() if c.kind == "node"]
    return _CASES


def operators_of(all_cases) -> dict:
    """``case name -> operator``: a single-node case's op type; an expanded case (its
    operator written as the function it is defined by, ``*_expanded``) counts for the
    operator of the case it expands."""
    single = {c.name: c.model.graph.node[0].op_type for c in all_cases
              if len(c.model.graph.node) == 1}
    found = {}
    for c in all_cases:
        base = re.sub(r"_expanded(_ver\d+)?$", "", c.name)
        if c.name in single and base == c.name:
            found[c.name] = single[c.name]
        elif base in single:
            found[c.name] = single[base]
        else:
            found[c.name] = _guess(c, base)
    return found


def _guess(case, base: str) -> str:
    """The operator of an expanded case whose plain case is not in the suite: the op type in
    the case's name (``test_softmax_axis_0`` -> Softmax)."""
    words = base.removeprefix("test_").split("_")
    ops = {n.op_type.lower(): n.op_type for n in case.model.graph.node}
    for k in range(len(words), 0, -1):
        if "".join(words[:k]) in ops:
            return ops["".join(words[:k])]
    return case.model.graph.node[0].op_type if len(case.model.graph.node) else "(empty)"


def imported(operator: str) -> bool:
    """Whether flux imports `operator`: it is in the operator table, or ONNX defines it as a
    function that flux expands (`flux.onnx.interpret`)."""
    return operator in OPERATORS or expandable(operator, MAX_OPSET)


def _inputs(case, inputs) -> list:
    inputs = [onnx.numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
              for v in inputs]
    graph = case.model.graph
    initialized = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initialized]
    return list(zip(names, inputs))


def _call(case, inputs, bind, backend):
    named = _inputs(case, inputs)
    constants = {n: v for i, (n, v) in enumerate(named) if bind(i, v)}
    model = flux.onnx.load(case.model, constants=constants or None)
    run_on = model if backend == "numpy" else flux.compile(model, backend)
    got = run_on(*[v for i, (n, v) in enumerate(named) if not bind(i, v)])
    return list(got) if isinstance(got, tuple) else [got]


_BINDINGS = [("none", lambda i, v: False),
             ("integer inputs", lambda i, v: np.asarray(v).dtype.kind in "biu"),
             ("all inputs but the first", lambda i, v: i > 0),
             ("all inputs", lambda i, v: True)]


def _compare(case, got, expected) -> str:
    """Why `got` differs from `expected` ("" when it does not)."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(got, expected)):
        a, e = np.asarray(a), np.asarray(e)
        if a.shape != e.shape:
            return f"output {k}: shape {a.shape}, expected {e.shape}"
        if a.dtype != e.dtype:
            return f"output {k}: dtype {a.dtype}, expected {e.dtype}"
        if e.dtype.kind in "fc":
            try:
                np.testing.assert_allclose(a, e, rtol=case.rtol, atol=case.atol,
                                           equal_nan=True)
            except AssertionError:
                bad = ~np.isclose(a, e, rtol=case.rtol, atol=case.atol, equal_nan=True)
                return (f"output {k}: {int(bad.sum())} of {e.size} values differ beyond "
                        f"rtol={case.rtol}, atol={case.atol}")
        elif not np.array_equal(a, e):
            return f"output {k}: {int((a != e).sum())} of {e.size} values differ"
    return ""


def first_line(error: BaseException) -> str:
    text = str(error).split("\n")[0] or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def run(case, operator: str, backend: str = "numpy") -> Outcome:
    """Run one case through flux.onnx.load (see the module docstring), on `backend`."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for inputs, expected in case.data_sets:
            for binding, bind in _BINDINGS:
                try:
                    got = _call(case, inputs, bind, backend)
                except Exception as error:       # noqa: BLE001  (every failure is recorded)
                    if KNOWN_WHILE_TRACED in str(error) and binding != "all inputs":
                        continue
                    return Outcome(case.name, operator, False, first_line(error), binding)
                break
            expected = [onnx.numpy_helper.to_array(e) if isinstance(e, onnx.TensorProto)
                        else np.asarray(e) for e in expected]
            why = _compare(case, got, expected)
            if why:
                return Outcome(case.name, operator, False, why, binding)
    return Outcome(case.name, operator, True, "", binding)


_RESULTS: dict = {}


def outcome(case, operator: str) -> Outcome:
    """`run(case)`, once per case per process."""
    if case.name not in _RESULTS:
        _RESULTS[case.name] = run(case, operator)
    return _RESULTS[case.name]


def run_all() -> list:
    """Every case's `Outcome`, in the suite's order."""
    all_cases = cases()
    ops = operators_of(all_cases)
    return [outcome(c, ops[c.name]) for c in all_cases]


def counts(outcomes) -> dict:
    """``operator -> {"cases": n, "passed": k}``, sorted by operator."""
    table: dict = {}
    for o in outcomes:
        entry = table.setdefault(o.operator, {"cases": 0, "passed": 0})
        entry["cases"] += 1
        entry["passed"] += o.passed
    return dict(sorted(table.items()))
