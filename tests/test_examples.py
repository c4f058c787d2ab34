"""The examples and the README's code run as documented."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits.py"


def run_digits(*options: str) -> subprocess.CompletedProcess:
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn")
    pytest.importorskip("matplotlib", reason="the demo draws its loss curve with matplotlib")
    return subprocess.run([sys.executable, str(DIGITS), *options], capture_output=True,
                          text=True, timeout=300)


def test_digits_trains_to_the_target_accuracy_and_draws_the_loss_curve(tmp_path):
    out = tmp_path / "loss.png"
    done = run_digits("--epochs", "10", "--seed", "0", "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test accuracy:" in done.stdout
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", done.stdout).group(1))
    assert accuracy >= 0.95
    assert len(re.findall(r"^epoch +\d+/10 ", done.stdout, re.MULTILINE)) == 10
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_digits_names_the_package_for_a_missing_backend(tmp_path):
    done = run_digits("--backend", "no-such-backend", "--out", str(tmp_path / "loss.png"))
    assert done.returncode == 2
    assert "no-such-backend" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "loss.png").exists()


def test_cnn_digits_reaches_its_target_and_prints_the_shapes():
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn")
    done = subprocess.run([sys.executable, str(REPO / "examples" / "cnn_digits.py")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", done.stdout).group(1))
    assert accuracy >= 0.98
    assert "MaxPool((2, 2))(" in done.stdout and "::(32, 4, 4, 32)" in done.stdout


def test_the_transformer_learns_to_reverse_sequences_in_its_quick_form():
    done = subprocess.run([sys.executable, str(REPO / "examples" / "transformer.py"), "--quick"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    whole = float(re.search(r"([\d.]+) per sequence", done.stdout).group(1))
    assert whole >= 0.9


def readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_readme_has_python_examples():
    assert readme_python_blocks()


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_the_readme_python_examples_run(index):
    code = readme_python_blocks()[index]
    exec(compile(code, f"README.md (python block {index + 1})", "exec"), {})
