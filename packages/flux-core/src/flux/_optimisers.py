"""Optimisers: SGD, Momentum, ADAM. Each computes every update first, then commits them all,
so a step that fails leaves parameters (and optimiser state) as they were."""
from __future__ import annotations

import numbers

import numpy as np

from ._errors import FluxTypeError, FluxValueError

__all__ = ["Optimiser", "SGD", "Momentum", "ADAM", "as_optimiser"]


class Optimiser:
    """Base class: `deltas` computes ``(steps, new_state)`` without changing anything; `apply`
    computes them all, then subtracts each step from its Param in place.

    ``state`` maps ``id(Param)`` to that Param's slots (a tuple starting with the Param). A
    backend that runs the optimiser itself keeps the slots on its side and says so with
    `defer_state` (like `Param.defer`): the state is fetched back (``source.fetch_state(opt)``,
    the whole dict) the next time anyone reads it, so `flux.update`, checkpoints and other
    backends continue from where it left off. `state_version` changes whenever the state may
    have changed, so a backend knows when to load it again.
    """

    _state = None
    _state_source = None
    _state_version = 0

    @property
    def state(self) -> dict:
        if self._state_source is not None:
            source, self._state_source = self._state_source, None
            self._state = source.fetch_state(self)
        if self._state is None:
            self._state = {}
        return self._state

    @state.setter
    def state(self, new: dict) -> None:
        self._state, self._state_source = new, None
        self._state_version += 1

    @property
    def state_version(self) -> int:
        return self._state_version

    def defer_state(self, source) -> int:
        """The newest state now lives in `source`; returns the new `state_version`."""
        self._state_source = source
        self._state_version += 1
        return self._state_version

    def __getstate__(self) -> dict:
        """For copy and pickle: the current state, without the backend that holds it."""
        state = dict(self.__dict__)
        state["_state"], state["_state_source"] = self.state, None    # fetched if deferred
        return state

    def _commit(self, new: dict) -> None:
        """Keep the slots computed by a step (`deltas` returns this as its commit)."""
        self.state.update(new)
        self._state_version += 1

    def deltas(self, params, grads):
        raise NotImplementedError

    def settings(self) -> list:
        """The hyper-parameters, as `repr` shows them (checkpoints compare them)."""
        return []

    def state_arrays(self, names: dict) -> dict:
        """The optimiser's state as ``"<param path>/<slot>" -> array``; `names` maps
        ``id(Param) -> path``. Stateless optimisers have none."""
        return {}

    def load_state_arrays(self, params: dict, arrays: dict) -> None:
        """Restore what `state_arrays` gave; `params` maps paths to Params."""
        if arrays:
            raise FluxValueError(f"{type(self).__name__} keeps no state, but the checkpoint "
                                 f"has {sorted(arrays)[:3]}")

    def apply(self, params, grads) -> None:
        """Update `params` by `grads`: arrays of the Params' shapes, as `back` and training
        steps make them (the `Param.grad` setter refuses other shapes)."""
        steps, commit = self.deltas(params, grads)
        for p, step in zip(params, steps):
            value = p._value
            np.subtract(value, step, out=value, casting="unsafe")
            p._changed()
        commit()


class SGD(Optimiser):
    """Plain gradient descent: p ← p − η ∇p.

    >>> SGD(0.1)
    SGD(0.1)
    """

    def __init__(self, lr: float = 0.1):
        self.lr = lr

    def deltas(self, params, grads):
        lr = self.lr
        return [np.multiply(g, lr, dtype=p.dtype) for p, g in zip(params, grads)], _nothing

    def apply(self, params, grads) -> None:
        """p ← p − η g, scaling each gradient array in place when it is writable (gradients
        handed to an optimiser are consumed: `update` clears them afterwards)."""
        lr = self.lr
        for p, g in zip(params, grads):
            value = p._value
            if g.dtype == value.dtype and g.flags.writeable and g.base is None:
                np.multiply(g, lr, out=g)
            else:
                g = np.multiply(g, lr, dtype=value.dtype)
            np.subtract(value, g, out=value)
            p._changed()

    def settings(self) -> list:
        return [self.lr]

    def __repr__(self) -> str:
        return f"SGD({self.lr})"


