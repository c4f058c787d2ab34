"""flux.testing: the backend conformance kit, a pytest plugin any backend runs to prove itself.

A backend passes when every model in the case tables, compiled for it, computes what a
hand-written NumPy oracle computes, differentiates to what finite differences of that oracle
give, shares its parameters with the original model, and trains. Two ways to run it:

- subclass the suite in a test file (works for any installed backend, ours or a third
  party's)::

      from flux.testing import BackendConformance

      class TestMyBackendConformance(BackendConformance):
          backend = "mybackend"
          options = {}            # optional: keyword options for flux.compile
          rtol = 1e-4             # optional: tolerances, see RTOL, ATOL, GRAD_RTOL

- or, with no test file, ``pytest --flux-backend mybackend`` (the option comes from
  `flux.testing.plugin`, which pytest loads wherever flux-core is installed).

What is checked, per case (see `BackendConformance`'s ``check_*`` docstrings):

1. forward: values within float32 tolerance of the float64 oracle, same structure, shape and
   dtype (a 0-d array for one number); repeated calls agree and never clobber earlier results;
2. gradients: ``flux.back`` gives Param and input gradients equal to central finite
   differences (float64) of the oracle under a random cotangent, and accumulates;
3. write-back: ``flux.update`` moves the original model's Params by exactly ``-lr * grad``
   and clears gradients; assigned and in-place-written Param values are seen at the next call;
4. training: ``flux.train`` reports the oracle's loss, steps by the finite-difference
   gradient, and reduces the loss epoch after epoch;
5. batching: single points give the rows of the batch's output.

`CASES` covers layers, Chains, ``@net`` classes with sub-models, plain NumPy functions inside
models, every activation and array function of the contract, 0-d outputs, tuples in and out,
several inputs, closures over Params and a Param shared by two layers. `PRIMITIVE_CASES` has
one case per IR primitive (forward, and gradients where defined), and a test fails when a
primitive has no case. `assert_close`, `assert_grads_close` and `finite_differences` are
public for backends' own tests.

Importing this package is cheap (the names load on first use), because pytest imports it to
reach its plugin module in every session.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["BackendConformance", "Case", "CASES", "PRIMITIVE_CASES", "assert_close",
           "assert_grads_close", "finite_differences", "RTOL", "ATOL", "GRAD_RTOL", "FD_EPS"]

_HOMES = {
    "BackendConformance": "._suite",
    "Case": "._cases", "CASES": "._cases",
    "PRIMITIVE_CASES": "._primitive_cases",
    "assert_close": "._checks", "assert_grads_close": "._checks",
    "finite_differences": "._checks", "RTOL": "._checks", "ATOL": "._checks",
    "GRAD_RTOL": "._checks", "FD_EPS": "._checks",
}

if TYPE_CHECKING:
    from ._cases import CASES, Case
    from ._checks import (ATOL, FD_EPS, GRAD_RTOL, RTOL, assert_close, assert_grads_close,
                          finite_differences)
    from ._primitive_cases import PRIMITIVE_CASES
    from ._suite import BackendConformance


def __getattr__(name: str):
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flux.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
