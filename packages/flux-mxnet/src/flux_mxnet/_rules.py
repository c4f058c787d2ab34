"""The lowering table: one rule per primitive building its MXNet operators (`RULES`), and
`Rule`, what each rule gets (its equation, operator names, constants, a free batch's axes).

MXNet-side conventions are those of `flux_mxnet._symbol`: 0-d values are ``(1,)``, booleans
float32 0/1, the operators of equation i named ``e<i>_<primitive>``.
"""
from __future__ import annotations

import contextlib

import mxnet as mx
import numpy as np

from flux import FluxTypeError, FluxValueError
from flux.backends import flat_positions, is_basic_index, op_name, strided
from flux.ir import Literal
from flux.ir import primitives as P

from ._loops import LOOP_RULES
from ._windows import WINDOW_RULES

__all__ = ["Rule", "RULES", "SCALAR", "mx_shape", "mx_dtype"]

S = mx.sym


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


class Rule:
    """What a rule gets: the equation, its operator name, and symbols for constants."""

    def __init__(self, built, index, eqn, prefix=""):
        self.eqn = eqn
        self.name = f"{prefix}{op_name(index)}_{eqn.prim.name}"
        self._built = built
        self._count = 0
        self._free = built.free

    def batch(self, atom) -> tuple:
        """The batch axes of `atom` in a batch-generic Symbol (see `flux.backends.FreeBatch`)."""
        return () if self._free is None or isinstance(atom, Literal) else self._free.axes(atom)

    def not_free(self, what: str):
        source = self.eqn.source
        where = "" if source.frames else f" at {source.file}:{source.line}"
        return FluxValueError(f"flux_mxnet.symbol: {what} ({self.eqn.prim.name}{where}) has no "
                              f"MXNet form for every batch size; pass example inputs for a "
                              f"Symbol of one batch size", trace=source.frames)

    def target(self, shape, batch=()) -> tuple:
        """A reshape's MXNet target: -1 (inferred) at the batch axis of a free batch."""
        if len(batch) > 1:
            raise self.not_free("a reshape to two batch-sized axes")
        return tuple(-1 if i in batch else d for i, d in enumerate(shape)) or (1,)

    def sub(self, tag: str) -> str:
        """A fresh operator name for a helper operator of this equation."""
        self._count += 1
        return f"{self.name}_{tag}{self._count}"

    def const(self, array: np.ndarray):
        """A constant array as a fixed argument of the Symbol; inside a loop's step behind a
        BlockGrad (foreach asks every input of its step for a gradient, summed over the steps,
        and `take` refuses to sum one for its indices)."""
        sym = self._built.add_const(f"{self.name}_c{len(self._built.consts)}", array)
        return self.fixed(sym) if self._built.steps else sym

    def fixed(self, sym):
        """`sym` with no gradient (``BlockGrad``)."""
        return S.BlockGrad(sym, name=self.sub("fixed"))

    @contextlib.contextmanager
    def step(self):
        """While the symbols of a loop's step are being built (see `const`)."""
        self._built.steps += 1
        try:
            yield
        finally:
            self._built.steps -= 1

    def body(self, graph, inputs, consts) -> list:
        """The output symbols of loop body `graph` on symbols for its inputs and constants,
        its operators named after this equation's (``e<i>_scan_e<j>_...``: unique however
        deep loops nest)."""
        return self._built.lower_body(graph, inputs, consts, prefix=f"{self.name}_")

    def fuses_affine(self) -> bool:
        """Whether ``x @ W + b`` becomes FullyConnected (training executors)."""
        return self._built.fuse_affine

    def transposed(self, sym):
        """Matrix `sym` transposed, made once for the whole Symbol (`GraphSymbol.transposed`)."""
        return self._built.transposed(sym, self.sub("wT"))

    def full(self, value, shape, dtype):
        return S.full(shape=mx_shape(shape), val=float(value), dtype=mx_dtype(dtype),
                      name=self.sub("full"))

    def broadcast(self, x, from_shape, to_shape, from_batch=(), to_batch=()):
        """`x` broadcast from flux shape `from_shape` to `to_shape` (equal rank on MXNet's side);
        the batch axes of each, with a free batch, are kept or grown like the graph's input."""
        from_shape, to_shape = tuple(from_shape), tuple(to_shape)
        if from_shape == to_shape and tuple(from_batch) == tuple(to_batch):
            return x
        k = len(to_shape) - len(from_shape)
        padded = (1,) * k + from_shape
        if not to_batch:
            if mx_shape(padded) != mx_shape(from_shape):
                x = S.reshape(x, shape=mx_shape(padded), name=self.sub("pad"))
            return S.broadcast_to(x, shape=mx_shape(to_shape), name=self.sub("bc"))
        if not from_shape:        # MXNet's (1,)
            x = S.reshape(x, shape=padded, name=self.sub("pad"))
        for _ in range(k if from_shape else 0):
            x = S.expand_dims(x, axis=0, name=self.sub("pad"))
        grow = tuple(a for a in to_batch if a - k not in from_batch)
        if grow:
            source, axis = self._built.batch_source
            x = S.broadcast_like(x, source, lhs_axes=grow, rhs_axes=(axis,) * len(grow),
                                 name=self.sub("like"))
        if any(d != p for a, (d, p) in enumerate(zip(to_shape, padded)) if a not in to_batch):
            x = S.broadcast_to(x, shape=tuple(0 if a in to_batch else d
                                              for a, d in enumerate(to_shape)),
                               name=self.sub("bc"))
        return x


