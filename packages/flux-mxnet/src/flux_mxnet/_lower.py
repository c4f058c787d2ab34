"""Lowering a flux graph to one `mx.sym.Symbol`: one rule per primitive, in one table.

Conventions on the MXNet side (legacy `mx.sym`, no NumPy-shape mode):
- a 0-d value is an array of shape ``(1,)`` (legacy MXNet has no 0-d arrays); `Lowered.run`
  reshapes outputs back;
- booleans are float32 0/1 (legacy comparisons return their input's dtype);
- every operator is named ``e<index>_<primitive>`` (helpers add a suffix), so an MXNet error,
  which names its operator, maps back to the equation (`equation_of`).
"""
from __future__ import annotations

import re

import mxnet as mx
import numpy as np

from flux import FluxTypeError
from flux import _primitives as P
from flux._ir import Literal

__all__ = ["Lowered", "lower_graph", "mx_shape", "mx_dtype", "nd_array", "RULES"]


def mx_shape(shape) -> tuple:
    """The MXNet shape of a flux shape: ``()`` becomes ``(1,)``."""
    return tuple(shape) or (1,)


_DTYPES = {np.dtype(d): np.dtype(d) for d in
           ("float16", "float32", "float64", "uint8", "int8", "int32", "int64")}
_DTYPES[np.dtype(np.bool_)] = np.dtype(np.float32)


def mx_dtype(dtype) -> np.dtype:
    """The dtype a flux value has on the MXNet side (bool is float32 0/1)."""
    got = _DTYPES.get(np.dtype(dtype))
    if got is None:
        raise FluxTypeError(f"the mxnet backend has no {np.dtype(dtype)} arrays; supported: "
                            f"bool, {', '.join(sorted(str(d) for d in _DTYPES if d != np.bool_))}")
    return got


def nd_array(value, ctx=None, dtype=None) -> mx.nd.NDArray:
    """An NDArray holding a copy of `value` (0-d as (1,)); unlike `mx.nd.array`, it does not
    probe for SciPy sparse matrices (a DeprecationWarning per call with recent SciPy)."""
    value = np.asarray(value)
    dtype = mx_dtype(dtype or value.dtype)
    array = mx.nd.empty(mx_shape(value.shape), ctx=ctx or mx.cpu(), dtype=dtype)
    array[:] = value.reshape(array.shape)
    return array


class Rule:
    """What a rule gets: the equation, its operator name, and symbols for constants."""

    def __init__(self, lowered, index, eqn):
        self.eqn = eqn
        self.name = f"e{index}_{eqn.prim.name}"
        self._lowered = lowered
        self._count = 0

    def sub(self, tag: str) -> str:
        """A fresh operator name for a helper operator of this equation."""
        self._count += 1
        return f"{self.name}_{tag}{self._count}"

    def const(self, array: np.ndarray):
        """A constant array as a fixed argument of the Symbol."""
        return self._lowered.add_const(f"{self.name}_c{len(self._lowered.consts)}", array)

    def full(self, value, shape, dtype):
        return mx.sym.full(shape=mx_shape(shape), val=float(value), dtype=mx_dtype(dtype),
                           name=self.sub("full"))

    def broadcast(self, x, from_shape, to_shape):
        """`x` broadcast from flux shape `from_shape` to `to_shape` (equal rank on MXNet's side)."""
        from_shape, to_shape = tuple(from_shape), tuple(to_shape)
        if from_shape == to_shape:
            return x
        padded = (1,) * (len(to_shape) - len(from_shape)) + from_shape
        if mx_shape(padded) != mx_shape(from_shape):
            x = mx.sym.reshape(x, shape=mx_shape(padded), name=self.sub("pad"))
        return mx.sym.broadcast_to(x, shape=mx_shape(to_shape), name=self.sub("bc"))


# -- the rules: (rule context, input symbols..., **eqn params) -> symbol --------------------------


def _unary(op):
    return lambda r, x: op(x, name=r.name)


def _binary(op):
    return lambda r, x, y: op(x, y, name=r.name)


def _compare(op):
    def rule(r, x, y):
        out = op(x, y, name=r.name)
        dtype = mx_dtype(r.eqn.inputs[0].aval.dtype)
        return out if dtype == np.float32 else mx.sym.cast(out, dtype="float32", name=r.sub("b"))
    return rule


def _convert(r, x, *, dtype):
    source, target = mx_dtype(r.eqn.inputs[0].aval.dtype), mx_dtype(dtype)
    if np.dtype(dtype) == np.bool_ and r.eqn.inputs[0].aval.dtype != np.bool_:
        x = mx.sym._internal._not_equal_scalar(x, scalar=0.0, name=r.name)
    if source == target:
        return x if np.dtype(dtype) == np.bool_ else mx.sym.identity(x, name=r.sub("id"))
    return mx.sym.cast(x, dtype=target, name=r.sub("cast"))


