"""Shared test oracles (plain NumPy), source-line helpers and installation facts for the core
suites."""
import importlib.metadata
import inspect
import os
import re

import numpy as np

from flux import Affine

AFFINE_FILE = os.path.abspath(inspect.getsourcefile(Affine))


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_logsoftmax(x):
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def line_of(marker, path):
    """The line of `path` holding the comment ``# <marker>``."""
    with open(path, encoding="utf-8") as f:
        hits = [n for n, text in enumerate(f, 1) if text.rstrip().endswith("# " + marker)]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def line_containing(path, snippet: str) -> int:
    """The one line of `path` that contains `snippet`."""
    with open(path, encoding="utf-8") as f:
        hits = [n for n, text in enumerate(f, 1) if snippet in text]
    assert len(hits) == 1, (path, snippet, hits)
    return hits[0]


def affine_line():
    """The line of Affine's forward, ``x @ self.W + self.b``."""
    return line_containing(AFFINE_FILE, "return x @ self.W + self.b")


# -- recurrence oracles: each cell's equations as a NumPy loop, and finite differences ---------


def np_params(model):
    """The model's Params as float64 arrays, keyed by their paths (``flux.params``)."""
    import flux
    return {k: np.array(p.value, dtype=np.float64) for k, p in flux.params(model).items()}


def under(p, prefix):
    """The entries of `p` below `prefix` (``"layers.2"``), with the prefix dropped."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in p.items() if k.startswith(start)}


def rnn_cell(p, x, y):
    """Recurrent: y = tanh(x Wxy + y₋₁ Wyy + by); returns the new states ``(y,)``."""
    return (np.tanh(x @ p["Wxy"] + y @ p["Wyy"] + p["by"]),)


def gru_cell(p, x, y):
    """GRU: r, u gates; y′ = tanh(x Wxh + (r ⊙ y₋₁) Wyh + bh); y = (1 − u) ⊙ y′ + u ⊙ y₋₁."""
    r = np_sigmoid(x @ p["Wxr"] + y @ p["Wyr"] + p["br"])
    u = np_sigmoid(x @ p["Wxu"] + y @ p["Wyu"] + p["bu"])
    candidate = np.tanh(x @ p["Wxh"] + (r * y) @ p["Wyh"] + p["bh"])
    return ((1 - u) * candidate + u * y,)


def lstm_cell(p, x, y, state):
    """LSTM as in the seed; returns the new states ``(y, state)``."""
    forget = np_sigmoid(x @ p["Wxf"] + y @ p["Wyf"] + p["bf"])
    input = np_sigmoid(x @ p["Wxi"] + y @ p["Wyi"] + p["bi"])
    output = np_sigmoid(x @ p["Wxo"] + y @ p["Wyo"] + p["bo"])
    state_ = np.tanh(x @ p["Wxc"] + y @ p["Wyc"] + p["bc"])
    state = forget * state + input * state_
    return (output * np.tanh(state), state)


def np_unroll(cell, p, xs, states):
    """Run `cell` over the time axis of `xs` (``(n, in)``, or ``(batch, n, in)``) from the
    initial `states` (broadcast by NumPy); the output of a step is its first state.

    Returns ``(outputs, final_states)``, outputs stacked along the time axis."""
    xs = np.asarray(xs, dtype=np.float64)
    axis = 1 if xs.ndim == 3 else 0
    states = tuple(np.asarray(s, dtype=np.float64) for s in states)
    outputs = []
    for t in range(xs.shape[axis]):
        states = cell(p, np.take(xs, t, axis=axis), *states)
        outputs.append(states[0])
    return np.stack(outputs, axis=axis), states


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar `f()` with respect to the float64 array `x`,
    which `f` reads (it is perturbed in place and restored)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


def assert_grad_close(got, want, rtol=1e-2, name=""):
    """`got` (flux's float32 gradient) within `rtol` of the largest entry of `want`."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = max(np.abs(want).max(), 1e-8)
    err = np.abs(got - want).max()
    assert err <= rtol * scale, f"{name}: max error {err:.3g}, max gradient {scale:.3g}"


def randomize(model, seed=0, scale=0.5):
    """Give every Param of `model` standard normal values × `scale` (initn's ~0.01 weights make
    a recurrence nearly linear, which hides mistakes); returns `model`."""
    import flux
    r = np.random.default_rng(seed)
    for p in flux.params(model).values():
        p.value = (scale * r.standard_normal(p.shape)).astype(np.float32)
    return model


def check_back(model, x, oracle, seed=1):
    """`model(x)` and `flux.back(model, Δ, x)` (a stateless `model`: both calls start from the
    same state) against `oracle(p, x)`, the same computation in
    float64 NumPy (`p` = ``np_params(model)``): values, then the input gradient and every
    Param's gradient against central finite differences of ``sum(Δ ⊙ oracle(p, x))``."""
    import flux
    p, x64 = np_params(model), np.array(x, dtype=np.float64)
    want = oracle(p, x64)
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-5)
    Δ = np.random.default_rng(seed).standard_normal(want.shape)
    for q in flux.params(model).values():
        q.zero_grad()
    (dx,) = flux.back(model, Δ.astype(np.float32), x)

    def loss():
        return np.sum(Δ * oracle(p, x64))

    assert_grad_close(dx, fd_grad(loss, x64), name="input")
    for key, q in flux.params(model).items():
        assert_grad_close(q.grad, fd_grad(loss, p[key]), name=key)


def version_of(distribution: str) -> tuple[int, ...]:
    """The installed version's leading numbers, ``(0,)`` if it is not installed."""
    try:
        version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in re.findall(r"\d+", version)[:2])


def both_ways(monkeypatch, make, run):
    """``run(make())`` with loops (``FLUX_LOOPS=scan``), then with full unrolling
    (``FLUX_LOOPS=unroll``): the same seed, fresh models; returns the two results."""
    import flux
    results = []
    for mode in ("scan", "unroll"):
        monkeypatch.setenv("FLUX_LOOPS", mode)
        flux.seed(3)
        results.append(run(make()))
    return results


def nested_loops():
    """The conformance kit's ``unrolled_nested`` model (a loop inside each step of a loop,
    freshly built and seeded) and an input for it."""
    from flux.testing import CASES
    case = next(c for c in CASES if c.name == "unrolled_nested")
    return case.build()[0], case.make_inputs()[0]
