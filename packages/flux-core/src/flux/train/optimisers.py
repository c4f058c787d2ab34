"""Optimisers: SGD, Momentum, ADAM. Each computes every update first, then commits them all,
so a step that fails leaves parameters (and optimiser state) as they were.

Each optimiser's formula is written once, in `rule`, with arithmetic operators only (and the
`sqrt` it is given), so the same code updates NumPy arrays here and builds the update of a
backend's own tensors (flux-tf runs it on TF variables inside its training function)."""
from __future__ import annotations

import math
import numbers

import numpy as np

from flux.errors import FluxTypeError, FluxValueError

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

    slot_names: tuple = ()
    """The names of the state kept per Param (Momentum: ``("v",)``; ADAM: ``("m", "v", "t")``)."""

    clip_norm = None
    """Gradients are scaled together so that their global L2 norm is at most this (as
    PyTorch's ``clip_grad_norm_``: by ``min(1, clip_norm / (norm + 1e-6))``); None: no."""
    clip_value = None
    """Each gradient element is clipped to ``[-clip_value, clip_value]``; None: no."""
    weight_decay = 0.0
    """Decoupled weight decay (AdamW's): the step gains ``lr · weight_decay · p``."""

    def _options(self, clip_norm, clip_value, weight_decay) -> None:
        name = type(self).__name__
        if clip_norm is not None:
            self.clip_norm = hyperparameter(name, "clip_norm", clip_norm, low=0, low_open=True)
        if clip_value is not None:
            self.clip_value = hyperparameter(name, "clip_value", clip_value, low=0,
                                             low_open=True)
        self.weight_decay = hyperparameter(name, "weight_decay", weight_decay, low=0)

    def options(self) -> dict:
        """The options set (not at their defaults), by name: part of `hyper` and `settings`."""
        found = {}
        if self.clip_value is not None:
            found["clip_value"] = self.clip_value
        if self.weight_decay:
            found["weight_decay"] = self.weight_decay
        if self.clip_norm is not None:
            found["clip_norm"] = self.clip_norm
        return found

    @staticmethod
    def clipped(g, h: dict, clip):
        """`g` clipped to ±``h["clip_value"]`` when that option is set."""
        if "clip_value" in h:
            return clip(g, -h["clip_value"], h["clip_value"])
        return g

    @staticmethod
    def decayed(step, h: dict, p):
        """`step` with decoupled weight decay ``lr · weight_decay · p`` when that is set."""
        if "weight_decay" in h:
            return step + h["lr"] * h["weight_decay"] * p
        return step

    @staticmethod
    def norm_scale(norm: float, clip_norm: float) -> float:
        """The factor ``min(1, clip_norm / (norm + 1e-6))`` gradients of global norm `norm`
        are scaled by."""
        return min(1.0, clip_norm / (norm + 1e-6))

    def initial_slots(self) -> tuple:
        """The slots of a Param that has none yet (zeros, broadcast to its shape)."""
        return ()

    def current_slots(self, p) -> tuple:
        """`p`'s slots now (without `p`), or `initial_slots` if it has none that fit it."""
        return _state(self.state, p, (p, *self.initial_slots()))[1:]

    def hyper(self) -> dict:
        """The hyper-parameters `rule` reads, as Python floats by name."""
        return {}

    def rule(self, g, slots: tuple, h: dict, sqrt=np.sqrt, clip=np.clip, p=None):
        """``(step, new_slots)`` for a gradient `g` of the Param `p`: the Param becomes
        ``p - step``. `h` is `hyper()` (or the same values as a backend's scalars), plus for
        ADAM the bias corrections ``c1``, ``c2``; arrays, `sqrt` and `clip` may be NumPy's or
        a backend's. `clip_norm` is applied before (it needs every gradient)."""
        raise NotImplementedError(f"{type(self).__name__} must define rule(g, slots, h) or "
                                  f"deltas(params, grads)")

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
        """``(steps, commit)``: the step of each Param (it becomes ``p - step``) computed by
        `rule`, changing nothing; `commit()` then keeps the new slots."""
        h, new, steps = self.hyper(), {}, []
        for p, g in zip(params, self.scaled(grads)):
            extra = {"p": p._value} if "weight_decay" in h else {}   # (older rules: no p=)
            step, slots = self.rule(g, self.current_slots(p), h, **extra)
            steps.append(np.asarray(step).astype(p.dtype, copy=False))
            if slots:
                new[id(p)] = (p, *slots)
        return steps, (lambda: self._commit(new)) if new else _nothing

    def scaled(self, grads) -> list:
        """`grads`, scaled together to a global norm of at most `clip_norm` (if set)."""
        if self.clip_norm is None:
            return list(grads)
        norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        scale = self.norm_scale(norm, self.clip_norm)
        return [g * g.dtype.type(scale) if scale < 1 else g for g in grads]

    def settings(self) -> list:
        """The hyper-parameters (checkpoints compare them): the positional ones, then the
        options that are set, as ``[name, value]``."""
        return [list(kv) for kv in self.options().items()]

    def _repr_options(self) -> str:
        return "".join(f", {k}={v}" for k, v in self.options().items())

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

    def __init__(self, lr: float = 0.1, *, clip_norm=None, clip_value=None,
                 weight_decay: float = 0.0):
        self.lr = hyperparameter("SGD", "lr", lr, low=0)
        self._options(clip_norm, clip_value, weight_decay)

    def hyper(self) -> dict:
        return {"lr": self.lr, **self.options()}

    def rule(self, g, slots: tuple, h: dict, sqrt=np.sqrt, clip=np.clip, p=None):
        return self.decayed(self.clipped(g, h, clip) * h["lr"], h, p), ()

    def apply(self, params, grads) -> None:
        """p ← p − η g, scaling each gradient array in place when it is writable (gradients
        handed to an optimiser are consumed: `update` clears them afterwards). A subclass that
        overrides `deltas` or `rule` gets the general path, which uses them."""
        if type(self).deltas is not Optimiser.deltas or type(self).rule is not SGD.rule \
                or self.options():
            return super().apply(params, grads)
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
        return [self.lr, *super().settings()]

    def __repr__(self) -> str:
        return f"SGD({self.lr}{self._repr_options()})"


