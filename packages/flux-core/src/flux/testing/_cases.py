"""The model-level case table `CASES`: models, their inputs, and hand-written NumPy oracles.

A `Case` builds a fresh model (after ``flux.seed(0)``), draws its inputs from a generator
seeded by the case's name, and has a `reference`: plain NumPy code computing the expected
output from the model's parameter VALUES. References never run flux (no traced graph, no
flux function), so they are an independent oracle; they are written with NumPy operations
that keep their input dtype, so the same code gives the float32 answer (whose dtype the model
must match) and the float64 one (which values and finite differences are taken from).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

import flux
from flux import Affine, Chain, net

from . import _layer_models as L
from . import _loop_models as M
from ._checks import finite_differences, leaves
from ._references import (affine, init, logsoftmax, normals, positives, randn,
                          relu, sigmoid, softmax)

__all__ = ["Case", "CASES", "fn"]


@dataclass(frozen=True)
class Case:
    """One conformance case.

    - `model()` returns a fresh model, or ``(model, params)`` when the model uses Params that
      `flux.params` cannot see (a closure); `params` maps names to those Params.
    - `inputs(rng)` returns the tuple of positional inputs (arrays, or tuples of arrays).
    - `reference(p, *inputs)` is the oracle: `p` maps the same names to plain arrays.
    - `has_params`: the model has Params (checked, so the flag cannot silently be wrong).
    - `differentiable`: gradients are checked (False for boolean outputs).
    - `constant_inputs`: positions of inputs the model deliberately does not differentiate
      (e.g. through ``stop_gradient``): their expected gradient is zero, not the oracle's.
    - `batched`: one input whose first axis is a batch of independent points.
    - `trainable`: one input, one float output, Params: `flux.train` on it must reduce `mse`.
    """

    name: str
    model: Callable[[], Any]
    inputs: Callable[[np.random.Generator], tuple]
    reference: Callable[..., Any]
    has_params: bool = True
    differentiable: bool = True
    constant_inputs: tuple = ()
    batched: bool = False
    trainable: bool = False

    def __repr__(self) -> str:
        return f"Case({self.name!r})"

    def build(self) -> tuple:
        """``(model, params)``: a fresh model (seeded) and its Params by name."""
        flux.seed(0)
        built = self.model()
        if isinstance(built, tuple):
            return built
        return built, flux.params(built)

    def rng(self, purpose: str = "inputs") -> np.random.Generator:
        """A generator seeded by the case name and `purpose`: the same draws on every run."""
        return np.random.default_rng(zlib.crc32(f"{self.name}/{purpose}".encode()))

    def make_inputs(self) -> tuple:
        return tuple(self.inputs(self.rng()))

    def expected(self, params: dict, inputs: tuple, dtype=None):
        """The oracle's output for these Params (or arrays) and inputs; with `dtype`, every
        float array is first cast to it (float64 for accurate values)."""
        values = {k: _cast(np.asarray(v), dtype) for k, v in params.items()}
        return self.reference(values, *_map_leaves(lambda x: _cast(x, dtype), inputs))

    def expected_gradients(self, params: dict, inputs: tuple, delta) -> tuple:
        """Finite-difference gradients, in float64, of ``Σ delta · reference(params, inputs)``:
        ``(dict of param gradients, input gradients shaped like inputs)``."""
        keys = list(params)
        in_leaves = leaves(list(inputs))
        deltas = [np.asarray(d, np.float64) for d in leaves(delta)]

        def objective(*arrays):
            p = dict(zip(keys, arrays[:len(keys)], strict=True))
            xs = _rebuild(inputs, list(arrays[len(keys):]))
            outs = leaves(self.reference(p, *xs))
            return sum(float(np.sum(d * o)) for d, o in zip(deltas, outs, strict=True))

        grads = finite_differences(objective, *(np.asarray(params[k]) for k in keys), *in_leaves)
        input_grads = grads[len(keys):]
        for i in self.constant_inputs:
            for j in _leaf_positions(inputs, i):
                input_grads[j] = np.zeros_like(input_grads[j])
        return dict(zip(keys, grads[:len(keys)], strict=True)), _rebuild(inputs, input_grads)


def _cast(x, dtype):
    x = np.asarray(x)
    return x.astype(dtype) if dtype is not None and x.dtype.kind == "f" else x


def _map_leaves(f, value):
    if isinstance(value, (tuple, list)):
        return type(value)(_map_leaves(f, v) for v in value)
    return f(value)


def _rebuild(structure, flat: list):
    """`structure` (nested tuples/lists) with its leaves replaced, in order, from `flat`."""
    it = iter(flat)
    return _map_leaves(lambda _: next(it), structure)


def _leaf_positions(inputs: tuple, i: int) -> range:
    start = sum(len(leaves(x)) for x in inputs[:i])
    return range(start, start + len(leaves(inputs[i])))


def fn(name: str, f: Callable, inputs: Callable, reference: Callable, **flags) -> Case:
    """A case for a parameterless model ``net(f)``; `reference(*inputs)` takes no params."""
    return Case(name, lambda: net(f), inputs, lambda p, *xs: reference(*xs),
                has_params=False, **flags)


# -- models ----------------------------------------------------------------------------------------


@net
class TLP:
    """The seed's two-layer perceptron: sub-models as plain fields."""

    first: object
    second: object

    def __call__(self, x):
        l1 = flux.σ(self.first(x))
        l2 = flux.softmax(self.second(l1))
        return l2


