"""The pytest plugin of the conformance kit: the ``--flux-backend NAME`` option.

pytest loads this module in every session where flux-core is installed (the ``pytest11``
entry point ``flux_testing``), so it only registers the option and does nothing else unless
the option is given. With it::

    pytest --flux-backend mybackend            # just the conformance suite for `mybackend`
    pytest tests/ --flux-backend mybackend     # your tests, plus the suite

the kit's suite (`flux.testing.BackendConformance` for that backend, in
``flux/testing/_backend_suite.py``) is added to the run, with no test file written. A backend
named this way must be installed: the suite fails, not skips, when it is missing.
"""
from __future__ import annotations

from pathlib import Path

_selected: str | None = None


def selected_backend() -> str | None:
    """The backend named by ``--flux-backend`` in this session, or None."""
    return _selected


def pytest_addoption(parser) -> None:
    group = parser.getgroup("flux", "flux backend conformance kit")
    group.addoption("--flux-backend", action="store", default=None, metavar="NAME",
                    help="run flux's backend conformance suite (flux.testing) against the "
                         "installed backend NAME")


def pytest_configure(config) -> None:
    global _selected
    _selected = config.getoption("flux_backend", None)
    if _selected is None:
        return
    suite = str(Path(__file__).with_name("_backend_suite.py"))
    if config.args_source == config.ArgsSource.ARGS:
        config.args.append(suite)        # paths were given: run them and the suite
    else:
        config.args[:] = [suite]         # no paths given: run only the suite
