"""ONNX's own node tests through flux.onnx.load on NumPy (runner: node_suite.py), guarded by
the counts tools/onnx_coverage.py records in node_counts.json:

- every case of an operator flux imports (in its table, or expanded from the function ONNX
  defines it as) is one test that must pass, except the known
  failures listed in the json, each with its reason: those must still fail, for that reason
  (a case that starts passing, or fails otherwise, fails here: rerun the tool);
- no operator's number of passing cases may drop.
"""
import json
from pathlib import Path

import pytest

pytest.importorskip("onnx")

import node_suite  # noqa: E402  (tests/onnx is on sys.path: pytest's rootdir-relative import)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = json.loads((ROOT / node_suite.COUNTS_FILE).read_text())
CASES = node_suite.cases()
OPERATOR = node_suite.operators_of(CASES)
IMPORTED = [c for c in CASES if node_suite.imported(OPERATOR[c.name])]


class KnownFailure(Exception):
    """A recorded failure, failing for its recorded reason."""


def _marks(case):
    reason = RECORDED["known_failures"].get(case.name)
    if reason is None:
        return []
    return [pytest.mark.xfail(raises=KnownFailure, strict=True, reason=reason)]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in IMPORTED])
def test_node_case(case):
    outcome = node_suite.outcome(case, OPERATOR[case.name])
    recorded = RECORDED["known_failures"].get(case.name)
    if recorded is not None and not outcome.passed:
        assert outcome.reason == recorded, (
            f"{case.name} fails for another reason than the recorded one:\n  now: "
            f"{outcome.reason}\n  recorded: {recorded}")
        raise KnownFailure(recorded)
    assert outcome.passed, f"{case.name} ({outcome.operator}): {outcome.reason}"


def test_no_operators_count_drops():
    outcomes = node_suite.run_all()
    now = node_suite.counts(outcomes)
    dropped = {op: (entry["passed"], now.get(op, {"passed": 0})["passed"])
               for op, entry in RECORDED["operators"].items()
               if now.get(op, {"passed": 0})["passed"] < entry["passed"]}
    broke = [f"  {o.name} ({o.operator}): {o.reason}" for o in outcomes
             if not o.passed and o.operator in dropped]
    assert not dropped, ("passing node tests dropped (operator: recorded -> now): "
                         + ", ".join(f"{op}: {a} -> {b}" for op, (a, b) in dropped.items())
                         + "\n" + "\n".join(broke))
    assert sum(o.passed for o in outcomes) >= RECORDED["totals"]["passed"]


REAL_MODELS_USE = node_suite.REAL_MODELS_USE


@pytest.mark.parametrize("operator", REAL_MODELS_USE)
def test_the_operators_real_models_use_are_imported(operator):
    cases = [c for c in CASES if OPERATOR[c.name] == operator]
    outcomes = [node_suite.outcome(c, operator) for c in cases]
    assert node_suite.imported(operator) and cases
    failing = [o for o in outcomes if not o.passed and o.name not in RECORDED["known_failures"]]
    assert not failing, [(o.name, o.reason) for o in failing]
    assert any(o.passed for o in outcomes)
