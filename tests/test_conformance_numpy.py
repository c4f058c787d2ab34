"""The built-in NumPy backend against the conformance kit (`flux.testing`), and the kit
against deliberately broken backends and oracles (every kind of check must be able to fail)."""
import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import flux
from flux.ir import primitives as _primitives
from flux.backends import NUMPY, Backend
from flux.testing import CASES, PRIMITIVE_CASES, BackendConformance


class TestNumpyConformance(BackendConformance):
    """Every conformance check, for ``flux.compile(model, "numpy")``."""

    backend = "numpy"


# -- the kit catches what it is meant to catch ----------------------------------------------------


class Mutant(Backend):
    """The NumPy backend with one defect: `wrap(graph, run)` returns the defective function."""

    name = "numpy"
    package = "tests"

    def __init__(self, wrap, prepare=lambda graph: graph):
        self.wrap, self.prepare = wrap, prepare

    def lower(self, graph, options):
        return self.wrap(graph, NUMPY.lower(self.prepare(graph), options))


def _suite(backend: Backend) -> BackendConformance:
    class Suite(BackendConformance):
        def compile(self, model):
            return flux.Compiled(model, backend)
    return Suite()


def _case(name, table=CASES):
    return next(c for c in table if c.name == name)


def _scaled(factor, first=0):
    """Outputs from index `first` on, multiplied by `factor`."""
    def wrap(graph, run):
        def scaled(*xs):
            return [o * o.dtype.type(factor) if i >= first and o.dtype.kind == "f" else o
                    for i, o in enumerate(run(*xs))]
        return scaled
    return wrap


def _stale_params(graph):
    """The graph reading snapshots of its Params (values copied away at lowering)."""
    stale = copy.copy(graph)
    stale.param_objs = [flux.Param(np.array(p.value)) for p in graph.param_objs]
    return stale


def _reused_buffers(graph, run):
    buffers = {}

    def reusing(*xs):
        outs = run(*xs)
        for i, o in enumerate(outs):
            buffers.setdefault(i, np.empty_like(o))[...] = o
        return [buffers[i] for i in range(len(outs))]
    return reusing


def _writes_inputs(graph, run):
    def writing(*xs):
        outs = run(*xs)
        for x in xs[:1]:
            x[...] = 0
        return outs
    return writing


def _wrong_single_points(graph, run):
    """Correct for batches, off for inputs without a batch axis."""
    single = graph.inputs and graph.inputs[0].aval.ndim == 1
    return _scaled(1.01)(graph, run) if single else run


def _wrong_train_steps(graph, run):
    """Halves the gradients of the graphs `flux.train` runs (those whose first output is
    the 0-d loss); forward and `back` stay right."""
    training = graph.outputs[0].aval.shape == () and len(graph.outputs) > 1
    return _scaled(0.5, first=1)(graph, run) if training else run


def _float64_outputs(graph, run):
    return lambda *xs: [o.astype(np.float64) for o in run(*xs)]


def _python_scalars(graph, run):
    return lambda *xs: [o[()] if o.ndim == 0 else o for o in run(*xs)]


MUTANTS = {
    "outputs off by 0.1%": (Mutant(_scaled(1.001)), "check_forward", "affine_batch"),
    "float64 outputs": (Mutant(_float64_outputs), "check_forward", "affine_batch"),
    "a NumPy scalar for a 0-d output": (Mutant(_python_scalars), "check_forward",
                                         "chain_of_numpy_functions"),
    "reused output buffers": (Mutant(_reused_buffers), "check_forward", "affine_batch"),
    "writes into its inputs": (Mutant(_writes_inputs), "check_forward", "affine_batch"),
    "gradients off by 1%": (Mutant(_scaled(1.01, first=1)), "check_gradients", "affine_batch"),
    "gradients of a shared Param not summed": (
        Mutant(_scaled(0.5, first=2)), "check_gradients", "shared_param"),
    "stale Param values": (Mutant(lambda g, run: run, _stale_params), "check_update",
                           "affine_batch"),
    "wrong training steps": (Mutant(_wrong_train_steps), "check_train", "affine_batch"),
    "wrong single points": (Mutant(_wrong_single_points), "check_batch", "affine_batch"),
}


@pytest.mark.parametrize("mutant, check, case", MUTANTS.values(), ids=list(MUTANTS))
def test_kit_catches_a_broken_backend(mutant, check, case):
    """Each check fails on a backend with the defect it exists to catch..."""
    with pytest.raises(AssertionError):
        getattr(_suite(mutant), check)(_case(case))


