"""`BackendConformance`: the conformance checks, as a pytest class backends subclass.

Each ``test_*`` method is parametrised over a case table and calls a ``check_*`` method;
subclasses may override `compile` (how a model is compiled), the tolerances, or call the
``check_*`` methods on cases of their own.
"""
from __future__ import annotations

import numpy as np
import pytest

import flux
from flux.backends import KNOWN_BACKENDS
from flux.ir import primitives as _primitives

from ._cases import CASES, Case
from ._checks import (ATOL, GRAD_RTOL, RTOL, assert_close, assert_grads_close,
                      finite_differences, leaves)
from ._primitive_cases import PRIMITIVE_CASES

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
OPTIMISERS = {"SGD": lambda: flux.SGD(0.1), "Momentum": lambda: flux.Momentum(0.05, 0.9),
              "ADAM": lambda: flux.ADAM(0.01)}
"""The optimisers `check_optimiser` runs, by name (each call makes a fresh one)."""
_FLOAT32 = np.dtype(np.float32)


def _values(params: dict) -> dict:
    """Copies of the Params' current values, by name."""
    return {name: np.array(p.peek()) for name, p in params.items()}


def _copy(value):
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v) for v in value)
    return np.array(value, copy=True)


def _random_like(case: Case, template, purpose: str = "delta"):
    """Random float32 arrays shaped like `template` (tuples kept): cotangents and targets."""
    rng = case.rng(purpose)
    if isinstance(template, (tuple, list)):
        return type(template)(_random_leaf(rng, t) for t in template)
    return _random_leaf(rng, template)


def _random_leaf(rng, template):
    return np.asarray(rng.standard_normal(np.shape(template)), dtype=np.float32)