class Momentum(Optimiser):
    """Gradient descent with momentum: v ← ρ v + η ∇p, p ← p − v."""

    def __init__(self, lr: float = 0.01, rho: float = 0.9, *, clip_norm=None, clip_value=None,
                 weight_decay: float = 0.0):
        self.lr = hyperparameter("Momentum", "lr", lr, low=0)
        self.rho = hyperparameter("Momentum", "rho", rho, low=0, high=1)
        self._options(clip_norm, clip_value, weight_decay)
        self.state = {}

    slot_names = ("v",)

    def initial_slots(self) -> tuple:
        return (0.0,)

    def hyper(self) -> dict:
        return {"lr": self.lr, "rho": self.rho, **self.options()}

    def rule(self, g, slots: tuple, h: dict, sqrt=np.sqrt, clip=np.clip, p=None):
        """v ← ρ v + η g; the step is v (plus the decoupled weight decay, if set)."""
        (v,) = slots
        v = h["rho"] * v + self.clipped(g, h, clip) * h["lr"]
        return self.decayed(v, h, p), (v,)

    def settings(self) -> list:
        return [self.lr, self.rho, *super().settings()]

    def state_arrays(self, names: dict) -> dict:
        return {f"{names[key]}/v": v for key, (_, v) in self.state.items() if key in names}

    def load_state_arrays(self, params: dict, arrays: dict) -> None:
        self.state = {id(params[k.rsplit("/", 1)[0]]): (params[k.rsplit("/", 1)[0]], v)
                      for k, v in arrays.items()}

    def __repr__(self) -> str:
        return f"Momentum({self.lr}, {self.rho}{self._repr_options()})"


