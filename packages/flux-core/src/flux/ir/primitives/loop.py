"""The loop primitive: `scan`, one body graph run once per step over carried values.

``carry_out…, ys… = scan(consts…, carry_in…, xs…; body, length, n_consts, n_carry, x_axes,
y_axes, reverse)``

`body` is a closed `Graph` (no params: what it reads from outside are its first `n_consts`
inputs, the loop invariants). Its inputs are the consts, the `n_carry` carried values, then one
step's slice of each xs; its outputs are the new carried values, then that step's ys. At step
t (``t = 0 … length−1``, or ``length−1 … 0`` when `reverse`) the body takes ``xs[i]`` indexed
at t along ``x_axes[i]``; the carried values run from step to step (``carry_out`` is their value
after the last step) and each y is stacked along ``y_axes[j]`` at position t. A carried value
keeps its shape and dtype through the body (the shape rule checks it), so one body serves every
step.

In formulas, for ``reverse=False``: ``h₀ = carry_in``, ``(h_{t+1}, y_t) = body(c, h_t, x_t)``,
``carry_out = h_length``, ``ys = stack(y_0 … y_{length−1})``.

`unroll` makes these (`flux.transforms.unroll`); its gradient, a reverse scan over what
backpropagation through time keeps, is `flux.transforms.loop_grad`. `scan` is not in
`PRIMITIVES`: a backend that runs loops says so (``Backend.loops = True``) and lowers it;
every other backend is given fully unrolled graphs instead.

>>> from flux.ir import Eqn, Var
>>> from flux.ir.primitives import add_p
>>> body_graph = Graph([Var(Aval((), 'f')), Var(Aval((), 'f'))], [], [], [], [], [], [])
>>> body_graph.eqns = [Eqn(add_p, body_graph.inputs, [Var(Aval((), 'f'))], {})]
>>> body_graph.outputs = [body_graph.eqns[0].outputs[0]] * 2      # h + x, as carry and y
>>> run = scan_p.impl(np.float32(0), np.arange(4, dtype='f'), body=body_graph, length=4,
...                   n_consts=0, n_carry=1, x_axes=(0,), y_axes=(0,), reverse=False)
>>> float(run[0]), run[1]                                         # a running sum
(6.0, array([0., 1., 3., 6.], dtype=float32))
"""
from __future__ import annotations

import numpy as np

from flux.errors import ShapeError
from flux.ir.graph import Aval, Graph, Literal
from flux.ir.trace import Primitive

__all__ = ["scan_p", "evaluate", "step_index", "scan_parts"]


def scan_parts(args, n_consts: int, n_carry: int) -> tuple:
    """``(consts, carry, xs)``: a scan's inputs (atoms, avals or arrays) split by role."""
    args = list(args)
    return args[:n_consts], args[n_consts:n_consts + n_carry], args[n_consts + n_carry:]


def _drop(shape: tuple, axis: int) -> tuple:
    return shape[:axis] + shape[axis + 1:]


def _scan_shape(*avals, body, length, n_consts, n_carry, x_axes, y_axes, reverse):
    if length < 1:
        raise ShapeError(f"scan: a loop over a sequence of length {length}; a sequence needs "
                         f"at least one step")
    if len(avals) != len(body.inputs):
        raise ShapeError(f"scan: {len(avals)} operands for a body of {len(body.inputs)} inputs")
    consts, carry, xs = scan_parts(avals, n_consts, n_carry)
    inner = [v.aval for v in body.inputs]
    for i, (a, b) in enumerate(zip(consts + carry, inner)):
        if a != b:
            raise ShapeError(f"scan: operand {i} is {a}, the body takes {b}")
    for i, (a, out) in enumerate(zip(carry, body.outputs)):
        if a != out.aval:
            raise ShapeError(f"scan: carried value {i} enters the body as {a} and leaves it as "
                             f"{out.aval}; a carried value keeps its shape and dtype")
    if len(x_axes) != len(xs) or len(y_axes) != len(body.outputs) - n_carry:
        raise ShapeError("scan: one time axis per xs and per ys")
    for x, axis, b in zip(xs, x_axes, inner[n_consts + n_carry:]):
        if not 0 <= axis < x.ndim or x.shape[axis] != length:
            raise ShapeError(f"scan: a sequence of shape {x.shape} has no axis {axis} of the "
                             f"loop's length {length}")
        if Aval(_drop(x.shape, axis), x.dtype) != b:
            raise ShapeError(f"scan: a step of a sequence of shape {x.shape} is not the "
                             f"body's {b}")
    ys = []
    for out, axis in zip(body.outputs[n_carry:], y_axes):
        shape = out.aval.shape
        if not 0 <= axis <= len(shape):
            raise ShapeError(f"scan: cannot stack steps of shape {shape} along axis {axis}")
        ys.append(Aval(shape[:axis] + (length,) + shape[axis:], out.aval.dtype))
    return list(carry) + ys


def evaluate(graph: Graph, args) -> list:
    """Run `graph` on concrete arrays with each primitive's NumPy implementation (the
    reference interpreter; backends plan graphs instead)."""
    env = {id(v): a for v, a in zip(graph.inputs, args)}
    env.update((id(v), p.value) for v, p in zip(graph.param_vars, graph.param_objs))
    env.update((id(v), c) for v, c in zip(graph.consts, graph.const_values))

    def read(atom):
        return atom.value if isinstance(atom, Literal) else env[id(atom)]

    for eqn in graph.eqns:
        outs = eqn.prim.impl(*(read(a) for a in eqn.inputs), **eqn.attrs)
        for var, out in zip(eqn.outputs, outs if eqn.prim.multiple_results else [outs]):
            env[id(var)] = out
    return [np.asarray(read(a)) for a in graph.outputs]


def step_index(axis: int, t: int) -> tuple:
    """The index of step `t` along `axis` (``(slice(None),) * axis + (t,)``)."""
    return (slice(None),) * axis + (t,)


def _scan_impl(*args, body, length, n_consts, n_carry, x_axes, y_axes, reverse):
    consts, carry, xs = scan_parts(args, n_consts, n_carry)
    ys = None
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        step = [np.asarray(x)[step_index(a, t)] for x, a in zip(xs, x_axes)]
        outs = evaluate(body, consts + carry + step)
        carry = outs[:n_carry]
        if ys is None:
            ys = [np.empty(o.shape[:a] + (length,) + o.shape[a:], o.dtype)
                  for o, a in zip(outs[n_carry:], y_axes)]
        for y, o, a in zip(ys, outs[n_carry:], y_axes):
            y[step_index(a, t)] = o
    return [np.asarray(c) for c in carry] + ys


scan_p = Primitive("scan", impl=_scan_impl, shape_rule=_scan_shape, multiple_results=True)
"""The loop primitive (see the module docstring); its gradient is `flux.transforms.loop_grad`."""