class BackendConformance:
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

    def test_checkpoint_and_resume(self, tmp_path):
        self.check_resume(next(c for c in CASES if c.name == "chain_relu_tanh_logsoftmax"),
                          tmp_path)

    @pytest.mark.parametrize("case", _BATCHED, ids=_ids(_BATCHED))
    def test_batch_matches_single_points(self, case: Case):
        self.check_batch(case)

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
        from flux.backends import vjp
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
        inputs_before, params_before = _copy(inputs), _values(params)
        compiled = self.compile(model)

        out = compiled(*inputs)
        self._check_output(case, out, params, inputs)
        first = _copy(out)
        self._check_output(case, compiled(*others), params, others)
        for i, (a, b) in enumerate(zip(leaves(out), leaves(first), strict=True)):
            assert np.array_equal(a, b, equal_nan=True), (
                f"output {i} of the first call changed during a later call: the backend "
                f"returned a buffer it reuses")
        assert_close(compiled(*inputs), first, rtol=self.rtol, atol=self.atol,
                     what="the output of a repeated call")
        assert_close(inputs, inputs_before, rtol=0, atol=0, what="inputs after the call")
        assert_close(_values(params), params_before, rtol=0, atol=0, what="Params after the call")

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
        delta = _random_like(case, case.expected(params, inputs))
        before = _values(params)

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
        assert_close(_values(params), before, rtol=0, atol=0, what="Params after back")

    def _check_gradient(self, grad, primal, expected, what: str) -> None:
        assert type(grad) is np.ndarray, f"{what}: expected a NumPy array, found {type(grad)}"
        assert grad.shape == np.shape(primal), (
            f"{what}: expected shape {np.shape(primal)}, found {grad.shape}")
        assert grad.dtype == np.asarray(primal).dtype, (
            f"{what}: expected dtype {np.asarray(primal).dtype}, found {grad.dtype}")
        assert_grads_close(grad, expected, rtol=self.grad_rtol, what=what)

    def check_update(self, case: Case) -> None:
        """Proves Parameters are shared, not copied: after `flux.back` and
        ``flux.update(compiled, lr)`` the ORIGINAL model's Params moved by exactly
        ``-lr * grad`` and their gradients are cleared; then a Param given a new array
        (``p.value = ...``) and one written in place (``p.value[...] = ...``) are each seen by
        the compiled model's next call."""
        model, params = case.build()
        assert params, f"case {case.name!r} has no Params to update"
        inputs = case.make_inputs()
        compiled = self.compile(model)
        compiled(*inputs)                      # a cached plan must not hold stale values
        delta = _random_like(case, case.expected(params, inputs))

        flux.back(compiled, delta, *inputs)
        grads = {name: np.array(p.grad) for name, p in params.items()}
        before = _values(params)
        assert any(np.any(g != 0) for g in grads.values()), "all gradients are zero"
        flux.update(compiled, self.lr)
        for name, p in params.items():
            expected = before[name] - np.multiply(grads[name], self.lr, dtype=p.dtype)
            assert_close(p.value, expected, rtol=1e-6, atol=1e-7,
                         what=f"Param {name!r} after update({self.lr})")
            assert not np.any(p.grad), f"the gradient of Param {name!r} was not cleared"

        for name, p in params.items():
            p.value = -0.5 * before[name] + 0.25
        self._check_output(case, compiled(*inputs), params, inputs)
        for name, p in params.items():
            p.value[...] = 1.5 * before[name]
        self._check_output(case, compiled(*inputs), params, inputs)

    def check_train(self, case: Case) -> None:
        """Proves `flux.train` trains through the backend, against the oracle: one SGD step on
        one pair returns ``[mse(reference(x), y)]`` and moves each ORIGINAL Param by
        ``-lr ∇mse`` (finite differences); over five epochs of a batch and a single point it
        calls the callback after every update and returns each epoch's mean of the losses
        before each update (recomputed by the oracle from the Params seen by the callback),
        and they decrease."""
        model, params = case.build()
        (x,) = case.make_inputs()
        y = _random_like(case, case.expected(params, (x,)), "target")
        start = _values(params)

        def loss(values: dict, x, y) -> float:
            out = case.expected(values, (x,), np.float64)
            return float(np.mean((out - y) ** 2))

        losses = flux.train(self.compile(model), [(x, y)], loss=flux.mse, opt=flux.SGD(self.lr))
        assert isinstance(losses, list) and len(losses) == 1, (
            f"flux.train with epochs=1 must return a list of one loss, found {losses!r}")
        assert_close(losses[0], loss(start, x, y), rtol=self.rtol, atol=self.atol,
                     what="the loss before the first step")
        names = list(start)
        grads = finite_differences(lambda *v: loss(dict(zip(names, v, strict=True)), x, y),
                                   *start.values())
        for (name, p), grad in zip(params.items(), grads, strict=True):
            scale = float(np.max(np.abs(grad)))
            assert_close(p.value, start[name] - self.lr * grad, rtol=4 * np.finfo(p.dtype).eps,
                         atol=abs(self.lr) * self.grad_rtol * scale + 1e-7,
                         what=f"Param {name!r} after one SGD step")

        model, params = case.build()
        data = [(x, y), (x[0], y[0])] if case.batched else [(x, y)]
        seen = [_values(params)]
        losses = flux.train(self.compile(model), data, loss=flux.mse, opt=flux.SGD(self.lr),
                            epochs=5, cb=[lambda: seen.append(_values(params))])
        assert len(seen) == 1 + 5 * len(data), (
            f"the callback ran {len(seen) - 1} times for {5 * len(data)} updates")
        before = iter(seen)
        expected = [np.mean([loss(next(before), *pair) for pair in data]) for _ in range(5)]
        assert isinstance(losses, list) and len(losses) == 5, (
            f"flux.train with epochs=5 must return a list of 5 losses, found {losses!r}")
        assert_close(losses, expected, rtol=self.rtol, atol=self.atol,
                     what="per-epoch mean losses")
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), (
            f"the loss did not decrease at every epoch: {losses}")

    def _optimiser_run(self, case: Case, make_opt, compile) -> tuple:
        """One fixed sequence of training through `compile`: returns the Params' values, the
        losses and the optimiser's state arrays at the end."""
        model, params = case.build()
        (x,) = case.make_inputs()
        y = _random_like(case, case.expected(params, (x,)), "target")
        delta = _random_like(case, y, "delta")
        opt = make_opt()
        compiled = compile(model)
        losses = flux.train(compiled, [(x, y)] * 3, loss=flux.mse, opt=opt)
        flux.back(compiled, delta, x)                       # an update from flux.update
        flux.update(compiled, opt)
        flux.back(model, delta, x)                          # one on the NumPy side
        flux.update(model, opt)
        first, *rest = params.values()
        first.value = first.value * 0.5                     # the user changes Params
        for p in rest[:1]:
            p.value[...] += 0.125
        losses += flux.train(compiled, [(x, y)] * 2, loss=flux.mse, opt=opt, epochs=2)
        names = {id(p): name for name, p in params.items()}
        return _values(params), losses, opt.state_arrays(names)

    def check_optimiser(self, case: Case, make_opt) -> None:
        """Proves the backend trains with flux's optimisers exactly as the NumPy backend does
        (the same formulas, step counts and state): three `flux.train` steps, a `flux.back` +
        `flux.update` on the compiled model and one on the uncompiled model (NumPy, with the
        same optimiser object), a Param assigned and one written in place by the user, then
        two epochs of two steps give the same losses, Params and optimiser state
        (``opt.state_arrays``) as the same sequence on the NumPy backend."""
        got = self._optimiser_run(case, make_opt, self.compile)
        want = self._optimiser_run(case, make_opt, lambda m: flux.compile(m, "numpy"))
        tolerance = {"rtol": 10 * self.rtol, "atol": 10 * self.atol}
        assert_close(got[1], want[1], what="the losses", **tolerance)
        for name in want[0]:
            assert_close(got[0][name], want[0][name], what=f"Param {name!r}", **tolerance)
        assert sorted(got[2]) == sorted(want[2]), (
            f"optimiser state: expected the slots {sorted(want[2])}, found {sorted(got[2])}")
        for key in want[2]:
            assert_close(np.asarray(got[2][key], np.float64), np.asarray(want[2][key], np.float64),
                         what=f"optimiser state {key!r}", **tolerance)

    def check_resume(self, case: Case, tmp_path) -> None:
        """Proves checkpoints capture the backend's training state: a run with ADAM
        interrupted after 5 of 8 updates (checkpoint every update) and resumed in a fresh
        model ends with the Params of the uninterrupted run."""
        (x,) = case.make_inputs()
        model, params = case.build()
        y = _random_like(case, case.expected(params, (x,)), "target")
        data = [(x, y), (x * 0.5, y), (x, -y), (x * 2, y)]
        flux.train(self.compile(model), data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=2)
        expected = _values(params)

        class Interrupted(Exception):
            pass

        done = []

        def stop_after_five():
            done.append(1)
            if len(done) == 5:
                raise Interrupted

        path = tmp_path / "checkpoint.npz"
        model, _ = case.build()
        with pytest.raises(Interrupted):
            flux.train(self.compile(model), data, loss=flux.mse, opt=flux.ADAM(0.01),
                       epochs=2, cb=stop_after_five, checkpoint=path, every=1)
        model, params = case.build()
        for p in params.values():
            p.value = p.value + 1                       # overwritten by the checkpoint
        flux.train(self.compile(model), data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=2,
                   resume=path)
        for name, value in _values(params).items():
            assert_close(value, expected[name], rtol=self.rtol, atol=self.atol,
                         what=f"Param {name!r} after resuming")

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
