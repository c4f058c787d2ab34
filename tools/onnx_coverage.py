#!/usr/bin/env python3
"""Run ONNX's node tests through flux.onnx.load and record what passes, by operator.

    .envs/core/bin/python tools/onnx_coverage.py
    .envs/tf/bin/python tools/onnx_coverage.py --backend tf        # (or mxnet, cupy)

Writes `tests/onnx/node_counts.json` (the guard `tests/onnx/test_node_suite.py` reads: per
operator the cases and how many pass, and every failing case of an imported operator with its
reason) and `docs/onnx-coverage.md` (the same as a page: per operator, cases, passed, and for
the rest why). The runner is `tests/onnx/node_suite.py`. Run it after changing an import
function; the guard fails when a count drops, and when a recorded failure passes or fails
for another reason.

With ``--backend NAME`` (in that backend's environment) it runs the cases that pass on NumPy
on that backend instead, and writes `tests/onnx/node_failures_<NAME>.json`: each that fails
there with its reason (what `tests/onnx/test_onnx_backends.py` expects), and prints the
reasons grouped.
"""
from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "onnx"))
os.environ["FLUX_CHECK_GRAPHS"] = "1"      # as in the test suite: the IR checker on every graph

import node_suite  # noqa: E402  (the shared runner, in the test folder)
import onnx  # noqa: E402
from flux.onnx.operators import OPERATORS  # noqa: E402
from flux.onnx.proto import MAX_OPSET, MIN_OPSET  # noqa: E402

NO_PRIMITIVE = {
    "Bernoulli": "random numbers (flux draws them in its Dropout layers, not in graphs)",
    "RandomUniformLike": "random numbers", "RandomNormalLike": "random numbers",
    "RandomUniform": "random numbers", "RandomNormal": "random numbers",
    "Multinomial": "random numbers",
    "StringConcat": "strings", "StringNormalizer": "strings", "StringSplit": "strings",
    "RegexFullMatch": "strings", "TfIdfVectorizer": "a data-dependent vocabulary count",
    "ImageDecoder": "image file decoding", "BitCast": "reinterpreting bits",
    "DFT": "complex numbers", "STFT": "complex numbers",
    "NonMaxSuppression": "a data-dependent output shape",
    "OptionalHasElement": "optional values", "OptionalGetElement": "optional values",
    "SequenceInsert": "sequence values", "SequenceMap": "sequence values",
    "SplitToSequence": "sequence values", "SequenceEmpty": "sequence values",
    "Adagrad": "training operators", "Adam": "training operators",
    "Momentum": "training operators",
}
"""Operators flux does not import because no flux primitive (or value type) expresses them."""