# -- the rules: (rule context, input symbols..., **eqn attrs) -> symbol --------------------------


def _unary(op):
    return lambda r, x: op(x, name=r.name)


def _activation(kind):
    """tanh, relu, σ as MXNet's `Activation` (MKL-DNN's kernels, forward and backward: 5 to 10
    times faster than the elementwise `tanh`/`sigmoid` on a (64, 256) float32 array)."""
    return lambda r, x: S.Activation(x, act_type=kind, name=r.name)


def _binary(op):
    return lambda r, x, y: op(x, y, name=r.name)


def _compare(op):
    def rule(r, x, y):
        out = op(x, y, name=r.name)
        dtype = mx_dtype(r.eqn.inputs[0].aval.dtype)
        return out if dtype == np.float32 else S.cast(out, dtype="float32", name=r.sub("b"))
    return rule


def _logaddexp(r, x, y):
    """log(eˣ + eʸ) as max(x, y) + log1p(exp(−|x − y|)), which never overflows. The max is
    (max(x, y) + max(y, x)) / 2, the same value, so that MXNet's gradient splits ties equally
    (its maximum gives a tie to its first operand)."""
    big = S.broadcast_add(S.broadcast_maximum(x, y, name=r.sub("max")),
                          S.broadcast_maximum(y, x, name=r.sub("max")), name=r.sub("sum"))
    gap = S.abs(S.broadcast_sub(x, y, name=r.sub("sub")), name=r.sub("abs"))
    tail = S.log1p(S.exp(S.negative(gap, name=r.sub("neg")), name=r.sub("exp")),
                   name=r.sub("log1p"))
    return S.broadcast_add(S._internal._mul_scalar(big, scalar=0.5, name=r.sub("half")), tail,
                           name=r.name)


def _convert(r, x, *, dtype):
    source, target = r.eqn.inputs[0].aval.dtype, np.dtype(dtype)
    if target == np.bool_ and source != np.bool_:
        x = S._internal._not_equal_scalar(x, scalar=0.0, name=r.name)
    if mx_dtype(source) == mx_dtype(target):
        return x
    return S.cast(x, dtype=mx_dtype(target), name=r.sub("cast"))


def _where(r, c, x, y):
    out = r.eqn.outputs[0]
    c, x, y = (r.broadcast(s, a.aval.shape, out.aval.shape, r.batch(a), r.batch(out))
               for s, a in zip((c, x, y), r.eqn.inputs))
    return S.where(c, x, y, name=r.name)


def _matmul(r, a, b):
    """NumPy matmul (rank >= 2, broadcast batch axes) with dot and batch_dot."""
    (ia, ib), product = r.eqn.inputs, r.eqn.outputs[0]
    (sa, sb), out = (ia.aval.shape, ib.aval.shape), r.target(product.aval.shape, r.batch(product))
    if len(sa) == len(sb) == 2:
        return S.dot(a, b, name=r.name)
    if len(sb) == 2 and not r.batch(ib):     # (..., m, k) @ (k, n): one big product
        a2 = S.reshape(a, shape=(-1, sa[-1]), name=r.sub("fold"))
        return S.reshape(S.dot(a2, b, name=r.name), shape=out, name=r.sub("unfold"))
    n = len(product.aval.shape) - 2
    if any(d >= len(s) - 2 for v, s in ((ia, sa), (ib, sb)) for d in r.batch(v)):
        raise r.not_free("a matrix product over a batch-sized axis")
    batch, axes = product.aval.shape[:n], tuple(d for d in r.batch(product) if d < n)
    a = r.broadcast(a, sa, batch + sa[-2:], r.batch(ia), axes)
    b = r.broadcast(b, sb, batch + sb[-2:], r.batch(ib), axes)
    a3 = S.reshape(a, shape=(-1,) + sa[-2:], name=r.sub("fold"))
    b3 = S.reshape(b, shape=(-1,) + sb[-2:], name=r.sub("fold"))
    return S.reshape(S.batch_dot(a3, b3, name=r.name), shape=out, name=r.sub("unfold"))


def _reduce(op):
    def rule(r, x, *, axes, keepdims):
        if not axes:      # MXNet reads axis=() as "every axis"
            return x
        out = op(x, axis=tuple(axes), keepdims=keepdims, name=r.name)
        shape = r.eqn.outputs[0].aval.shape
        return out if shape else S.reshape(out, shape=(1,), name=r.sub("scalar"))
    return rule


def _index_array(positions: np.ndarray) -> np.ndarray:
    """Positions as float32 (MXNet's default index dtype) while exact, else int64."""
    exact = positions.size == 0 or positions.max() < 2 ** 24
    return positions.astype(np.float32 if exact else np.int64)


