"""The lowering table: flux's primitives as TensorFlow ops, and a graph as a function of tensors.

`LOWERINGS` has one short entry per primitive of `flux.ir.PRIMITIVES`, and the loop `scan`
(`flux.ir.primitives.LOOPS`: a `tf.while_loop`, `flux_tf._loop`). `build` turns a `Graph`
into ``body(inputs, params) -> outputs`` over TF tensors, a scan's body graph built the same
way; every equation's ops are made inside ``tf.name_scope(op_name(i))``, so a TF error naming
an op (``e12/MatMul``) maps back to equation 12 and its source (`flux.backends.backend_error`;
`flux_tf._loop.located` follows such names into a loop's body). The callers (`TFCompiled`,
`tensor`, `keras_layer`) decide where the params come from (their own `tf.Variable`s) and wrap
`body` in `tf.function`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from flux import BackendError
from flux.backends import backend_error, flat_positions, is_basic_index, op_name
from flux.ir import Graph, Literal
from flux.ir import primitives as P

from ._loop import scan

__all__ = ["LOWERINGS", "build"]


def _reduce(op):
    def reduce(x, *, axes, keepdims):
        return op(x, axis=list(axes), keepdims=keepdims) if axes else x
    return reduce


def _getitem(x, *, index):
    if is_basic_index(index):
        return x[index]                                   # strided slice
    return tf.gather(tf.reshape(x, [-1]), flat_positions(x.shape, index))


def _index_add(g, *, index, shape):
    """zeros(shape) with g added at [index]; repeated positions accumulate."""
    positions = flat_positions(shape, index).reshape(-1)
    size = int(np.prod(shape, dtype=np.int64))
    flat = tf.math.unsorted_segment_sum(tf.reshape(g, [-1]), positions, num_segments=size)
    return tf.reshape(flat, shape)


def _logaddexp(x, y):
    """log(eˣ + eʸ) in its stable form, max(x, y) + log1p(e^−|x − y|)."""
    return tf.maximum(x, y) + tf.math.log1p(tf.exp(-tf.abs(x - y)))


# -- windows: channels last, padding explicit (tf.pad), then TF's "VALID" ops ------------------

_FORMATS = (None, "NWC", "NHWC", "NDHWC")   # given explicitly: eager 3-D gradients need it


def _pad(x, padding, value=0):
    """x padded on its spatial axes by one (before, after) pair each."""
    if not any(lo or hi for lo, hi in padding):
        return x
    return tf.pad(x, [(0, 0), *padding, (0, 0)], constant_values=value)


def _lowest(x):
    return x.dtype.min if x.dtype.is_integer else -np.inf


def _pullback(f, x, g):
    """g pulled back through f at x: TF's gradient of f(x) w.r.t. x, weighted by g. For a
    linear f, x is zeros of its shape; graphs prune the forward ops no gradient reads."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
    return tape.gradient(y, x, output_gradients=g)


def _conv(x, w, *, strides, padding, dilation, groups):
    """Cross-correlation of the padded x with w. Groups are convolved one by one (TF's CPU
    kernels have no gradients for grouped convolutions); TF takes strides or a dilation, not
    both: with both, the convolution with stride 1 is subsampled."""
    both = any(s > 1 for s in strides) and any(d > 1 for d in dilation)
    x = _pad(x, padding)
    pieces = zip(tf.split(x, groups, -1), tf.split(w, groups, -1)) if groups > 1 else [(x, w)]
    ys = [tf.nn.convolution(xg, wg, 1 if both else strides, "VALID", _FORMATS[len(strides)],
                            dilation) for xg, wg in pieces]
    y = tf.concat(ys, -1) if groups > 1 else ys[0]
    return y[(slice(None),) + tuple(slice(None, None, s) for s in strides)] if both else y


def _conv_input_grad(g, w, *, shape, **attrs):
    """The gradient w.r.t. the input (of `shape`): g pulled back through the convolution."""
    return _pullback(lambda x: _conv(x, w, **attrs), tf.zeros(shape, g.dtype), g)


def _conv_filter_grad(x, g, *, shape, **attrs):
    """The gradient w.r.t. the filter (of `shape`): g pulled back through the convolution."""
    return _pullback(lambda w: _conv(x, w, **attrs), tf.zeros(shape, g.dtype), g)


