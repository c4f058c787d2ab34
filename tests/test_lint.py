"""The repository's code passes ruff with the repository's configuration (pyproject.toml)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ["packages", "tests", "examples", "bench", "tools"]


def python_files() -> list:
    """The committed Python files (work in progress in a checkout is not judged), or the
    folders when this is not a git checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "--", *(f"{d}/*.py" for d in FOLDERS)],
                                cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return FOLDERS
    return listed.stdout.split() or FOLDERS


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_ruff_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", *python_files()], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