def _getitem(r, x, *, index):
    """Any static index as one gather from the flattened value; with a free batch, a basic
    index as one slice (and a reshape)."""
    if r.batch(r.eqn.inputs[0]):
        if not is_basic_index(index):
            raise r.not_free("indexing a batch with an array")
        slices, dropped, inserted = strided(r.eqn.inputs[0].aval.ndim, index)
        x = S.slice(x, begin=tuple(s.start for s in slices), end=tuple(s.stop for s in slices),
                    step=tuple(s.step for s in slices), name=r.name)
        out = r.eqn.outputs[0]
        if dropped or inserted:      # ints drop axes, Nones insert them: one reshape
            x = S.reshape(x, shape=r.target(out.aval.shape, r.batch(out)), name=r.sub("shape"))
        return x
    positions = flat_positions(r.eqn.inputs[0].aval.shape, index)
    flat = S.reshape(x, shape=(-1,), name=r.sub("flat"))
    ids = r.const(_index_array(positions.reshape(mx_shape(positions.shape))))
    return S.take(flat, ids, axis=0, name=r.name)


def _index_add(r, g, *, index, shape):
    """zeros(shape) with g added at [index]: repeated positions summed first, then one scatter."""
    if r.batch(r.eqn.outputs[0]):
        raise r.not_free("a gradient of indexing")
    positions = flat_positions(shape, index).ravel()
    g = S.reshape(g, shape=(-1,), name=r.sub("flat"))
    unique, inverse = np.unique(positions, return_inverse=True)
    if len(unique) < len(positions):
        onehot = (inverse[None, :] == np.arange(len(unique))[:, None])     # (U, n)
        dtype = mx_dtype(r.eqn.outputs[0].aval.dtype)
        g = S.dot(r.const(onehot.astype(dtype)), g, name=r.sub("sum"))
        positions = unique
    size = int(np.prod(shape, dtype=np.int64))
    out = S.scatter_nd(g, r.const(_index_array(positions[None, :])), shape=(size,), name=r.name)
    return S.reshape(out, shape=mx_shape(shape), name=r.sub("shape"))


RULES = {
    **{p: _unary(op) for p, op in [
        (P.neg_p, S.negative), (P.exp_p, S.exp), (P.log_p, S.log),
        (P.sqrt_p, S.sqrt), (P.sin_p, S.sin), (P.cos_p, S.cos), (P.abs_p, S.abs),
        (P.sign_p, S.sign), (P.stop_gradient_p, S.BlockGrad)]},
    **{p: _activation(kind) for p, kind in [
        (P.tanh_p, "tanh"), (P.relu_p, "relu"), (P.logistic_p, "sigmoid")]},
    **{p: _binary(op) for p, op in [
        (P.add_p, S.broadcast_add), (P.sub_p, S.broadcast_sub), (P.mul_p, S.broadcast_mul),
        (P.div_p, S.broadcast_div), (P.pow_p, S.broadcast_power),
        (P.max_p, S.broadcast_maximum), (P.min_p, S.broadcast_minimum),
        (P.and_p, S.broadcast_logical_and), (P.or_p, S.broadcast_logical_or)]},
    **{p: _compare(op) for p, op in [
        (P.gt_p, S.broadcast_greater), (P.ge_p, S.broadcast_greater_equal),
        (P.lt_p, S.broadcast_lesser), (P.le_p, S.broadcast_lesser_equal),
        (P.eq_p, S.broadcast_equal), (P.ne_p, S.broadcast_not_equal)]},
    P.logaddexp_p: _logaddexp,
    P.where_p: _where,
    P.convert_p: _convert,
    P.matmul_p: _matmul,
    P.reduce_sum_p: _reduce(S.sum),
    P.reduce_max_p: _reduce(S.max),
    P.broadcast_to_p: lambda r, x, *, shape: r.broadcast(
        x, r.eqn.inputs[0].aval.shape, shape, r.batch(r.eqn.inputs[0]), r.batch(r.eqn.outputs[0])),
    P.reshape_p: lambda r, x, *, shape: S.reshape(
        x, shape=r.target(shape, r.batch(r.eqn.outputs[0])), name=r.name),
    P.transpose_p: lambda r, x, *, perm: S.transpose(x, axes=tuple(perm), name=r.name),
    P.concatenate_p: lambda r, *xs, axis: S.concat(*xs, dim=axis, num_args=len(xs), name=r.name),
    P.getitem_p: _getitem,
    P.index_add_p: _index_add,
    **WINDOW_RULES,     # conv, pools, take and their gradients
    **LOOP_RULES,       # scan
}
"""Primitive -> rule building its MXNet symbol (every primitive of `flux.ir.PRIMITIVES`, and
`scan`)."""

# A Literal operand of these becomes a scalar operator instead of a broadcast constant.
_I = S._internal
SCALAR = {      # primitive: (operator for x op s, operator for s op x)
    P.add_p: (_I._plus_scalar, _I._plus_scalar),
    P.sub_p: (_I._minus_scalar, _I._rminus_scalar),
    P.mul_p: (_I._mul_scalar, _I._mul_scalar),
    P.div_p: (_I._div_scalar, _I._rdiv_scalar),
}