@net
class NumpyMLP:
    """A model written in plain NumPy: h = tanh(x W1 + b1), y = max(h, h/10) W2."""

    W1: flux.Param
    b1: flux.Param
    W2: flux.Param

    def __call__(self, x):
        h = np.tanh(np.dot(x, self.W1) + self.b1)            # (N, hidden)
        return np.matmul(np.maximum(h, 0.1 * h), self.W2)    # (N, out)


@net
class MeanSquare:
    """One number out: mean((x W - 1)²)."""

    W: flux.Param

    def __call__(self, x):
        return np.mean((x @ self.W - 1) ** 2)


def _closure_model():
    W = flux.param(init(5, 3))
    return net(lambda x: np.tanh(x @ W)), {"W": W}


def _shared_model():
    W = flux.param(init(4, 4))
    return Chain(Affine(W, init(4)), flux.tanh, Affine(W, init(4)))


@net
class BiRecurrent:
    """A bidirectional layer: a Recurrent forwards in time beside a flipped one."""

    forward: object
    backward: object

    def __call__(self, x):
        return flux.hcat(self.forward(x), self.backward(x))


def _run_recurrent(p, prefix, xs, reverse=False):
    """y_t = tanh(x_t Wxy + y_{t-1} Wyy + by) over the time axis (-2) of `xs`."""
    steps = range(xs.shape[-2])
    order = list(reversed(steps)) if reverse else list(steps)
    y = np.zeros(xs.shape[:-2] + (p[prefix + "Wyy"].shape[0],), xs.dtype)
    out = [None] * len(order)
    for t in order:
        y = np.tanh(xs[..., t, :] @ p[prefix + "Wxy"] + y @ p[prefix + "Wyy"] + p[prefix + "by"])
        out[t] = y
    return np.stack(out, axis=-2)


def _lstm_reference(p, xs):
    n_out = p["model.Wyf"].shape[0]
    y = np.zeros(xs.shape[:-2] + (n_out,), xs.dtype)
    c = np.zeros_like(y)
    out = []
    for t in range(xs.shape[-2]):
        x = xs[..., t, :]

        def gate(g, f, x=x, y=y):
            return f(x @ p[f"model.Wx{g}"] + y @ p[f"model.Wy{g}"] + p[f"model.b{g}"])
        forget, input, output = gate("f", sigmoid), gate("i", sigmoid), gate("o", sigmoid)
        c = forget * c + input * gate("c", np.tanh)
        y = output * np.tanh(c)
        out.append(y)
    return np.stack(out, axis=-2)


def _gru_reference(p, xs):
    y = np.zeros(xs.shape[:-2] + (p["model.Wyr"].shape[0],), xs.dtype)
    out = []
    for t in range(xs.shape[-2]):
        x = xs[..., t, :]
        r = sigmoid(x @ p["model.Wxr"] + y @ p["model.Wyr"] + p["model.br"])
        u = sigmoid(x @ p["model.Wxu"] + y @ p["model.Wyu"] + p["model.bu"])
        h = np.tanh(x @ p["model.Wxh"] + (r * y) @ p["model.Wyh"] + p["model.bh"])
        y = (1 - u) * h + u * y
        out.append(y)
    return np.stack(out, axis=-2)


