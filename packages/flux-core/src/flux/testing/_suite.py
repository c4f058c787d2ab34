"""`BackendConformance`: the conformance checks, as a pytest class backends subclass.

Each ``test_*`` method is parametrised over a case table and calls a ``check_*`` method;
subclasses may override `compile` (how a model is compiled), the tolerances, or call the
``check_*`` methods on cases of their own.
"""
from __future__ import annotations

import numpy as np
import pytest

import flux
from flux.backends import KNOWN_BACKENDS, REGISTRY, vjp
from flux.ir import primitives as _primitives

from ._cases import CASES, Case
from ._checks import ATOL, GRAD_RTOL, RTOL, assert_close, assert_grads_close, leaves
from ._primitive_cases import PRIMITIVE_CASES
from ._training_checks import OPTIMISERS, TrainingChecks, copy_value, random_like, values

__all__ = ["BackendConformance"]


def _ids(cases) -> list[str]:
    return [case.name for case in cases]


_DIFFERENTIABLE = [c for c in CASES if c.differentiable]
_WITH_PARAMS = [c for c in CASES if c.has_params]
_TRAINABLE = [c for c in CASES if c.trainable]
_BATCHED = [c for c in CASES if c.batched]
_PRIMITIVES_DIFFERENTIABLE = [c for c in PRIMITIVE_CASES if c.differentiable]
_OPTIMISER_CASES = [c for c in _TRAINABLE if c.name in (
    "affine_batch", "chain_relu_tanh_logsoftmax", "closure_over_param", "shared_param",
    "unrolled_lstm")]
_FLOAT32 = np.dtype(np.float32)
_LOOPS = [c for c in CASES if c.name.startswith("unrolled_")]


