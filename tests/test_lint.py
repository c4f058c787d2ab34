"""The repository's code passes ruff with the repository's configuration (pyproject.toml)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "packages", "tests", "examples",
                           "bench", "tools"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
