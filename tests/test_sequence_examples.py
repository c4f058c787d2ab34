"""The sequence examples (translation with attention, character-level LSTM) run as documented
and reach their stated quality in their --quick settings."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *options], capture_output=True,
                          text=True, timeout=300)


def run_char_rnn(*options: str) -> subprocess.CompletedProcess:
    pytest.importorskip("pydoc_data.topics",
                        reason="the char_rnn text is the standard library's pydoc_data")
    return run_example("char_rnn.py", *options)


def test_translation_learns_to_reverse_phrases():
    done = run_example("translation.py", "--quick", "--seed", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(re.findall(r"^epoch +\d+/8 ", done.stdout, re.MULTILINE)) == 8
    accuracy = float(re.search(r"^test accuracy: ([\d.]+) per letter", done.stdout,
                               re.MULTILINE).group(1))
    assert accuracy >= 0.6            # the stated --quick target; chance is 0.2
    # a few held-out phrases with the model's translation and the right one
    shown = re.findall(r"^  ([a-e_]{7}) -> ([a-e_]{7}) +\(right: ([a-e_]{7})\)$", done.stdout,
                       re.MULTILINE)
    assert len(shown) == 5
    assert all(right == phrase.rstrip("_")[::-1].ljust(7, "_") for phrase, _, right in shown)


def test_char_rnn_beats_its_target_and_writes_samples():
    done = run_char_rnn("--quick", "--seed", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    entropy = float(re.search(r"ignores context: ([\d.]+) nats", done.stdout).group(1))
    loss = float(re.search(r"^held-out loss: ([\d.]+) nats = ([\d.]+) bits", done.stdout,
                           re.MULTILINE).group(1))
    assert loss < 2.5 < entropy       # the stated --quick target, below the context-free loss
    assert re.search(r"^epoch +1/1 .*held-out loss [\d.]+ nats", done.stdout, re.MULTILINE)
    sample = re.search(r"sample \(temperature [\d.]+\):\n((?:    \|.*\n)+)", done.stdout)
    assert sample, done.stdout
    written = "\n".join(line[6:] for line in sample.group(1).splitlines())
    assert written.startswith("The ") and len(written) == len("The ") + 240
    assert sum(c.isalpha() for c in written) > 40     # text, not just blanks


@pytest.mark.parametrize("name", ["translation.py", "char_rnn.py"])
def test_sequence_examples_name_the_package_for_a_missing_backend(name):
    run = run_char_rnn if name == "char_rnn.py" else lambda *o: run_example(name, *o)
    done = run("--backend", "no-such-backend")
    assert done.returncode == 2
    assert "no-such-backend" in done.stderr and "Traceback" not in done.stderr
    assert "epoch" not in done.stdout
