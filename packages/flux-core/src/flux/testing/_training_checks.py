"""The conformance checks about training: `flux.update` writes back, `flux.train` learns,
every optimiser matches NumPy's, and a checkpointed run resumes exactly
(`TrainingChecks`, a base of `BackendConformance`)."""
from __future__ import annotations

import numpy as np
import pytest

import flux

from ._cases import Case
from ._checks import assert_close, finite_differences

__all__ = ["TrainingChecks", "OPTIMISERS", "values", "copy_value", "random_like"]

OPTIMISERS = {"SGD": lambda: flux.SGD(0.1), "Momentum": lambda: flux.Momentum(0.05, 0.9),
              "ADAM": lambda: flux.ADAM(0.01),
              "SGD-clip_value-decay": lambda: flux.SGD(0.1, clip_value=0.05, weight_decay=0.01),
              "Momentum-clip_norm": lambda: flux.Momentum(0.05, 0.9, clip_norm=0.3),
              "AdamW-clip_norm": lambda: flux.ADAM(0.01, weight_decay=0.1, clip_norm=0.5)}
"""The optimisers `check_optimiser` runs, by name (each call makes a fresh one)."""

def values(params: dict) -> dict:
    """Copies of the Params' current values, by name."""
    return {name: np.array(p.peek()) for name, p in params.items()}


def copy_value(value):
    if isinstance(value, (tuple, list)):
        return type(value)(copy_value(v) for v in value)
    return np.array(value, copy=True)


def random_like(case: Case, template, purpose: str = "delta"):
    """Random float32 arrays shaped like `template` (tuples kept): cotangents and targets."""
    rng = case.rng(purpose)
    if isinstance(template, (tuple, list)):
        return type(template)(_random_leaf(rng, t) for t in template)
    return _random_leaf(rng, template)


def _random_leaf(rng, template):
    return np.asarray(rng.standard_normal(np.shape(template)), dtype=np.float32)



class TrainingChecks:
    """The training half of the kit; `BackendConformance` supplies `compile` and the
    tolerances (`rtol`, `atol`, `grad_rtol`)."""

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
        delta = random_like(case, case.expected(params, inputs))

        flux.back(compiled, delta, *inputs)
        grads = {name: np.array(p.grad) for name, p in params.items()}
        before = values(params)
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
        y = random_like(case, case.expected(params, (x,)), "target")
        start = values(params)

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
        seen = [values(params)]
        losses = flux.train(self.compile(model), data, loss=flux.mse, opt=flux.SGD(self.lr),
                            epochs=5, cb=[lambda: seen.append(values(params))])
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
        y = random_like(case, case.expected(params, (x,)), "target")
        delta = random_like(case, y, "delta")
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
        return values(params), losses, opt.state_arrays(names)

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
        y = random_like(case, case.expected(params, (x,)), "target")
        data = [(x, y), (x * 0.5, y), (x, -y), (x * 2, y)]
        flux.train(self.compile(model), data, loss=flux.mse, opt=flux.ADAM(0.01), epochs=2)
        expected = values(params)

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
        for name, value in values(params).items():
            assert_close(value, expected[name], rtol=self.rtol, atol=self.atol,
                         what=f"Param {name!r} after resuming")

    def check_nonfinite_gradient(self, make_opt) -> None:
        """Proves a finite loss with a non-finite gradient stops training before that step's
        update: `flux.train` raises a FluxError saying the gradient is not finite, and no
        Param (nor the optimiser's state) changed. The model is √(xW − xW): its loss against
        ones is 1, its gradient −∞ + ∞ = NaN, on every backend."""
        root = flux.net(lambda W, x: np.sqrt(x @ W - x @ W))

        @flux.net
        class Root:
            W: flux.Param

            def __call__(self, x):
                return root(self.W, x)

        model = Root(np.ones((3, 2), np.float32))
        x, y = np.ones((4, 3), np.float32), np.ones((4, 2), np.float32)
        before = np.array(model.W.value)
        opt = make_opt()
        with pytest.raises(flux.FluxError, match="gradient.*not finite") as info:
            flux.train(self.compile(model), [(x, y)], loss=flux.mse, opt=opt)
        assert "step 1" in str(info.value), str(info.value)
        np.testing.assert_array_equal(model.W.value, before,
                                      err_msg="a Param changed after a non-finite gradient")
        assert not opt.state_arrays({id(model.W): "W"}) or all(
            np.all(np.asarray(v) == 0) for v in opt.state_arrays({id(model.W): "W"}).values()), \
            "the optimiser's state changed after a non-finite gradient"

    def check_dropout(self) -> None:
        """Proves Dropout's randomness crosses the backend as the contract says: in training
        mode each call draws fresh numbers from flux's generator, the backend's are those of
        the NumPy backend after the same `flux.seed` (calls and `back` alike), and test mode
        is the identity."""
        from ._references import init
        model = flux.Chain(flux.Affine(4, 6, init=init), flux.Dropout(0.5))
        x = np.asarray(np.random.default_rng(1).standard_normal((3, 4)), np.float32)
        delta = np.asarray(np.random.default_rng(2).standard_normal((3, 6)), np.float32)
        compiled = self.compile(model)
        flux.trainmode(model)
        flux.seed(5)
        first, second = model(x), model(x)
        flux.seed(5)
        assert_close(compiled(x), first, rtol=self.rtol, atol=self.atol, what="a masked call")
        assert_close(compiled(x), second, rtol=self.rtol, atol=self.atol, what="the next call")
        assert not np.array_equal(first, second), "two training calls drew the same mask"
        assert np.mean(first == 0) > 0.2, "Dropout(0.5) zeroed almost nothing"
        flux.testmode(model, None)
        flux.seed(9)
        (want,) = flux.back(model, delta, x)
        flux.seed(9)
        (got,) = flux.back(compiled, delta, x)
        assert_close(got, want, rtol=self.rtol, atol=self.atol, what="back's input gradient")
        assert_close(compiled(x), model.layers[0](x), rtol=self.rtol, atol=self.atol,
                     what="an ordinary call (test mode: no dropout)")

    def check_batchnorm_statistics(self) -> None:
        """Proves BatchNorm's running statistics are updated by training steps through the
        backend exactly as on the NumPy backend, written back to the layer (shared by compiled
        copies), and used by ordinary calls."""
        from ._references import init

        def make():
            flux.seed(3)
            return flux.Chain(flux.Affine(4, 3, init=init), flux.BatchNorm(3, momentum=0.3))

        rng = np.random.default_rng(4)
        data = [(np.asarray(rng.standard_normal((6, 4)), np.float32),
                 np.asarray(rng.standard_normal((6, 3)), np.float32)) for _ in range(3)]
        ours, reference = make(), make()
        flux.train(self.compile(ours), data, loss=flux.mse, opt=flux.SGD(0.05), epochs=2)
        flux.train(reference, data, loss=flux.mse, opt=flux.SGD(0.05), epochs=2)
        for name in ("mean", "var"):
            got, want = getattr(ours.layers[1], name).value, getattr(reference.layers[1], name)
            assert_close(got, want.value, rtol=self.rtol, atol=self.atol,
                         what=f"the running {name} after training")
        assert not np.allclose(ours.layers[1].mean.value, 0), "the running mean never moved"
        x = data[0][0]
        assert_close(self.compile(ours)(x), reference(x), rtol=self.rtol, atol=self.atol,
                     what="a test-mode call with the running statistics")