def _where(r, c, x, y):
    shape = r.eqn.outputs[0].aval.shape
    c, x, y = (r.broadcast(s, a.aval.shape, shape) for s, a in zip((c, x, y), r.eqn.inputs))
    return mx.sym.where(c, x, y, name=r.name)


def _matmul(r, a, b):
    """NumPy matmul (rank >= 2, broadcast batch axes) with dot and batch_dot."""
    (sa, sb), out = (x.aval.shape for x in r.eqn.inputs), r.eqn.outputs[0].aval.shape
    if len(sa) == len(sb) == 2:
        return mx.sym.dot(a, b, name=r.name)
    if len(sb) == 2:                         # (..., m, k) @ (k, n): one big product
        a2 = mx.sym.reshape(a, shape=(-1, sa[-1]), name=r.sub("fold"))
        return mx.sym.reshape(mx.sym.dot(a2, b, name=r.name), shape=out, name=r.sub("unfold"))
    batch = out[:-2]
    a = r.broadcast(a, sa, batch + sa[-2:])
    b = r.broadcast(b, sb, batch + sb[-2:])
    a3 = mx.sym.reshape(a, shape=(-1,) + sa[-2:], name=r.sub("fold"))
    b3 = mx.sym.reshape(b, shape=(-1,) + sb[-2:], name=r.sub("fold"))
    return mx.sym.reshape(mx.sym.batch_dot(a3, b3, name=r.name), shape=out, name=r.sub("unfold"))


def _reduce(op):
    def rule(r, x, *, axes, keepdims):
        if not axes:      # MXNet reads axis=() as "every axis"
            return mx.sym.identity(x, name=r.name)
        out = op(x, axis=tuple(axes), keepdims=keepdims, name=r.name)
        shape = r.eqn.outputs[0].aval.shape
        return out if shape else mx.sym.reshape(out, shape=(1,), name=r.sub("scalar"))
    return rule


def _broadcast_to(r, x, *, shape):
    out = r.broadcast(x, r.eqn.inputs[0].aval.shape, shape)
    return out if out is not x else mx.sym.identity(x, name=r.name)


def _reshape(r, x, *, shape):
    return mx.sym.reshape(x, shape=mx_shape(shape), name=r.name)


def _transpose(r, x, *, perm):
    if len(perm) < 2:
        return mx.sym.identity(x, name=r.name)
    return mx.sym.transpose(x, axes=tuple(perm), name=r.name)


def _concatenate(r, *xs, axis):
    return mx.sym.concat(*xs, dim=axis, num_args=len(xs), name=r.name)


def _flat_positions(shape, index) -> np.ndarray:
    """Where each element of ``x[index]`` sits in ``x.ravel()`` (any static NumPy index)."""
    return np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)[index]


def _index_array(positions: np.ndarray) -> np.ndarray:
    """Positions as float32 (MXNet's default index dtype) while exact, else int64."""
    exact = positions.size == 0 or positions.max() < 2 ** 24
    return positions.astype(np.float32 if exact else np.int64)


def _getitem(r, x, *, index):
    """Any static index as one gather from the flattened value."""
    shape = r.eqn.inputs[0].aval.shape
    positions = _flat_positions(shape, index)
    flat = mx.sym.reshape(x, shape=(-1,), name=r.sub("flat"))
    ids = r.const(_index_array(positions.reshape(mx_shape(positions.shape))))
    return mx.sym.take(flat, ids, axis=0, name=r.name)


def _index_add(r, g, *, index, shape):
    """zeros(shape) with g added at [index]: repeated positions summed first, then one scatter."""
    positions = _flat_positions(shape, index).ravel()
    g = mx.sym.reshape(g, shape=(-1,), name=r.sub("flat"))
    unique, inverse = np.unique(positions, return_inverse=True)
    if len(unique) < len(positions):
        onehot = (inverse[None, :] == np.arange(len(unique))[:, None])     # (U, n)
        dtype = mx_dtype(r.eqn.outputs[0].aval.dtype)
        g = mx.sym.dot(r.const(onehot.astype(dtype)), g, name=r.sub("sum"))
        positions = unique
    size = int(np.prod(shape, dtype=np.int64))
    out = mx.sym.scatter_nd(g, r.const(_index_array(positions[None, :])), shape=(size,),
                            name=r.name)
    return mx.sym.reshape(out, shape=mx_shape(shape), name=r.sub("shape"))