def _window_max(x, *, window, strides, padding):
    """The maximum of each window, padding counting as -inf (TF gives a window with nothing
    above the lowest finite value, e.g. one wholly in padding, that value, not -inf)."""
    return tf.nn.max_pool(_pad(x, padding, _lowest(x)), window, strides, "VALID",
                          _FORMATS[len(window)])


def _window_max_grad(x, y, g, *, window, strides, padding):
    """g sent to the maximum of each window by TF's MaxPoolGrad, which on CPU picks the first
    maximum in row-major window order, as the NumPy `impl` does. 2-D pools take the forward's
    y as it is; others pull g back through the pool (y recomputed)."""
    if len(window) != 2:
        return _pullback(lambda x: _window_max(x, window=window, strides=strides,
                                               padding=padding), x, g)
    dx = tf.raw_ops.MaxPoolGrad(orig_input=_pad(x, padding, _lowest(x)), orig_output=y, grad=g,
                                ksize=(1, *window, 1), strides=(1, *strides, 1),
                                padding="VALID")
    (top, bottom), (left, right) = padding
    return dx[:, top:dx.shape[1] - bottom, left:dx.shape[2] - right]


def _window_sum(x, *, window, strides, padding):
    """The sum of each window of the zero-padded x (TF's average pool times the window)."""
    return tf.nn.avg_pool(_pad(x, padding), window, strides, "VALID", _FORMATS[len(window)]) \
        * int(np.prod(window))


def _window_sum_grad(g, *, shape, **attrs):
    """g spread back over the windows it summed: pulled back through `_window_sum`."""
    return _pullback(lambda x: _window_sum(x, **attrs), tf.zeros(shape, g.dtype), g)


def _take(x, indices, *, axis):
    """Rows of x along `axis` by data-dependent indices. Out of range indices are an error on
    CPU (as in NumPy) but read zeros on GPU (TF's gather does not check them there)."""
    return tf.gather(x, tf.cast(indices, tf.int64), axis=axis)


def _take_grad(g, indices, *, axis, shape):
    """zeros(shape) with each row of g added back to the row it was taken from."""
    k = len(indices.shape)
    rows = tf.transpose(g, [*range(axis, axis + k), *range(axis), *range(axis + k, len(g.shape))])
    summed = tf.math.unsorted_segment_sum(rows, tf.cast(indices, tf.int64), shape[axis])
    return tf.transpose(summed, [*range(1, axis + 1), 0, *range(axis + 1, len(shape))])


