"""`scan` on TensorFlow: one `tf.while_loop` whose body is the scan's body graph, built once.

``carry_out…, ys… = scan(consts…, carry_in…, xs…)`` runs as::

    i = 0;  h = carry_in                                 # loop variables: i, h, the ys
    while i < length:
        t = length − 1 − i if reverse else i
        h, y = step(consts, h, xs_T[t])                  # xs_T: each xs with its time axis first
        ys_T[t] = y;  i += 1
    carry_out = h;  ys = ys_T with its time axis moved to y_axes[j]

Each xs is read one step at a time from a `tf.TensorArray` (its time axis moved first, then
unstacked), each y written into one and stacked at the end: TF's own `tf.scan` and Keras' RNN
loop do the same, and TensorArrays keep gradients per step (`tf.GradientTape` differentiates
the loop: the trainer's forward graphs rely on it). The consts are read once, before the loop
(a variable is read once, not at every step), and captured by the body as loop invariants.
The function built is the same size for any `length` (its body traced once), and
every shape in it is static.

TF names a body's ops inside the loop's own name: ``e3/while/e7/MatMul`` is equation 7 of the
body of the loop at equation 3, and `located` follows such names into the body, so an error
raised inside a loop names the user's line as it does for the unrolled graph.
"""
from __future__ import annotations

import re

import tensorflow as tf

from flux.ir import primitives as P

__all__ = ["scan", "located", "PARALLEL_ITERATIONS"]

PARALLEL_ITERATIONS = 32
"""How many steps TF may have in flight at once: a step's work that does not wait on the
carried values (``x_t W``) runs ahead of the recurrence (Keras' RNN loop uses 32)."""


def _time_first(x, axis: int):
    """x with its axis `axis` moved to the front."""
    if axis == 0:
        return x
    return tf.transpose(x, [axis, *range(axis), *range(axis + 1, len(x.shape))])


def _time_to(y, axis: int):
    """y (time first) with its time axis moved to `axis`."""
    if axis == 0:
        return y
    return tf.transpose(y, [*range(1, axis + 1), 0, *range(axis + 1, len(y.shape))])


def scan(*args, step, body, length, n_consts, n_carry, x_axes, y_axes, reverse):
    """The scan of `body` on the tensors `args` (see the module); `step` is `body` built with
    TF ops (``step(inputs, params) -> outputs``, `flux_tf._lower.build`)."""
    k, m = n_consts, n_carry
    consts = [tf.convert_to_tensor(c) for c in args[:k]]         # variables read here, once
    carry, xs = list(args[k:k + m]), args[k + m:]
    seqs = [tf.TensorArray(x.dtype, size=length, element_shape=v.aval.shape)
            .unstack(_time_first(x, a)) for x, a, v in zip(xs, x_axes, body.inputs[k + m:])]
    ys = [tf.TensorArray(tf.as_dtype(v.aval.dtype), size=length, element_shape=v.aval.shape)
          for v in body.outputs[m:]]

    def loop(i, carry, ys):
        t = length - 1 - i if reverse else i
        outs = step([*consts, *carry, *(s.read(t) for s in seqs)], [])
        return i + 1, outs[:m], [y.write(t, out) for y, out in zip(ys, outs[m:])]

    _, carry, ys = tf.while_loop(lambda i, *_: i < length, loop, (tf.constant(0), carry, ys),
                                 parallel_iterations=PARALLEL_ITERATIONS,
                                 maximum_iterations=length, swap_memory=False)
    return [*carry, *(_time_to(y.stack(), a) for y, a in zip(ys, y_axes))]


_IN_LOOP = re.compile(r"(?<![\w.])((?:e\d+/while(?:_\d+)?/)+e\d+)[/_]")


def located(graph, text: str) -> tuple:
    """``(graph, index)``: the equation inside a loop's body (of a loop in `graph`, at any
    depth) that the TF error message `text` names, or ``(graph, None)`` where it names none
    (`flux.backends.backend_error` then looks for one in `graph` itself)."""
    match = _IN_LOOP.search(text)
    if match is None:
        return graph, None
    *loops, index = (int(name[1:]) for name in match.group(1).split("/")[::2])   # e3 → 3
    inner = graph
    for i in loops:
        if i >= len(inner.eqns) or inner.eqns[i].prim is not P.scan_p:
            return graph, None
        inner = inner.eqns[i].attrs["body"]
    return (inner, index) if index < len(inner.eqns) else (graph, None)