RULES = {
    P.neg_p: _unary(mx.sym.negative),
    P.exp_p: _unary(mx.sym.exp),
    P.log_p: _unary(mx.sym.log),
    P.tanh_p: _unary(mx.sym.tanh),
    P.sqrt_p: _unary(mx.sym.sqrt),
    P.sin_p: _unary(mx.sym.sin),
    P.cos_p: _unary(mx.sym.cos),
    P.abs_p: _unary(mx.sym.abs),
    P.sign_p: _unary(mx.sym.sign),
    P.relu_p: _unary(mx.sym.relu),
    P.logistic_p: _unary(mx.sym.sigmoid),
    P.add_p: _binary(mx.sym.broadcast_add),
    P.sub_p: _binary(mx.sym.broadcast_sub),
    P.mul_p: _binary(mx.sym.broadcast_mul),
    P.div_p: _binary(mx.sym.broadcast_div),
    P.pow_p: _binary(mx.sym.broadcast_power),
    P.max_p: _binary(mx.sym.broadcast_maximum),
    P.min_p: _binary(mx.sym.broadcast_minimum),
    P.gt_p: _compare(mx.sym.broadcast_greater),
    P.ge_p: _compare(mx.sym.broadcast_greater_equal),
    P.lt_p: _compare(mx.sym.broadcast_lesser),
    P.le_p: _compare(mx.sym.broadcast_lesser_equal),
    P.eq_p: _compare(mx.sym.broadcast_equal),
    P.ne_p: _compare(mx.sym.broadcast_not_equal),
    P.and_p: _binary(mx.sym.broadcast_logical_and),
    P.or_p: _binary(mx.sym.broadcast_logical_or),
    P.where_p: _where,
    P.convert_p: _convert,
    P.stop_gradient_p: _unary(mx.sym.BlockGrad),
    P.matmul_p: _matmul,
    P.reduce_sum_p: _reduce(mx.sym.sum),
    P.reduce_max_p: _reduce(mx.sym.max),
    P.broadcast_to_p: _broadcast_to,
    P.reshape_p: _reshape,
    P.transpose_p: _transpose,
    P.concatenate_p: _concatenate,
    P.getitem_p: _getitem,
    P.index_add_p: _index_add,
}
"""Primitive -> rule building its MXNet symbol (every primitive of `flux._primitives`)."""

# A Literal operand of these becomes a scalar operator instead of a broadcast constant.
_I = mx.sym._internal
_SCALAR = {      # primitive: (operator for x op s, operator for s op x)
    P.add_p: (_I._plus_scalar, _I._plus_scalar),
    P.sub_p: (_I._minus_scalar, _I._rminus_scalar),
    P.mul_p: (_I._mul_scalar, _I._mul_scalar),
    P.div_p: (_I._div_scalar, _I._rdiv_scalar),
}