def _broadcast_to(x, *, shape):
    """NumPy's broadcast_to. TF's BroadcastTo handles at most 5 axes: beyond, `x` is given all
    the axes (leading ones) and tiled, which has no such limit."""
    if len(shape) <= 5:
        return tf.broadcast_to(x, shape)
    full = [1] * (len(shape) - len(x.shape)) + x.shape.as_list()
    return tf.tile(tf.reshape(x, full), [n // d if d else 0 for n, d in zip(shape, full)])


def _add(x, y):
    """x + y. An operand whose leading sizes are 1, beside one of at least its rank, is passed
    without them (the same sum): TF's graph optimiser fuses ``MatMul`` + ``Add`` into a kernel
    that takes its bias only as a vector, and fails at run time on a (1, n) one."""
    return tf.add(*_without_leading_ones(x, y))


def _without_leading_ones(x, y):
    for i, (a, b) in enumerate([(x, y), (y, x)]):
        shape = a.shape.as_list() if a.shape.rank is not None else None
        if shape and b.shape.rank is not None and len(shape) >= 2 and shape[0] == 1 \
                and b.shape.rank >= len(shape) and None not in shape:
            k = next((j for j, d in enumerate(shape) if d != 1), len(shape) - 1)
            a = tf.reshape(a, shape[k:])
            return (a, b) if i == 0 else (b, a)
    return x, y


LOWERINGS = {
    # elementwise (TF broadcasts like NumPy)
    P.neg_p: tf.negative, P.exp_p: tf.exp, P.log_p: tf.math.log, P.tanh_p: tf.tanh,
    P.sqrt_p: tf.sqrt, P.sin_p: tf.sin, P.cos_p: tf.cos, P.abs_p: tf.abs, P.sign_p: tf.sign,
    P.relu_p: tf.nn.relu, P.logistic_p: tf.sigmoid,
    P.add_p: _add, P.sub_p: tf.subtract, P.mul_p: tf.multiply, P.div_p: tf.math.truediv,
    P.pow_p: tf.pow, P.max_p: tf.maximum, P.min_p: tf.minimum, P.logaddexp_p: _logaddexp,
    P.gt_p: tf.greater, P.ge_p: tf.greater_equal, P.lt_p: tf.less, P.le_p: tf.less_equal,
    P.eq_p: tf.equal, P.ne_p: tf.not_equal, P.and_p: tf.logical_and, P.or_p: tf.logical_or,
    P.where_p: tf.where,
    P.convert_p: lambda x, *, dtype: tf.cast(x, tf.as_dtype(np.dtype(dtype))),
    P.stop_gradient_p: tf.stop_gradient,
    # structural
    P.matmul_p: tf.linalg.matmul,
    P.reduce_sum_p: _reduce(tf.reduce_sum),
    P.reduce_max_p: _reduce(tf.reduce_max),
    P.broadcast_to_p: _broadcast_to,
    P.reshape_p: lambda x, *, shape: tf.reshape(x, shape),
    P.transpose_p: lambda x, *, perm: tf.transpose(x, perm),
    P.concatenate_p: lambda *xs, axis: tf.concat(xs, axis),
    P.getitem_p: _getitem,
    P.index_add_p: _index_add,
    # windows and gathers
    P.conv_p: _conv, P.conv_input_grad_p: _conv_input_grad,
    P.conv_filter_grad_p: _conv_filter_grad,
    P.window_max_p: _window_max, P.window_max_grad_p: _window_max_grad,
    P.window_sum_p: _window_sum, P.window_sum_grad_p: _window_sum_grad,
    P.take_p: _take, P.take_grad_p: _take_grad,
    # the loop, given its body built as `step` (see `build`)
    P.scan_p: scan,
}

UNSUPPORTED = "the tf backend cannot lower the primitive {name!r} (used at {where})"


def build(graph: Graph, check_numerics: bool = False):
    """``body(inputs, params) -> list of tensors`` computing `graph` with TF ops.

    `inputs` are the graph's inputs (data, then carried state), `params` one tensor or
    variable per ``graph.param_vars``. Constants become TF constants of their dtype. With
    `check_numerics`, every floating result is checked for NaN/Inf (the error names the
    equation)."""
    for eqn in graph.eqns:
        if eqn.prim not in LOWERINGS:
            raise BackendError(UNSUPPORTED.format(name=eqn.prim.name, where=eqn.source.short()),
                               trace=eqn.source.frames)
    consts = [np.asarray(v) for v in graph.const_values]
    steps = {id(eqn): build(eqn.attrs["body"], check_numerics)      # each loop's body, once
             for eqn in graph.eqns if eqn.prim is P.scan_p}

    def body(inputs, params):
        env = {id(var): value for var, value in zip(graph.inputs, inputs)}
        env.update((id(var), value) for var, value in zip(graph.param_vars, params))
        env.update((id(var), tf.constant(value)) for var, value in zip(graph.consts, consts))

        def read(atom):
            if isinstance(atom, Literal):
                return tf.constant(atom.value, dtype=tf.as_dtype(atom.dtype))
            return env[id(atom)]

        for i, eqn in enumerate(graph.eqns):
            attrs = dict(eqn.attrs, step=steps[id(eqn)]) if id(eqn) in steps else eqn.attrs
            with tf.name_scope(op_name(i)):
                try:
                    out = LOWERINGS[eqn.prim](*(read(a) for a in eqn.inputs), **attrs)
                except BackendError:                # raised in a loop's body, at its equation
                    raise
                except Exception as error:
                    raise backend_error("tf", error, graph, i) from error
                several = eqn.prim.multiple_results         # a loop (its body checks itself)
                if check_numerics and not several and eqn.outputs[0].aval.dtype.kind == "f":
                    out = tf.debugging.check_numerics(out, f"{op_name(i)}: {eqn.prim.name}")
            env.update((id(var), value) for var, value in zip(eqn.outputs, out if several
                                                              else [out]))
        return [read(atom) for atom in graph.outputs]

    return body