class ADAM(Optimiser):
    """Adam (Kingma & Ba): m ← β₁m + (1−β₁)∇, v ← β₂v + (1−β₂)∇², p ← p − η m̂/(√v̂ + ε)
    with the bias-corrected m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ)."""

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, *, clip_norm=None, clip_value=None,
                 weight_decay: float = 0.0):
        self.lr = hyperparameter("ADAM", "lr", lr, low=0)
        self.beta1 = hyperparameter("ADAM", "beta1", beta1, low=0, high=1)
        self.beta2 = hyperparameter("ADAM", "beta2", beta2, low=0, high=1)
        self.eps = hyperparameter("ADAM", "eps", eps, low=0, low_open=True)
        self._options(clip_norm, clip_value, weight_decay)
        self.state = {}

    slot_names = ("m", "v", "t")

    def initial_slots(self) -> tuple:
        return (0.0, 0.0, 0)

    def hyper(self) -> dict:
        b1, b2 = self.beta1, self.beta2
        return {"lr": self.lr, "beta1": b1, "beta2": b2, "eps": self.eps,
                "1-beta1": 1 - b1, "1-beta2": 1 - b2, **self.options()}

    @staticmethod
    def bias_corrections(h: dict, t) -> tuple:
        """``(c1, c2) = (1 − β₁ᵗ, 1 − β₂ᵗ)`` for step number `t` (counted from 1)."""
        return 1 - h["beta1"] ** t, 1 - h["beta2"] ** t

    def rule(self, g, slots: tuple, h: dict, sqrt=np.sqrt, clip=np.clip, p=None):
        """m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², step = η m̂/(√v̂ + ε), with m̂ = m/c1 and
        v̂ = v/c2 (`h` holds the bias corrections c1, c2 of this step, and the counter in
        `slots` is the number of steps before it); with weight decay λ (AdamW) the step gains
        η λ p."""
        m, v, t = slots
        g = self.clipped(g, h, clip)
        m = h["beta1"] * m + h["1-beta1"] * g
        v = h["beta2"] * v + h["1-beta2"] * (g * g)
        step = h["lr"] * (m / h["c1"]) / (sqrt(v / h["c2"]) + h["eps"])
        return self.decayed(step, h, p), (m, v, t + 1)

    def deltas(self, params, grads):
        h, new, steps = self.hyper(), {}, []
        for p, g in zip(params, self.scaled(grads)):
            m, v, t = self.current_slots(p)
            h["c1"], h["c2"] = self.bias_corrections(h, t + 1)
            step, slots = self.rule(g, (m, v, t), h, p=p._value)
            steps.append(step.astype(p.dtype, copy=False))
            new[id(p)] = (p, *slots)
        return steps, lambda: self._commit(new)

    def settings(self) -> list:
        return [self.lr, self.beta1, self.beta2, self.eps, *super().settings()]

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
        return f"ADAM({self.lr}, {self.beta1}, {self.beta2}, {self.eps}{self._repr_options()})"


def hyperparameter(opt: str, name: str, value, low=None, high=None, low_open=False) -> float:
    """`value` as a float, checked as PyTorch's optimisers check theirs: a real number (not a
    string, not a bool) with ``low ≤ value < high`` (``low < value`` if `low_open`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise FluxTypeError(f"{opt}: {name} must be a number, found {type(value).__name__} "
                            f"{value!r}")
    value = float(value)
    if not math.isfinite(value) or (low is not None and (value <= low if low_open
                                                          else value < low)) \
            or (high is not None and value >= high):
        bounds = (f"> {low}" if low_open else f"≥ {low}") if high is None else \
            f"in [{low}, {high})"
        raise FluxValueError(f"{opt}: {name} must be {bounds}, found {value!r}")
    return value


def _state(states: dict, p, initial):
    """The optimiser state kept for Param `p`, or `initial` if none (or if `p` changed shape
    since: its old state no longer fits)."""
    state = states.get(id(p))
    if state is None or state[0] is not p or len(state) != len(initial) \
            or np.shape(state[1]) not in ((), p.shape):
        return initial
    return state


def _nothing() -> None:
    """The commit of a step that keeps no state."""


def as_optimiser(opt) -> Optimiser:
    """A number is a plain SGD step with that learning rate."""
    if isinstance(opt, Optimiser):
        return opt
    if isinstance(opt, numbers.Real) and not isinstance(opt, bool):
        return SGD(float(opt))
    raise FluxTypeError(f"expected an optimiser (SGD, Momentum, ADAM) or a learning rate, "
                    f"found {type(opt).__name__}")