@pytest.mark.parametrize("mutant, check, case", MUTANTS.values(), ids=list(MUTANTS))
def test_kit_passes_the_unbroken_backend(mutant, check, case):
    """...and passes the same case on the intact backend, so the defect is what fails."""
    getattr(_suite(Mutant(lambda graph, run: run)), check)(_case(case))


def _off(reference, factor=1.001):
    """The reference with every float output scaled by `factor` and every bool one negated."""
    def one(out):
        out = np.asarray(out)
        return ~out if out.dtype == np.bool_ else out * factor

    def wrong(p, *xs):
        out = reference(p, *xs)
        return tuple(one(o) for o in out) if isinstance(out, tuple) else one(out)
    return wrong


ALL_CASES = CASES + PRIMITIVE_CASES


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.name for c in ALL_CASES])
def test_every_case_consults_its_oracle(case):
    """No case passes vacuously: with its reference off by 0.1% (negated for booleans) the
    forward check fails, and with it off by 1% the gradient check fails."""
    suite = TestNumpyConformance()
    with pytest.raises(AssertionError):
        suite.check_forward(dataclasses.replace(case, reference=_off(case.reference, 1.001)))
    if case.differentiable:
        with pytest.raises(AssertionError):
            suite.check_gradients(dataclasses.replace(case, reference=_off(case.reference, 1.01)))


@pytest.mark.parametrize("check, factor", [("check_forward", 1.001), ("check_gradients", 1.01),
                                           ("check_update", 1.001), ("check_train", 1.01)])
def test_kit_catches_a_wrong_oracle(check, factor):
    """A reference off by 0.1% (forward values) or 1% (gradients) fails the checks on a
    correct backend: the oracle is really consulted."""
    case = _case("shared_param")
    wrong = dataclasses.replace(case, reference=_off(case.reference, factor))
    with pytest.raises(AssertionError):
        getattr(TestNumpyConformance(), check)(wrong)


def test_kit_catches_a_loss_that_does_not_decrease(monkeypatch):
    """The training check fails when the steps go uphill (a negative learning rate, which
    flux.SGD itself refuses: the kit is given an SGD that takes it)."""
    class Unchecked(flux.SGD):
        def __init__(self, lr):
            self.lr = lr

    monkeypatch.setattr(flux, "SGD", Unchecked)
    suite = TestNumpyConformance()
    suite.lr = -0.1
    with pytest.raises(AssertionError, match="did not decrease"):
        suite.check_train(_case("affine_batch"))


def test_kit_catches_a_wrong_primitive_case():
    """A primitive case whose model does not use its primitive fails the coverage test."""
    case = _case("exp", PRIMITIVE_CASES)
    wrong = dataclasses.replace(case, model=lambda: flux.net(lambda x: np.tanh(x)))
    with pytest.raises(AssertionError, match="does not use the primitive"):
        TestNumpyConformance().test_primitive_case_uses_its_primitive(wrong)


def test_kit_catches_a_primitive_without_a_case(monkeypatch):
    """A primitive added to the IR without a case fails the table's completeness test."""
    monkeypatch.setattr(_primitives, "PRIMITIVES",
                        _primitives.PRIMITIVES + [_primitives.Primitive(
                            "new_op", impl=np.negative, shape_rule=lambda x: x)])
    with pytest.raises(AssertionError, match="new_op"):
        TestNumpyConformance().test_every_primitive_has_a_case()


def test_kit_rejects_a_wrong_has_params_flag():
    case = dataclasses.replace(_case("affine_batch"), has_params=False)
    with pytest.raises(AssertionError, match="has_params"):
        TestNumpyConformance().check_forward(case)


def test_flux_backend_option(tmp_path):
    """``pytest --flux-backend numpy``, in a directory with no test file, runs the kit's suite
    (here the tests of one case: forward, gradients, update, train, batch and the six
    optimiser configurations of `OPTIMISERS`; and the table's completeness test)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--flux-backend", "numpy", "-q",
                          "-p", "no:cacheprovider", "-k", "affine_batch or every_primitive"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "12 passed" in run.stdout, run.stdout


def test_flux_backend_option_needs_an_installed_backend(tmp_path):
    """A backend named on the command line but not installed fails the suite (no skips)."""
    run = subprocess.run([sys.executable, "-m", "pytest", "--flux-backend", "nonesuch", "-q",
                          "-p", "no:cacheprovider", "-k", "affine_batch"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "'nonesuch' is not installed" in run.stdout, run.stdout
