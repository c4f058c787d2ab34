"""docs/distributed.md's one-machine examples run and print what the page shows.

The page's scripts are its code blocks with a file name (```` ```python file=train.py ````);
its sessions are ```` ```console tf ```` / ```` ```console mxnet ```` blocks of ``$ command``
lines, each followed by what it printed. This test writes the scripts into a temporary folder,
runs every session of the engines installed here with bash there (``python`` being this
interpreter, ``$FREE_PORT`` and ``$FREE_PORT_2`` free ports: not ``$PORT``, which ps-lite reads
as a node's own port; a hard timeout per command, each in its own process group), and checks
that every line the page shows was printed, in any order (the workers' lines interleave),
``...`` standing for any text (times, pids, ports). Lines the engines print besides (their own
warnings) are allowed.
"""
from __future__ import annotations

import doctest
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flux.backends import free_ports

PAGE = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
ENGINE = {"tf": ("tensorflow", "flux_tf"), "mxnet": ("mxnet", "flux_mxnet")}
TIMEOUT = 150          # seconds, per command


def blocks():
    """``(language, info, text)`` of every fenced block of the page."""
    return [(m[1], m[2].strip(), m[3]) for m in BLOCK.finditer(PAGE.read_text("utf-8"))]


def scripts() -> dict:
    return {info.split("=", 1)[1]: text for _, info, text in blocks()
            if info.startswith("file=")}


def sessions(engine: str) -> list:
    """``(command, expected lines)`` of the engine's console blocks, in page order."""
    out = []
    for language, info, text in blocks():
        if language != "console" or info != engine:
            continue
        command = None
        for line in text.splitlines():
            if line.startswith("$ "):
                command = [line[2:], []]
                out.append(command)
            elif command is not None and command[1] == [] and command[0].endswith("\\"):
                command[0] = command[0][:-1] + line.strip()       # a continued command
            elif command is not None and line.strip():
                command[1].append(line)
    return out


def shell(command: str, folder: Path, env: dict) -> str:
    p = subprocess.Popen(["bash", "-c", command], cwd=folder, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=TIMEOUT)
        return out
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def unmatched(expected: list, printed: list) -> list:
    """The expected lines that no printed line matches (each printed line used once)."""
    checker, flags = doctest.OutputChecker(), doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    left, missing = list(printed), []
    for want in expected:
        for i, got in enumerate(left):
            if checker.check_output(want.strip() + "\n", got.strip() + "\n", flags):
                del left[i]
                break
        else:
            missing.append(want)
    return missing


@pytest.mark.parametrize("engine", sorted(ENGINE))
def test_the_page_runs(engine, tmp_path):
    for module in ENGINE[engine]:
        pytest.importorskip(module)
    assert sessions(engine), f"docs/distributed.md has no `console {engine}` sessions"
    for name, text in scripts().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               PY=sys.executable, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    for command, expected in sessions(engine):
        env["FREE_PORT"], env["FREE_PORT_2"] = map(str, free_ports(2))
        printed = shell(command, tmp_path, env).splitlines()
        missing = unmatched(expected, printed)
        assert not missing, (f"docs/distributed.md: `{command}` did not print\n"
                             + "\n".join(missing) + "\n--- it printed:\n" + "\n".join(printed))