def backend_failures(backend: str) -> None:
    """Write the node tests that pass on NumPy but fail on `backend`, with their reasons."""
    recorded = json.loads((ROOT / node_suite.COUNTS_FILE).read_text())
    all_cases = node_suite.cases()
    ops = node_suite.operators_of(all_cases)
    started = time.perf_counter()
    failing = {}
    for case in all_cases:
        if node_suite.imported(ops[case.name]) and case.name not in recorded["known_failures"]:
            outcome = node_suite.run(case, ops[case.name], backend)
            if not outcome.passed:
                failing[case.name] = outcome.reason
    path = ROOT / node_suite.failures_file(backend)
    path.write_text(json.dumps(dict(sorted(failing.items())), indent=1) + "\n")
    groups = collections.Counter(reason[:100] for reason in failing.values())
    for reason, n in groups.most_common():
        print(f"{n:5d}  {reason}")
    print(f"{len(failing)} cases that pass on NumPy fail on {backend} "
          f"({time.perf_counter() - started:.1f} s); wrote {path.relative_to(ROOT)}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--backend":
        backend_failures(sys.argv[2])
        return
    started = time.perf_counter()
    outcomes = node_suite.run_all()
    seconds = time.perf_counter() - started
    counts = node_suite.counts(outcomes)
    imported = {o.operator for o in outcomes if node_suite.imported(o.operator)}
    failures = {o.name: o.reason for o in outcomes
                if not o.passed and o.operator in imported}
    data = {"opsets": [MIN_OPSET, MAX_OPSET],
            "totals": {"cases": len(outcomes), "passed": sum(o.passed for o in outcomes)},
            "operators": counts, "known_failures": dict(sorted(failures.items()))}
    (ROOT / node_suite.COUNTS_FILE).write_text(json.dumps(data, indent=1) + "\n")
    (ROOT / "docs" / "onnx-coverage.md").write_text(page(outcomes, counts, imported))
    print(f"{data['totals']['passed']} of {data['totals']['cases']} node tests pass "
          f"({seconds:.1f} s); wrote {node_suite.COUNTS_FILE} and docs/onnx-coverage.md")


def page(outcomes, counts: dict, imported: set) -> str:
    by_op = collections.defaultdict(list)
    for o in outcomes:
        by_op[o.operator].append(o)
    passed = sum(o.passed for o in outcomes)
    fixed = sum(o.passed and o.binding == "all inputs" for o in outcomes)
    lines = [
        "# ONNX coverage: ONNX's node tests through `flux.onnx.load`",
        "",
        "Written by `tools/onnx_coverage.py` (do not edit by hand); guarded by "
        "`tests/onnx/test_node_suite.py`.",
        f"Each of the {len(outcomes):,} cases of `onnx.backend.test.case.node` (onnx "
        f"{_onnx_version()}) is loaded with `flux.onnx.load` and run on the NumPy backend; its "
        f"outputs are compared with ONNX's expected ones at the case's tolerances (shapes and "
        f"dtypes equal). Inputs an operator needs known while tracing (shapes, axes) are "
        f"bound with `constants=`. An `*_expanded` case (the operator written as the function "
        f"that defines it) counts for its operator.",
        "",
        f"**{passed:,} of {len(outcomes):,} cases pass**: {passed - fixed:,} with the "
        f"operator traced (computed by flux's primitives on the model's inputs), {fixed:,} "
        f"only with every input fixed at load (*all fixed*: an operator flux computes on known "
        f"values only, as in shape arithmetic). flux reads opsets {MIN_OPSET} to "
        f"{MAX_OPSET} of the default domain; a case written for a later opset is refused "
        f"as a whole (its row says so).",
        "",
        "*(function)*: not in flux's table; ONNX defines the operator as a function of "
        "others, and flux runs that function.",
        "*bound*: of the cases passed, how many needed inputs bound with `constants=` (their "
        "operator takes them as values known while tracing: shapes, axes, or the inputs of "
        "an operator flux computes on known values only).",
        "",
        "| operator | cases | passed | bound | all fixed | why the others fail |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for op, entry in counts.items():
        failing = [o for o in by_op[op] if not o.passed]
        bound = sum(o.passed and o.binding != "none" for o in by_op[op])
        all_fixed = sum(o.passed and o.binding == "all inputs" for o in by_op[op])
        name = op if op in OPERATORS or op not in imported else f"{op} (function)"
        lines.append(f"| {name} | {entry['cases']} | {entry['passed']} | {bound or ''} | "
                     f"{all_fixed or ''} | {_why(op, failing, imported)} |")
    lines += ["", "## The operator table", "",
              "Every operator `flux.onnx.load` imports, with the opsets its import functions "
              "start at (`flux/onnx/operators/`). *known values only*: no flux primitive "
              "expresses it, so flux computes it while tracing, on inputs that are known "
              "then (shape arithmetic, constants). An operator missing here that ONNX defines "
              "as a function of other operators (Attention, RMSNormalization, "
              "RotaryEmbedding, AffineGrid, ...) is expanded into that function when it runs.",
              ""]
    for op in sorted(OPERATORS):
        versions = ", ".join(str(v) for v, _ in OPERATORS[op])
        only = " (known values only)" if all(getattr(fn, "folded", False)
                                             for _, fn in OPERATORS[op]) else ""
        lines.append(f"- {op}: {versions}{only}")
    lines.append("")
    return "\n".join(lines)


def _why(op: str, failing: list, imported: set) -> str:
    if not failing:
        return ""
    if op not in imported:
        reason = NO_PRIMITIVE.get(op)
        if reason:
            return f"not imported: no primitive ({reason})"
        if all("domain" in o.reason for o in failing):
            return "not imported: not in ONNX's default domain"
        return "not imported"
    reasons = collections.Counter(_short(o.reason) for o in failing)
    types = sorted({t.split(":", 1)[1] for t in reasons if t.startswith("type:")})
    listed = [f"{text} (×{n})" if n > 1 else text for text, n in reasons.most_common()
              if not text.startswith("type:")]
    if types:
        n = sum(count for text, count in reasons.items() if text.startswith("type:"))
        listed.append(f"types flux does not compute with: {', '.join(types)} (×{n})")
    return "; ".join(listed)


def _short(reason: str) -> str:
    """A failure reason without the model's name and the node's inputs, for the table."""
    text = reason.replace("the ONNX model given as a ModelProto", "the model")
    text = text.split(" (inputs: ")[0]
    if "uses ONNX opset" in text:
        return "written for opset " + text.split("uses ONNX opset ")[1].split(";")[0]
    if "flux computes with" in text:
        return "type:" + text.split(" is a ")[-1].split(" tensor")[0]
    if "only on values known when the model is traced" in text:
        return "traced inputs: no primitive (imported for known values only)"
    if "flux cannot import node" in text:
        return "uses " + text.split("ONNX operator ")[1].split(" (")[0] + ", not imported"
    text = text.replace("|", "\\|")
    return text if len(text) <= 160 else text[:157] + "..."


def _onnx_version() -> str:
    return onnx.__version__


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