class Lowered:
    """A graph as one MXNet Symbol, and how to read the graph's outputs from it.

    Arguments: ``input_names[i]`` for ``graph.inputs[i]``, ``param_names[j]`` for
    ``graph.param_vars[j]`` (one Variable per Param, however often it is used), and `consts`
    (name -> array: the graph's constants and the rules' index arrays), all fixed.

    `fuse_affine` lowers ``x @ W + b`` as FullyConnected (`_affine_adds`). Only training
    executors (run with ``is_train=True``) use it: MXNet's MKL-DNN subgraph backend caches
    FullyConnected weights in inference executors, which then miss changed weights.
    """

    def __init__(self, graph, input_names, param_names, fuse_affine=False):
        self.graph = graph
        self.input_names = list(input_names)
        self.param_names = list(param_names)
        self.consts: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        self.outputs: list = []          # per graph output: ("sym", k) or ("literal", array)
        env = {}
        for var, name in zip(graph.inputs, self.input_names):
            env[var] = self._variable(name, var.aval.shape, var.aval.dtype)
        for var, name in zip(graph.param_vars, self.param_names):
            env[var] = self._variable(name, var.aval.shape, var.aval.dtype)
        for i, (var, value) in enumerate(zip(graph.consts, graph.const_values)):
            env[var] = self.add_const(f"const{i}", np.asarray(value))
        fused = _affine_adds(graph) if fuse_affine else {}
        products = set(fused.values())
        for index, eqn in enumerate(graph.eqns):
            if index in products:
                continue                     # lowered with the add that uses it
            product = fused.get(index)
            if product is not None:
                env[eqn.outputs[0]] = _affine(index, eqn, graph.eqns[product], env)
            else:
                env[eqn.outputs[0]] = self._lower_eqn(index, eqn, env)
        symbols = []
        for i, atom in enumerate(graph.outputs):
            if isinstance(atom, Literal):
                self.outputs.append(("literal", np.asarray(atom.value)))
                continue
            sym = env[atom]
            if sym.name in self.shapes or any(sym is s for s in symbols):
                sym = mx.sym.identity(sym, name=f"out{i}")   # an argument or a repeat
            self.outputs.append(("sym", len(symbols)))
            symbols.append(sym)
        self.symbols = symbols
        self.symbol = mx.sym.Group(symbols) if symbols else None

    def _variable(self, name, shape, dtype):
        self.shapes[name] = mx_shape(shape)
        self.dtypes[name] = mx_dtype(dtype)
        return mx.sym.Variable(name, shape=self.shapes[name], dtype=self.dtypes[name])

    def add_const(self, name, array):
        array = np.asarray(array)
        dtype = mx_dtype(array.dtype)
        self.consts[name] = array.astype(dtype).reshape(mx_shape(array.shape))
        return self._variable(name, array.shape, dtype)

    def _lower_eqn(self, index, eqn, env):
        rule = RULES.get(eqn.prim)
        if rule is None:
            raise FluxTypeError(f"the mxnet backend cannot lower primitive {eqn.prim.name!r}")
        r = Rule(self, index, eqn)
        scalar = _SCALAR.get(eqn.prim)
        if scalar is not None and len(eqn.inputs) == 2:
            x, y = eqn.inputs
            if isinstance(y, Literal) and not isinstance(x, Literal):
                return scalar[0](env[x], scalar=float(y.value), name=r.name)
            if isinstance(x, Literal) and not isinstance(y, Literal):
                return scalar[1](env[y], scalar=float(x.value), name=r.name)
        ins = [r.full(a.value, (), a.dtype) if isinstance(a, Literal) else env[a]
               for a in eqn.inputs]
        return rule(r, *ins, **eqn.attrs)


def _affine_adds(graph) -> dict:
    """``x @ W + b`` in `graph`: add equation index -> index of the 2-D matmul it adds a bias
    vector to (the product used nowhere else). MXNet runs these as one FullyConnected
    operator, whose forward and backward are one MKL-DNN inner product each; `dot` plus a
    broadcast add takes 2.3x as long on the MLP benchmark."""
    uses: dict[int, int] = {}
    for eqn in graph.eqns:
        for atom in eqn.inputs:
            uses[id(atom)] = uses.get(id(atom), 0) + 1
    for atom in graph.outputs:
        uses[id(atom)] = uses.get(id(atom), 0) + 2
    producer = {id(eqn.outputs[0]): i for i, eqn in enumerate(graph.eqns)}
    found = {}
    for index, eqn in enumerate(graph.eqns):
        if eqn.prim is not P.add_p or any(isinstance(a, Literal) for a in eqn.inputs):
            continue
        for product, bias in (eqn.inputs, eqn.inputs[::-1]):
            m = producer.get(id(product))
            if m is None or graph.eqns[m].prim is not P.matmul_p or uses[id(product)] != 1:
                continue
            x, w = graph.eqns[m].inputs
            shape = product.aval.shape
            if (x.aval.ndim == w.aval.ndim == 2 and bias.aval.shape == shape[-1:]
                    and bias.aval.dtype == product.aval.dtype and product.aval.dtype.kind == "f"
                    and not isinstance(x, Literal) and not isinstance(w, Literal)):
                found[index] = m
                break
    return found


def _affine(index, add, matmul, env):
    """``x @ W + b`` as FullyConnected (its weight is W transposed: (outputs, inputs))."""
    x, w = matmul.inputs
    product = add.inputs[0] if add.inputs[0] is matmul.outputs[0] else add.inputs[1]
    bias = add.inputs[1] if product is add.inputs[0] else add.inputs[0]
    name = f"e{index}_affine"
    weight = mx.sym.transpose(env[w], name=f"{name}_wT")
    return mx.sym.FullyConnected(env[x], weight=weight, bias=env[bias],
                                 num_hidden=product.aval.shape[-1], flatten=False, name=name)


def lower_graph(graph, input_names, param_names, fuse_affine=False) -> Lowered:
    return Lowered(graph, input_names, param_names, fuse_affine)


_OPERATOR = re.compile(r"\be(\d+)_[a-z_]+")


def equation_of(graph, message: str):
    """The equation an MXNet error message names (through its operator's name), or None."""
    for match in _OPERATOR.finditer(message):
        index = int(match.group(1))
        if index < len(graph.eqns):
            return graph.eqns[index]
    return None