def _tlp_reference(p, x):
    return softmax(affine(p, "second.", sigmoid(affine(p, "first.", x))))


def _numpy_mlp_reference(p, x):
    h = np.tanh(x @ p["W1"] + p["b1"])
    return np.maximum(h, 0.1 * h) @ p["W2"]


CASES = [
    # images, text, normalisation
    Case("cnn", L.cnn, normals((2, 6, 6, 2)), L.cnn_reference, trainable=True),
    Case("embedding_layernorm", lambda: Chain(flux.Embedding(7, 4, init=init),
                                              flux.LayerNorm(4)), L.tokens,
         lambda p, i: L.layernorm(p["layers.0.W"][np.rint(i).astype(int)], p["layers.1.γ"],
                                 p["layers.1.β"]), constant_inputs=(0,)),
    Case("batchnorm_test", L.batchnorm("test"), normals((5, 4)), L.batchnorm_reference("test"),
         batched=True, trainable=True),
    Case("batchnorm_train", L.batchnorm("train"), normals((5, 4)),
         L.batchnorm_reference("train"), trainable=True),
    # layers and Chains
    Case("affine_batch", lambda: Affine(5, 3, init=init), normals((4, 5)),
         lambda p, x: affine(p, "", x), batched=True, trainable=True),
    Case("affine_single_point", lambda: Affine(5, 3, init=init), normals((5,)),
         lambda p, x: affine(p, "", x)),
    Case("chain_sigmoid_softmax",
         lambda: Chain(Affine(5, 5, init=init), flux.σ, Affine(5, 5, init=init), flux.softmax),
         normals((4, 5)),
         lambda p, x: softmax(affine(p, "layers.2.", sigmoid(affine(p, "layers.0.", x)))),
         batched=True, trainable=True),
    Case("chain_relu_tanh_logsoftmax",
         lambda: Chain(Affine(5, 4, init=init), flux.relu, Affine(4, 4, init=init), flux.tanh,
                       Affine(4, 3, init=init), flux.logsoftmax),
         normals((4, 5)),
         lambda p, x: logsoftmax(affine(p, "layers.4.", np.tanh(
             affine(p, "layers.2.", relu(affine(p, "layers.0.", x)))))),
         batched=True, trainable=True),
    Case("net_class_with_submodels", lambda: TLP(Affine(6, 8, init=init), Affine(8, 4, init=init)),
         normals((3, 6)), _tlp_reference, batched=True, trainable=True),
    Case("net_class_single_point",
         lambda: TLP(Affine(6, 8, init=init), Affine(8, 4, init=init)),
         normals((6,)), _tlp_reference),
    Case("net_class_in_numpy", lambda: NumpyMLP(init(5, 6), init(6), init(6, 2)),
         normals((4, 5)), _numpy_mlp_reference, batched=True, trainable=True),
    Case("chain_of_numpy_functions", lambda: Chain(np.exp, np.sum, np.log), normals((3,)),
         lambda p, x: np.log(np.sum(np.exp(x))), has_params=False),
    Case("zero_d_output", lambda: MeanSquare(init(5, 2)), normals((4, 5)),
         lambda p, x: np.mean((x @ p["W"] - 1) ** 2)),
    Case("closure_over_param", _closure_model, normals((4, 5)),
         lambda p, x: np.tanh(x @ p["W"]), batched=True, trainable=True),
    Case("shared_param", _shared_model, normals((3, 4)),
         lambda p, x: np.tanh(x @ p["layers.0.W"] + p["layers.0.b"]) @ p["layers.0.W"]
         + p["layers.2.b"], batched=True, trainable=True),
    # anonymous models: several inputs, tuples in and out
    fn("anonymous_several_inputs", lambda W, b, x: flux.softmax(x @ W + b),
       normals((5, 3), (3,), (4, 5)), lambda W, b, x: softmax(x @ W + b)),
    Case("tuple_in_tuple_out", lambda: net(lambda xs: tuple(map(lambda x: x * x, xs))),
         lambda rng: ((randn(rng, 3, 2), randn(rng, 4)),),
         lambda p, xs: tuple(x * x for x in xs), has_params=False),
    # the contract's activations and array functions
    fn("fn_sigmoid", lambda x: flux.σ(x), lambda rng: (3 * randn(rng, 3, 4),), sigmoid,
       batched=True),
    fn("fn_relu", lambda x: flux.relu(x), normals((3, 4)), relu, batched=True),
    fn("fn_tanh", lambda x: flux.tanh(x), normals((3, 4)), np.tanh, batched=True),
    fn("fn_softmax", lambda x: flux.softmax(x), normals((3, 4)), softmax, batched=True),
    fn("fn_logsoftmax", lambda x: flux.logsoftmax(x), normals((3, 4)), logsoftmax,
       batched=True),
    fn("fn_exp", lambda x: flux.exp(x), normals((3, 4)), np.exp),
    fn("fn_log", lambda x: flux.log(x), positives((3, 4)), np.log),
    fn("fn_flatten", lambda x: flux.flatten(x), normals((2, 3, 4)),
       lambda x: x.reshape(x.shape[0], -1)),
    fn("fn_hcat", lambda x, y, z: flux.hcat(x, y, z), normals((2, 3), (2, 2), (2, 1)),
       lambda x, y, z: np.concatenate([x, y, z], axis=-1)),
    fn("fn_vcat", lambda x, y: flux.vcat(x, y), normals((2, 3), (1, 3)),
       lambda x, y: np.concatenate([x, y], axis=0)),
    fn("fn_sum", lambda x: flux.sum(x, axis=1), normals((3, 4)), lambda x: x.sum(axis=1)),
    fn("fn_sum_all", lambda x: flux.sum(x), normals((3, 4)), lambda x: x.sum()),
    fn("fn_mean", lambda x: flux.mean(x, axis=0, keepdims=True), normals((3, 4)),
       lambda x: x.mean(axis=0, keepdims=True)),
    fn("fn_reshape", lambda x: flux.reshape(x, (3, -1)), normals((2, 6)),
       lambda x: x.reshape(3, 4)),
    fn("fn_transpose", lambda x: flux.transpose(x, (2, 0, 1)), normals((2, 3, 4)),
       lambda x: x.transpose(2, 0, 1)),
    # NumPy functions, methods and operators inside models
    fn("np_exp", lambda x: np.exp(x), normals((3, 4)), np.exp),
    fn("np_tanh", lambda x: np.tanh(x), normals((3, 4)), np.tanh),
    fn("np_sum_axis_keepdims", lambda x: np.sum(x, axis=-1, keepdims=True), normals((3, 4)),
       lambda x: x.sum(axis=-1, keepdims=True)),
    fn("np_sum_method", lambda x: x.sum(axis=0), normals((3, 4)), lambda x: x.sum(axis=0)),
    fn("np_mean_axes", lambda x: np.mean(x, axis=(0, 2)), normals((2, 3, 4)),
       lambda x: x.mean(axis=(0, 2))),
    fn("np_dot_matrix", lambda x, W: np.dot(x, W), normals((3, 4), (4, 2)), lambda x, W: x @ W),
    fn("np_dot_vectors", lambda u, v: np.dot(u, v), normals((4,), (4,)),
       lambda u, v: np.sum(u * v)),
    fn("np_matmul", lambda x, W: np.matmul(x, W), normals((3, 4), (4, 2)), lambda x, W: x @ W),
    fn("np_matmul_vector", lambda v, W: v @ W, normals((4,), (4, 3)),
       lambda v, W: np.sum(v[:, None] * W, axis=0)),
    fn("np_matmul_batch_by_matrix", lambda x, W: np.matmul(x, W), normals((2, 3, 4), (4, 5)),
       lambda x, W: np.einsum("bij,jk->bik", x, W)),
    fn("np_matmul_batch_by_batch", lambda x, y: x @ y, normals((2, 3, 4), (2, 4, 5)),
       lambda x, y: np.einsum("bij,bjk->bik", x, y)),
    fn("np_maximum", lambda x, y: np.maximum(x, y), normals((3, 4), (4,)),
       lambda x, y: np.where(x > y, x, y)),
    fn("np_minimum", lambda x, y: np.minimum(x, y), normals((3, 4), (4,)),
       lambda x, y: np.where(x < y, x, y)),
    fn("np_concatenate", lambda x, y: np.concatenate([x, y], axis=0), normals((2, 3), (1, 3)),
       lambda x, y: np.vstack([x, y])),
    fn("np_reshape", lambda x: np.reshape(x, (4, 3)), normals((2, 6)), lambda x: x.reshape(4, 3)),
    fn("np_reshape_method", lambda x: x.reshape(-1), normals((2, 3)), lambda x: x.ravel()),
    fn("np_transpose", lambda x: np.transpose(x), normals((2, 3)), lambda x: x.T),
    fn("np_transpose_attribute", lambda x: x.T @ x, normals((3, 2)),
       lambda x: np.einsum("ki,kj->ij", x, x)),
    fn("np_where", lambda x, y: np.where(x > 0, x, 2 * y), normals((3, 4), (3, 4)),
       lambda x, y: np.where(x > 0, x, 2 * y)),
    fn("np_clip", lambda x: np.clip(x, -0.5, 0.5), normals((3, 4)),
       lambda x: np.where(x < -0.5, -0.5, np.where(x > 0.5, 0.5, x)).astype(x.dtype)),
    fn("np_sqrt", lambda x: np.sqrt(x), positives((3, 4)), np.sqrt),
    fn("np_abs", lambda x: np.abs(x), normals((3, 4)), lambda x: np.where(x < 0, -x, x)),
    fn("np_slicing", lambda x: x[:, 1:3], normals((4, 5)), lambda x: x[:, 1:3]),
    fn("np_index_repeated", lambda x: x[[0, 2, 2]] * x[[1, 1, 0]], normals((3, 2)),
       lambda x: np.stack([x[0] * x[1], x[2] * x[1], x[2] * x[0]])),
    fn("np_index_mixed", lambda x: x[1, ::2] + x[-1, None, 1:4], normals((3, 6)),
       lambda x: x[1, [0, 2, 4]][None, :] + x[2, 1:4][None, :]),
    Case("unrolled_recurrent",
         lambda: flux.unroll(flux.Recurrent(3, 4, init=init), 4, stateful=False),
         normals((2, 4, 3)), lambda p, xs: _run_recurrent(p, "model.", xs),
         batched=True, trainable=True),
    Case("unrolled_recurrent_one_sequence",
         lambda: flux.unroll(flux.Recurrent(3, 4, init=init), 4, stateful=False),
         normals((4, 3)), lambda p, xs: _run_recurrent(p, "model.", xs)),
    Case("unrolled_lstm", lambda: flux.unroll(flux.LSTM(3, 4, init=init), 3, stateful=False),
         normals((2, 3, 3)), _lstm_reference, batched=True, trainable=True),
    Case("unrolled_gru", lambda: flux.unroll(flux.GRU(3, 4, init=init), 3, stateful=False),
         normals((2, 3, 3)), _gru_reference, batched=True),
    Case("unrolled_bidirectional",
         lambda: flux.unroll(BiRecurrent(flux.Recurrent(3, 2, init=init),
                                         flux.flip(flux.Recurrent(3, 2, init=init))),
                             3, stateful=False),
         normals((2, 3, 3)),
         lambda p, xs: np.concatenate([_run_recurrent(p, "model.forward.", xs),
                                       _run_recurrent(p, "model.backward.model.", xs,
                                                      reverse=True)], axis=-1),
         batched=True),
    Case("unrolled_nested", M.nested, normals((2, 3, 4, 2)), M.nested_reference),
    Case("unrolled_same_input", M.same_input, normals((2, 3)), M.same_input_reference,
         batched=True),
    fn("broadcasting", lambda x, y, z: x * y + z, normals((4, 1, 3), (5, 3), (3,)),
       lambda x, y, z: x * y + z),
    fn("python_scalars", lambda x: (2 * x - 1) / (x * x + 1) + x ** 3 - 0.5, normals((3, 4)),
       lambda x: (2 * x - 1) / (x * x + 1) + x * x * x - 0.5),
]
"""The model-level cases every backend must pass."""