class BackendConformance(TrainingChecks):
    """The conformance suite for one backend. Use it by subclassing in a test file::

        from flux.testing import BackendConformance

        class TestMyBackendConformance(BackendConformance):
            backend = "mybackend"          # the name given to flux.compile
            options = {"device": "cpu"}    # optional: passed to flux.compile
            rtol = 1e-4                    # optional: tolerances (flux.testing.RTOL ...)

    Every check builds a fresh model, so the tests are independent and run in any order.
    When the backend is not installed the tests are skipped, saying what to install; set
    ``skip_if_missing = False`` to make that a failure instead.
    """

    backend: str | None = None
    """The backend's name, as given to `flux.compile`."""

    options: dict = {}
    """Keyword options passed to `flux.compile`."""

    rtol: float = RTOL
    """Relative tolerance of outputs against the float64 oracle."""

    atol: float = ATOL
    """Absolute tolerance of outputs against the float64 oracle."""

    grad_rtol: float = GRAD_RTOL
    """Tolerance of gradients against finite differences (see `assert_grads_close`)."""

    lr: float = 0.1
    """The learning rate of the update and training checks."""

    skip_if_missing: bool = True
    """Skip (True) or fail (False) every test when the backend is not installed."""

    def compile(self, model):
        """The model compiled for the backend under test."""
        return flux.compile(model, self.backend, **self.options)

    @pytest.fixture(autouse=True)
    def _backend_installed(self):
        if not self.backend:
            pytest.fail(f"{type(self).__name__} must set `backend` to a backend's name, e.g. "
                        f"backend = 'numpy' (or run pytest --flux-backend NAME)")
        installed = flux.backends()
        if self.backend not in installed:
            package = KNOWN_BACKENDS.get(self.backend, "the package that provides it")
            message = (f"the flux backend {self.backend!r} is not installed (pip install "
                       f"{package}); installed: {', '.join(installed)}")
            if self.skip_if_missing:
                pytest.skip(message)
            pytest.fail(message)

    # -- the tests -------------------------------------------------------------------------------

    @pytest.mark.parametrize("case", CASES, ids=_ids(CASES))
    def test_forward(self, case: Case):
        self.check_forward(case)

    @pytest.mark.parametrize("case", _DIFFERENTIABLE, ids=_ids(_DIFFERENTIABLE))
    def test_gradients(self, case: Case):
        self.check_gradients(case)

    @pytest.mark.parametrize("case", _WITH_PARAMS, ids=_ids(_WITH_PARAMS))
    def test_update_writes_back(self, case: Case):
        self.check_update(case)

    @pytest.mark.parametrize("case", _TRAINABLE, ids=_ids(_TRAINABLE))
    def test_train(self, case: Case):
        self.check_train(case)

    @pytest.mark.parametrize("opt", list(OPTIMISERS))
    @pytest.mark.parametrize("case", _OPTIMISER_CASES, ids=_ids(_OPTIMISER_CASES))
    def test_optimiser_matches_numpy(self, case: Case, opt: str):
        self.check_optimiser(case, OPTIMISERS[opt])

    @pytest.mark.parametrize("opt", ["SGD", "Momentum", "ADAM"])
    def test_a_non_finite_gradient_changes_nothing(self, opt: str):
        self.check_nonfinite_gradient(OPTIMISERS[opt])

    def test_dropout_draws_the_numpy_backends_fresh_numbers(self):
        self.check_dropout()

    def test_batchnorm_running_statistics(self):
        self.check_batchnorm_statistics()

    def test_checkpoint_and_resume(self, tmp_path):
        self.check_resume(next(c for c in CASES if c.name == "chain_relu_tanh_logsoftmax"),
                          tmp_path)

    @pytest.mark.parametrize("case", _BATCHED, ids=_ids(_BATCHED))
    def test_batch_matches_single_points(self, case: Case):
        self.check_batch(case)

    @pytest.mark.parametrize("case", _LOOPS, ids=_ids(_LOOPS))
    def test_a_loop_matches_full_unrolling(self, case: Case):
        self.check_loop(case)

    @pytest.mark.parametrize("case", PRIMITIVE_CASES, ids=_ids(PRIMITIVE_CASES))
    def test_primitive_forward(self, case: Case):
        self.check_forward(case)

    @pytest.mark.parametrize("case", _PRIMITIVES_DIFFERENTIABLE,
                             ids=_ids(_PRIMITIVES_DIFFERENTIABLE))
    def test_primitive_gradients(self, case: Case):
        self.check_gradients(case)

    def test_every_primitive_has_a_case(self):
        """`PRIMITIVE_CASES` has one case per primitive in `flux.ir.PRIMITIVES` (a
        new primitive without a case fails here) and no case for a primitive that is gone."""
        primitives = [p.name for p in _primitives.PRIMITIVES]
        cases = [c.name for c in PRIMITIVE_CASES]
        missing = [name for name in primitives if name not in cases]
        stale = [name for name in cases if name not in primitives]
        assert not missing, f"primitives with no case in flux.testing.PRIMITIVE_CASES: {missing}"
        assert not stale, f"cases in PRIMITIVE_CASES for no primitive: {stale}"
        assert len(set(cases)) == len(cases), "PRIMITIVE_CASES names a primitive twice"

    @pytest.mark.parametrize("case", PRIMITIVE_CASES, ids=_ids(PRIMITIVE_CASES))
    def test_primitive_case_uses_its_primitive(self, case: Case):
        """The case's graph, or its gradient graph, contains the primitive it is named after,
        so the backend really runs that primitive in the forward or gradient checks."""
        model, _ = case.build()
        graph = flux.compile(model, "numpy").graph(*case.make_inputs())   # core's trace
        used = {eqn.prim.name for eqn in graph.eqns}
        if case.differentiable:
            used |= {eqn.prim.name for eqn in vjp(graph).eqns}
        assert case.name in used, (f"the case {case.name!r} does not use the primitive "
                                   f"{case.name!r}; its graphs use {sorted(used)}")

    def test_shared_param_is_one_param(self):
        """A Param used by two layers is listed once by `flux.params` (under its first path);
        that it is one variable in the backend, with its gradients summed, is checked by the
        ``shared_param`` case's gradient and update tests."""
        case = next(c for c in CASES if c.name == "shared_param")
        model, params = case.build()
        assert model.layers[0].W is model.layers[2].W
        assert list(params) == ["layers.0.W", "layers.0.b", "layers.2.b"]

    # -- the checks ------------------------------------------------------------------------------

    def check_forward(self, case: Case) -> None:
        """Proves the compiled model computes the oracle's function: same structure, shapes
        and dtype (float32 for float32 Params, a 0-d array for one number), values within
        float32 tolerance of the float64 reference; a call on other inputs is right too and
        leaves the first result intact (results are never buffers the backend reuses); calling
        again on the first inputs gives the first result; no call changes its inputs or the
        Params."""
        model, params = case.build()
        assert bool(params) == case.has_params, (
            f"case {case.name!r}: has_params={case.has_params} but the model has "
            f"{len(params)} Params")
        inputs = case.make_inputs()
        others = tuple(case.inputs(case.rng("other inputs")))
        inputs_before, params_before = copy_value(inputs), values(params)
        compiled = self.compile(model)

        out = compiled(*inputs)
        self._check_output(case, out, params, inputs)
        first = copy_value(out)
        self._check_output(case, compiled(*others), params, others)
        for i, (a, b) in enumerate(zip(leaves(out), leaves(first), strict=True)):
            assert np.array_equal(a, b, equal_nan=True), (
                f"output {i} of the first call changed during a later call: the backend "
                f"returned a buffer it reuses")
        assert_close(compiled(*inputs), first, rtol=self.rtol, atol=self.atol,
                     what="the output of a repeated call")
        assert_close(inputs, inputs_before, rtol=0, atol=0, what="inputs after the call")
        assert_close(values(params), params_before, rtol=0, atol=0, what="Params after the call")

    def _check_output(self, case: Case, out, params: dict, inputs: tuple) -> None:
        native = case.expected(params, inputs)                 # NumPy on float32: the dtypes
        exact = case.expected(params, inputs, np.float64)      # float64: the values
        self._check_structure(out, native, "output")
        assert_close(out, exact, rtol=self.rtol, atol=self.atol, what="output")

    def _check_structure(self, out, native, what: str) -> None:
        if isinstance(native, (tuple, list)):
            assert type(out) is type(native) and len(out) == len(native), (
                f"{what}: expected a {type(native).__name__} of {len(native)}, found "
                f"{type(out).__name__}" + (f" of {len(out)}" if isinstance(out, (tuple, list))
                                           else ""))
            for i, (o, n) in enumerate(zip(out, native, strict=True)):
                self._check_structure(o, n, f"{what}[{i}]")
            return
        native = np.asarray(native)
        assert type(out) is np.ndarray, (
            f"{what}: expected a NumPy array of shape {native.shape}, found "
            f"{type(out).__name__} {out!r:.60}")
        assert out.shape == native.shape, (
            f"{what}: expected shape {native.shape}, found {out.shape}")
        expected_dtype = _FLOAT32 if native.dtype.kind == "f" else native.dtype
        assert out.dtype == expected_dtype, (
            f"{what}: expected dtype {expected_dtype}, found {out.dtype}")

    def check_gradients(self, case: Case) -> None:
        """Proves `flux.back` on the compiled model computes the derivative of the oracle:
        for a random output cotangent Δ, every Param's ``p.grad`` and every returned input
        gradient match central finite differences (float64) of ``Σ Δ · reference``, with the
        Param's and input's shapes and float32 dtype; a second `back` adds to ``p.grad``
        (gradients accumulate); `back` leaves Param values alone."""
        model, params = case.build()
        inputs = case.make_inputs()
        compiled = self.compile(model)
        delta = random_like(case, case.expected(params, inputs))
        before = values(params)

        input_grads = flux.back(compiled, delta, *inputs)
        fd_params, fd_inputs = case.expected_gradients(before, inputs, delta)

        assert isinstance(input_grads, tuple) and len(input_grads) == len(inputs), (
            f"flux.back must return a tuple of {len(inputs)} input gradients, found "
            f"{type(input_grads).__name__} of {len(input_grads)}")
        grad_leaves, input_leaves = leaves(list(input_grads)), leaves(list(inputs))
        assert len(grad_leaves) == len(input_leaves), (
            f"flux.back returned {len(grad_leaves)} input gradient arrays for "
            f"{len(input_leaves)} input arrays")
        for i, (g, x, fd) in enumerate(zip(grad_leaves, input_leaves, leaves(list(fd_inputs)),
                                           strict=True)):
            self._check_gradient(g, x, fd, f"gradient of input leaf {i}")
        first = {}
        for name, p in params.items():
            self._check_gradient(p.grad, p.value, fd_params[name], f"gradient of Param {name!r}")
            first[name] = np.array(p.grad)

        flux.back(compiled, delta, *inputs)
        for name, p in params.items():
            assert_close(p.grad, 2 * first[name], rtol=1e-6, atol=1e-7,
                         what=f"gradient of Param {name!r} after a second back (must accumulate)")
        assert_close(values(params), before, rtol=0, atol=0, what="Params after back")

    def _check_gradient(self, grad, primal, expected, what: str) -> None:
        assert type(grad) is np.ndarray, f"{what}: expected a NumPy array, found {type(grad)}"
        assert grad.shape == np.shape(primal), (
            f"{what}: expected shape {np.shape(primal)}, found {grad.shape}")
        assert grad.dtype == np.asarray(primal).dtype, (
            f"{what}: expected dtype {np.asarray(primal).dtype}, found {grad.dtype}")
        assert_grads_close(grad, expected, rtol=self.grad_rtol, what=what)

    def check_loop(self, case: Case) -> None:
        """Proves a backend that runs loops (``Backend.loops``) runs them as the same function
        as their full unrolling: the outputs and `flux.back`'s gradients of an unrolled model
        compiled with loops (`scan`) and with ``FLUX_LOOPS=unroll`` agree to float32 rounding
        (the other checks compare both with the oracle)."""
        if not getattr(REGISTRY.get(self.backend), "loops", False):
            pytest.skip(f"the {self.backend} backend takes no loops: it always unrolls")
        results = []
        for setting in ("scan", "unroll"):
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("FLUX_LOOPS", setting)
                model, params = case.build()
                inputs = case.make_inputs()
                compiled = self.compile(model)
                out = compiled(*inputs)
                grads = flux.back(compiled, random_like(case, out), *inputs)
                results.append((out, grads, {k: np.array(p.grad) for k, p in params.items()}))
        (out, grads, pgrads), (out0, grads0, pgrads0) = results
        assert_close(out, out0, rtol=1e-5, atol=1e-6, what="the loop's output")
        assert_close(list(grads), list(grads0), rtol=1e-4, atol=1e-6,
                     what="the loop's input gradients")
        for name in pgrads0:
            assert_close(pgrads[name], pgrads0[name], rtol=1e-4, atol=1e-6,
                         what=f"the loop's gradient of Param {name!r}")

    def check_batch(self, case: Case) -> None:
        """Proves single points and batches agree: each point of a batch, given alone (no
        batch axis), gives that row of the batch's output, without the batch axis; a batch of
        one gives a batch of one."""
        model, _ = case.build()
        (x,) = case.make_inputs()
        compiled = self.compile(model)
        batch = compiled(x)
        for i in range(len(x)):
            single = compiled(x[i])
            assert single.shape == batch.shape[1:], (
                f"point {i}: expected shape {batch.shape[1:]}, found {single.shape}")
            assert_close(single, batch[i], rtol=self.rtol, atol=self.atol, what=f"point {i}")
        one = compiled(x[:1])
        assert one.shape == (1,) + batch.shape[1:], (
            f"a batch of one: expected shape {(1,) + batch.shape[1:]}, found {one.shape}")
        assert_close(one[0], batch[0], rtol=self.rtol, atol=self.atol, what="a batch of one")

