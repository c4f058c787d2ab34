#!/usr/bin/env python3
"""Build the project's environments and run the demo or every test suite (stdlib only).

    python3 tools/dev.py demo [--fresh] [DEMO OPTIONS]   # .envs/demo, then examples/digits.py
    python3 tools/dev.py test [--fresh] [ENV ...]        # every test env (or the named ones)

Each environment is a virtual environment in ``.envs/<name>``, described by one entry of
`ENVS`: pip requirements taken from the package index, local packages under ``packages/``
(installed editable, by path, in the same pip command as the requirements, so that a
distribution of ours is never fetched from the index under the same name), and the pytest
suites to run in it. An environment is reused while its spec (the requirements, the local
packages and a hash of each one's ``pyproject.toml``, the Python) matches the stamp file
written when it was built; otherwise, or with ``--fresh``, it is rebuilt from scratch.

``test`` prints a summary table and exits with status 1 if any environment fails to build
or any suite fails or collects no tests.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVS_DIR = ROOT / ".envs"
STAMP = "flux-env.json"
DEMO = ROOT / "examples" / "digits.py"

DOCTESTS = ("--doctest-modules", "packages/flux-core/src/flux")
UNROLLED = ("FLUX_LOOPS=unroll", "tests/test_unroll.py", "tests/test_recurrence.py",
            "tests/test_seed_examples.py", "tests/test_sequence_examples.py",
            "tests/test_everyday.py", "tests/test_checkpoints.py")
"""The recurrence suites again with every loop fully unrolled (the documented option)."""


@dataclasses.dataclass(frozen=True)
class Env:
    """One environment: what to install in it and which pytest suites to run there."""

    name: str
    requirements: tuple[str, ...]
    """pip requirement strings, resolved from the package index."""
    packages: tuple[str, ...] = ("packages/flux-core",)
    """Local packages (paths relative to the repository, extras allowed: ``path[tf]``)."""
    suites: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    """Suite name -> pytest arguments, run from the repository root; leading ``NAME=value``
    items are environment settings for that suite (``FLUX_LOOPS=unroll``)."""
    from_wheels: bool = False
    """Install the local packages the way users do: built into wheels, then ``pip install
    --no-index --find-links WHEELS "<first package>[extras]==<version>"`` (so the first
    package's extra must pull in the others). Rebuilt and reinstalled on every run, since a
    wheel does not follow the source the way an editable install does."""


TEST_TOOLS = ("pytest", "hypothesis", "tqdm",     # (flux-core's tqdm, before --no-index installs)
              "setuptools>=70.1")   # builds flux-core's metadata offline (tests/test_packaging.py)

ONNX = ("onnx==1.23.2", "onnxruntime==1.32.0")
ONNX_ON_BACKENDS = ("tests/onnx/test_onnx_backends.py",)
"""ONNX-loaded models and ONNX's node tests on each backend plugin (in its environment)."""

ENVS = [
    Env("demo", ("numpy>=2,<3", "scikit-learn", "matplotlib")),
    # `dev.py demo --backend tf` / `--backend mxnet` run the demo in these.
    Env("demo-tf", ("tensorflow-cpu==2.21.0", "scikit-learn", "matplotlib"),
        packages=("packages/flux-core", "packages/flux-tf")),
    # scikit-learn 1.3.2 and matplotlib 3.7 are the last releases with wheels for NumPy 1.23.
    Env("demo-mxnet", ("numpy==1.23.5", "mxnet==1.9.1", "scikit-learn==1.3.2",
                       "matplotlib==3.7.5"),
        packages=("packages/flux-core", "packages/flux-mxnet")),
    # PyTorch (CPU) is the oracle of the layer tests and the benchmarks' baseline; onnx and
    # onnxruntime test flux.onnx (onnxruntime runs what flux exports; PyTorch makes ONNX files).
    Env("core", ("numpy>=2,<3", *TEST_TOOLS, "scikit-learn", "matplotlib", "ruff",
                 "torch==2.13.0", *ONNX),
        suites={"tests": ("tests",), "doctests": DOCTESTS, "unrolled": UNROLLED}),
    # flux-core must also work on the oldest NumPy it supports (the one MXNet needs).
    Env("core-np123", ("numpy==1.23.5", *TEST_TOOLS, *ONNX),
        suites={"tests": ("tests",), "doctests": DOCTESTS}),
    # A third party's backend, installed from its own pyproject.toml, passes the conformance kit.
    Env("third-party", ("numpy>=2,<3", *TEST_TOOLS),
        packages=("packages/flux-core", "examples/third_party_backend"),
        suites={"conformance": ("examples/third_party_backend/tests",)}),
    # `pip install "flux-core[tf]"` from the repository's built wheels, as users install it.
    Env("tf", ("tensorflow-cpu==2.21.0", ONNX[0], *TEST_TOOLS),
        packages=("packages/flux-core[tf]", "packages/flux-tf"),
        suites={"tests": ("tests/tf", "tests/test_properties.py", "tests/test_installation.py",
                          *ONNX_ON_BACKENDS, "tests/distributed/test_tf_distributed.py",
                          "tests/distributed/test_docs.py")},
        from_wheels=True),
    # MXNet 1.9.1 (the last release) imports only with NumPy < 1.24.
    Env("mxnet", ("numpy==1.23.5", "mxnet==1.9.1", ONNX[0], *TEST_TOOLS),
        packages=("packages/flux-core[mxnet]", "packages/flux-mxnet"),
        suites={"mxnet": ("tests/mxnet", "tests/test_properties.py",
                          "tests/test_installation.py", *ONNX_ON_BACKENDS,
                          "tests/distributed/test_mxnet_distributed.py",
                          "tests/distributed/test_docs.py")},
        from_wheels=True),
    # `pip install "flux-core[cupy]"` from the built wheels (CuPy for CUDA 12 from the index),
    # plus NVRTC: no GPU here, so the suites run on flux-cupy's NumPy stand-in and compile
    # every CUDA kernel it generates (tests/conftest.py sets both up).
    Env("cupy", ("numpy>=2,<3", "cupy-cuda12x>=13", "nvidia-cuda-nvrtc-cu12", ONNX[0],
                 *TEST_TOOLS),
        packages=("packages/flux-core[cupy]", "packages/flux-cupy"),
        suites={"cupy": ("tests/cupy", "tests/test_properties.py",
                         "tests/test_installation.py", *ONNX_ON_BACKENDS)}, from_wheels=True),
]


# ----------------------------------------------------------------------------- environments

def _python_in(where: Path) -> Path:
    return where / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _clean_environ(**extra: str) -> dict[str, str]:
    """The caller's environment without what would leak other installations into an env."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    environ["PYTHONNOUSERSITE"] = "1"
    environ.update(extra)
    return environ


def _package_dir(package: str) -> Path:
    return ROOT / package.split("[", 1)[0]


def spec_of(env: Env) -> dict:
    """What the environment is built from; a change to any of it means a rebuild."""
    packages = {}
    for package in env.packages:
        pyproject = _package_dir(package) / "pyproject.toml"
        packages[package] = hashlib.sha256(pyproject.read_bytes()).hexdigest()
    spec = {
        "python": f"{platform.python_version()} {sys.base_prefix}",
        "requirements": list(env.requirements),
        "packages": packages,
    }
    if env.from_wheels:
        spec["from_wheels"] = True
    return spec


def _read_stamp(where: Path) -> dict | None:
    try:
        return json.loads((where / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _run(command: list, **kwargs) -> int:
    print("$ " + " ".join(str(part) for part in command), flush=True)
    return subprocess.run(command, **kwargs).returncode


def ensure(env: Env, fresh: bool) -> tuple[Path | None, str]:
    """The env's Python, built or reused, and what happened: 'reused', 'built' or 'FAILED'."""
    where = ENVS_DIR / env.name
    spec = spec_of(env)
    if not fresh and _read_stamp(where) == spec and _python_in(where).exists():
        print(f"== env {env.name}: reusing {where.relative_to(ROOT)}", flush=True)
        if env.from_wheels and not install_wheels(env, _python_in(where), fresh_install=False):
            return None, "FAILED"
        return _python_in(where), "reused"
    why = "--fresh" if fresh else ("spec changed" if where.exists() else "new")
    print(f"== env {env.name}: building {where.relative_to(ROOT)} ({why})", flush=True)
    if where.exists():
        shutil.rmtree(where)
    if _run([sys.executable, "-m", "venv", where], env=_clean_environ()) != 0:
        return None, "FAILED"
    python = _python_in(where)
    local = []
    if not env.from_wheels:
        for package in env.packages:
            local += ["-e", str(ROOT / package)]
    install = [python, "-m", "pip", "install", *PIP_QUIET, *env.requirements, *local]
    if _run(install, cwd=ROOT, env=_clean_environ()) != 0:
        return None, "FAILED"
    if env.from_wheels and not install_wheels(env, python, fresh_install=True):
        return None, "FAILED"
    (where / STAMP).write_text(json.dumps(spec, indent=2) + "\n")
    return python, "built"


PIP_QUIET = ("--disable-pip-version-check", "--progress-bar", "off")


def _project_field(package: str, field: str) -> str:
    """`name` or `version` from a local package's pyproject.toml (stdlib only: a regex)."""
    text = (_package_dir(package) / "pyproject.toml").read_text()
    match = re.search(rf'^{field}\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"dev.py: no {field} in {package}/pyproject.toml")
    return match.group(1)


def install_wheels(env: Env, python: Path, fresh_install: bool) -> bool:
    """Build the env's local packages into wheels and install them by name from those wheels
    alone (``--no-index``): the first package with its extras, which must bring the rest."""
    wheels = ENVS_DIR / env.name / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    for package in env.packages:       # setuptools' build/ would keep files deleted since
        shutil.rmtree(_package_dir(package) / "build", ignore_errors=True)
    build = [python, "-m", "pip", "wheel", *PIP_QUIET, "--no-deps", "--no-build-isolation",
             "--quiet", "-w", wheels, *(str(_package_dir(p)) for p in env.packages)]
    built = _run(build, cwd=ROOT, env=_clean_environ()) == 0
    for package in env.packages:       # and leave no copy of the sources behind
        shutil.rmtree(_package_dir(package) / "build", ignore_errors=True)
    if not built:
        return False
    first = env.packages[0]
    extras = first[len(first.split("[", 1)[0]):]
    wanted = f"{_project_field(first, 'name')}{extras}=={_project_field(first, 'version')}"
    install = [python, "-m", "pip", "install", *PIP_QUIET, "--no-index", "--find-links", wheels]
    if not fresh_install:          # same version numbers, new code: replace ours only
        install += ["--force-reinstall", "--no-deps",
                    *(_project_field(p, "name") for p in env.packages[1:])]
    return _run([*install, wanted], cwd=ROOT, env=_clean_environ()) == 0


# ----------------------------------------------------------------------------- suites

@dataclasses.dataclass
class Row:
    env: str
    suite: str
    result: str
    seconds: float
    counts: dict[str, int] | None = None


def _counts(report: Path) -> dict[str, int] | None:
    """Passed/failed/skipped counts from a pytest JUnit XML report."""
    try:
        root = ElementTree.parse(report).getroot()
    except (OSError, ElementTree.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for key in total:
            total[key] += int(suite.get(key, 0))
    failed = total["failures"] + total["errors"]
    return {"passed": total["tests"] - failed - total["skipped"], "failed": failed,
            "skipped": total["skipped"]}


def _wheels_flag(env: Env) -> dict[str, str]:
    """What tests/test_installation.py checks: the distributions installed from wheels."""
    if not env.from_wheels:
        return {}
    first, *rest = env.packages
    names = [_project_field(first, "name") + first[len(first.split("[", 1)[0]):]]
    names += [_project_field(p, "name") for p in rest]
    return {"FLUX_INSTALLED_FROM_WHEELS": ",".join(names)}


def run_suite(env: Env, python: Path, suite: str, args: tuple[str, ...]) -> Row:
    print(f"== env {env.name}: suite {suite}", flush=True)
    report = ENVS_DIR / env.name / "reports" / f"{suite}.xml"
    report.unlink(missing_ok=True)
    started = time.perf_counter()
    settings = {}
    while args and "=" in args[0] and not args[0].startswith("-"):
        name, _, value = args[0].partition("=")
        settings[name], args = value, args[1:]
    code = _run([python, "-m", "pytest", *args, f"--junitxml={report}"], cwd=ROOT,
                env=_clean_environ(MPLBACKEND="Agg", **_wheels_flag(env), **settings))
    seconds = time.perf_counter() - started
    counts = _counts(report)
    if code == 5 or (code == 0 and counts is not None and sum(counts.values()) == 0):
        result = "NO TESTS"
    else:
        result = "passed" if code == 0 else f"FAILED ({code})"
    return Row(env.name, suite, result, seconds, counts)


def print_summary(rows: list[Row], seconds: float) -> None:
    header = ("env", "suite", "result", "passed", "failed", "skipped", "seconds")
    lines = [header]
    for row in rows:
        c = row.counts or {}
        lines.append((row.env, row.suite, row.result, str(c.get("passed", "")),
                      str(c.get("failed", "")), str(c.get("skipped", "")), f"{row.seconds:.1f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print("\n== summary")
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))
    print(f"total {seconds:.1f} s", flush=True)


def _ok(row: Row) -> bool:
    return row.result in ("passed", "built", "reused")


# ----------------------------------------------------------------------------- commands

def test(names: list[str], fresh: bool) -> int:
    testable = [env for env in ENVS if env.suites]
    unknown = set(names) - {env.name for env in testable}
    if unknown:
        raise SystemExit(f"dev.py: no test environment named {', '.join(sorted(unknown))}; "
                         f"the test environments are {', '.join(e.name for e in testable)}")
    started = time.perf_counter()
    rows = []
    for env in testable:
        if names and env.name not in names:
            continue
        build_started = time.perf_counter()
        python, status = ensure(env, fresh)
        rows.append(Row(env.name, "(env)", status, time.perf_counter() - build_started))
        if python is None:
            continue
        for suite, args in env.suites.items():
            rows.append(run_suite(env, python, suite, args))
    print_summary(rows, time.perf_counter() - started)
    return 0 if all(_ok(row) for row in rows) else 1


def demo(options: list[str], fresh: bool) -> int:
    backend = _option(options, "--backend") or "numpy"
    name = "demo" if backend == "numpy" else f"demo-{backend}"
    found = [env for env in ENVS if env.name == name]
    if not found:
        raise SystemExit(f"dev.py: no demo environment for the backend {backend!r}; "
                         f"demo environments: numpy (demo), " +
                         ", ".join(e.name[5:] for e in ENVS if e.name.startswith("demo-")))
    [env] = found
    python, status = ensure(env, fresh)
    if python is None:
        print("dev.py: building the demo environment failed (see pip's output above)",
              file=sys.stderr)
        return 1
    return _run([python, DEMO, *options], env=_clean_environ())


def _option(options: list[str], flag: str) -> str | None:
    """The value given to `flag` in `options` (``--flag V`` or ``--flag=V``), else None."""
    for i, option in enumerate(options):
        if option == flag and i + 1 < len(options):
            return options[i + 1]
        if option.startswith(flag + "="):
            return option[len(flag) + 1:]
    return None


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 10):
        raise SystemExit("dev.py: flux needs Python 3.10 or newer; run this with python3.11")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="build .envs/demo and run examples/digits.py; "
                                   "other options go to the demo (--epochs, --backend, --out)")
    run_demo.add_argument("--fresh", action="store_true", help="rebuild the environment")
    run_tests = commands.add_parser("test", help="build every test environment and run every "
                                    "suite in it")
    run_tests.add_argument("--fresh", action="store_true", help="rebuild the environments")
    run_tests.add_argument("envs", nargs="*", metavar="ENV",
                           help="only these environments: " +
                                ", ".join(env.name for env in ENVS if env.suites))
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        return demo(rest, args.fresh)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    return test(args.envs, args.fresh)


if __name__ == "__main__":
    sys.exit(main())