class Momentum(Optimiser):
    """Gradient descent with momentum: v ← ρ v + η ∇p, p ← p − v."""

    def __init__(self, lr: float = 0.01, rho: float = 0.9):
        self.lr, self.rho = lr, rho
        self.state = {}

    def deltas(self, params, grads):
        new = {}
        for p, g in zip(params, grads):
            v = _state(self.state, p, (p, 0.0))[1]
            new[id(p)] = (p, self.rho * v + np.multiply(g, self.lr, dtype=p.dtype))
        return [new[id(p)][1] for p in params], lambda: self._commit(new)

    def settings(self) -> list:
        return [self.lr, self.rho]

    def state_arrays(self, names: dict) -> dict:
        return {f"{names[key]}/v": v for key, (_, v) in self.state.items() if key in names}

    def load_state_arrays(self, params: dict, arrays: dict) -> None:
        self.state = {id(params[k.rsplit("/", 1)[0]]): (params[k.rsplit("/", 1)[0]], v)
                      for k, v in arrays.items()}

    def __repr__(self) -> str:
        return f"Momentum({self.lr}, {self.rho})"


class ADAM(Optimiser):
    """Adam (Kingma & Ba): m ← β₁m + (1−β₁)∇, v ← β₂v + (1−β₂)∇², p ← p − η m̂/(√v̂ + ε)
    with the bias-corrected m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.state = {}

    def deltas(self, params, grads):
        b1, b2 = self.beta1, self.beta2
        new, steps = {}, []
        for p, g in zip(params, grads):
            _, m, v, t = _state(self.state, p, (p, 0.0, 0.0, 0))
            t += 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * np.square(g)
            m_hat = m / (1 - b1 ** t)
            v_hat = v / (1 - b2 ** t)
            step = self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
            steps.append(step.astype(p.dtype, copy=False))
            new[id(p)] = (p, m, v, t)
        return steps, lambda: self._commit(new)

    def settings(self) -> list:
        return [self.lr, self.beta1, self.beta2, self.eps]

    def state_arrays(self, names: dict) -> dict:
        out = {}
        for key, (_, m, v, t) in self.state.items():
            if key in names:
                out.update({f"{names[key]}/m": m, f"{names[key]}/v": v,
                            f"{names[key]}/t": np.asarray(t)})
        return out

    def load_state_arrays(self, params: dict, arrays: dict) -> None:
        state = {}
        for path in {k.rsplit("/", 1)[0] for k in arrays}:
            p = params[path]
            state[id(p)] = (p, arrays[f"{path}/m"], arrays[f"{path}/v"],
                            int(arrays[f"{path}/t"]))
        self.state = state

    def __repr__(self) -> str:
        return f"ADAM({self.lr}, {self.beta1}, {self.beta2}, {self.eps})"


def _nothing() -> None:
    return None


def _state(states: dict, p, initial):
    """The optimiser state kept for Param `p`, or `initial` if none (or if `p` changed shape
    since: its old state no longer fits)."""
    state = states.get(id(p))
    if state is None or state[0] is not p or np.shape(state[1]) not in ((), p.shape):
        return initial
    return state


def as_optimiser(opt) -> Optimiser:
    """A number is a plain SGD step with that learning rate."""
    if isinstance(opt, Optimiser):
        return opt
    if isinstance(opt, numbers.Real) and not isinstance(opt, bool):
        return SGD(float(opt))
    raise FluxTypeError(f"expected an optimiser (SGD, Momentum, ADAM) or a learning rate, "
                    f"found {type(opt).__name__}")
