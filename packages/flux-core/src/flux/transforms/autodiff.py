"""Reverse-mode autodiff as an IR-to-IR transformation.

`vjp(graph)` returns one graph that computes the forward outputs and the gradients: it replays
the forward equations, then walks them backwards applying each primitive's gradient rule
(written with traced operations, so the backward pass is ordinary IR that every backend runs).
Backward equations keep the source of the forward equation they differentiate, so an error in
the backward pass still points at the user's line.
"""
from __future__ import annotations

import numpy as np

from flux.errors import FluxTypeError
from flux.ir import primitives as P
from flux.ir.trace import Trace, Tracer
from flux.ir.graph import Graph, Literal, Var
from flux.ir.passes import dce, maybe_check
from flux.transforms.loop_grad import scan_split

SPLIT_RULES = {P.scan_p: scan_split}
"""Primitives whose gradient needs more of the forward pass than their inputs and outputs (a
loop's residuals): ``rule(vjp, inputs, active, **attrs) -> (outputs, pullback)`` replaces the
equation in the forward pass, and ``pullback(cotangents)`` gives the inputs' cotangents."""


def _differentiable(var) -> bool:
    return var.aval.dtype.kind in "fc"


def vjp(graph: Graph, wrt_inputs=None, wrt_params: bool = True, seed=None) -> Graph:
    """Forward outputs and gradients in one graph.

    The result's inputs are ``graph.inputs`` followed, when `seed` is None, by one cotangent
    input per output; its outputs are ``graph.outputs``, then the gradient of each input
    flagged in `wrt_inputs`, then (if `wrt_params`) the gradient of each param. With a number
    as `seed`, every output's cotangent is that number (use 1.0 for a scalar loss). Carried
    hidden state (``graph.carry_in``/``carry_out``) is passed through without gradients.
    """
    n_state_in, n_state_out = len(graph.carry_in), len(graph.carry_out)
    n_user_in = len(graph.inputs) - n_state_in
    wrt_inputs = list(wrt_inputs) if wrt_inputs is not None else [True] * n_user_in
    wrt_inputs = wrt_inputs[:n_user_in] + [False] * (len(graph.inputs) - n_user_in)
    n_user_out = len(graph.outputs) - n_state_out   # carried state gets no cotangent: the
    #                                                 gradient is truncated at call boundaries
    trace = Trace()
    with trace:
        env: dict[int, object] = {}
        new_inputs = [trace.new_input(v.aval) for v in graph.inputs]
        for old, new in zip(graph.inputs, new_inputs):
            env[id(old)] = new
        for old, p in zip(graph.param_vars, graph.param_objs):
            env[id(old)] = trace.param(p)
        for old, value in zip(graph.consts, graph.const_values):
            env[id(old)] = Tracer(trace.const(value), trace)

        def read(atom):
            return atom if isinstance(atom, Literal) else env[id(atom)]

        active: set[int] = set()
        for var, flag in zip(graph.inputs, wrt_inputs):
            if flag and _differentiable(var):
                active.add(id(var))
        if wrt_params:
            active.update(id(v) for v in graph.param_vars if _differentiable(v))

        pullbacks: dict[int, object] = {}
        for eqn in graph.eqns:
            trace.source_override = eqn.source
            flags = [isinstance(a, Var) and id(a) in active for a in eqn.inputs]
            split = SPLIT_RULES.get(eqn.prim)
            if split is not None and any(flags):
                outs, pullbacks[id(eqn)] = split(vjp, [read(a) for a in eqn.inputs], flags,
                                                 **eqn.attrs)
            else:
                outs = trace.bind(eqn.prim, [read(a) for a in eqn.inputs], eqn.attrs)
                outs = outs if eqn.prim.multiple_results else [outs]
            for old, new in zip(eqn.outputs, outs):
                env[id(old)] = new
            if any(flags):
                active.update(id(v) for v in eqn.outputs if _differentiable(v))

        cts: dict[int, object] = {}
        ct_inputs = []

        def accumulate(var, ct):
            if ct is None or not isinstance(var, Var) or id(var) not in active:
                return
            ct = _match(ct, var)
            old = cts.get(id(var))
            cts[id(var)] = ct if old is None else old + ct

        for out in graph.outputs[:n_user_out]:
            if seed is None:
                ct = trace.new_input(out.aval)
                ct_inputs.append(ct)
            else:
                ct = Tracer(trace.const(np.full(out.aval.shape, seed, out.aval.dtype)), trace)
            accumulate(out, ct)

        for eqn in reversed(graph.eqns):
            out = eqn.outputs[0]
            gs = [cts.pop(id(v), None) for v in eqn.outputs]
            g = gs[0]
            if all(c is None for c in gs) or not any(
                    isinstance(a, Var) and id(a) in active for a in eqn.inputs):
                continue
            trace.source_override = eqn.source
            if id(eqn) in pullbacks:
                for atom, ct in zip(eqn.inputs, pullbacks[id(eqn)](gs)):
                    accumulate(atom, ct)
                continue
            if eqn.prim.vjp is None:
                raise FluxTypeError(f"{eqn.prim.name} has no gradient rule (it is itself a "
                                    f"gradient: a gradient of it would be of second order)",
                                    trace=eqn.source.frames)
            in_cts = eqn.prim.vjp(g, read(out), *(read(a) for a in eqn.inputs), **eqn.attrs)
            for atom, ct in zip(eqn.inputs, in_cts):
                accumulate(atom, ct)
        trace.source_override = None

        grads = [_grad_or_zeros(cts, var) for var, flag in zip(graph.inputs, wrt_inputs) if flag]
        if wrt_params:
            grads += [_grad_or_zeros(cts, var) for var in graph.param_vars]
        outputs = [read(a) for a in graph.outputs] + grads
        result = trace.graph([t.variable for t in new_inputs + ct_inputs], outputs,
                             graph.in_tree, graph.out_tree)
    result.param_names = list(graph.param_names)
    result.carry_in, result.carry_out = list(graph.carry_in), list(graph.carry_out)
    return maybe_check(dce(result))


def _match(ct, var):
    """A cotangent as its primal: of its shape (a value broadcast by an elementwise primitive
    or `broadcast_to` gets the broadcast cotangent summed back down: the one place where
    broadcasting is undone) and of its dtype (a float32 value never gets a float64 gradient)."""
    if isinstance(ct, Literal):
        ct = P.broadcast_to_p(ct, shape=var.aval.shape)
    elif ct.shape != var.aval.shape:
        ct = sum_to(ct, var.aval.shape)
    if ct.dtype != var.aval.dtype:
        ct = P.convert_p(ct, dtype=var.aval.dtype)
    return ct


def sum_to(g, shape: tuple):
    """Sum a broadcast cotangent `g` back down to `shape` (the inverse of broadcasting)."""
    shape = tuple(shape)
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and g.shape[lead + i] != 1)
    out = P.reduce_sum_p(g, axes=axes, keepdims=False) if axes else g
    return P.reshape_p(out, shape=shape) if out.shape != shape else out


def _grad_or_zeros(cts, var):
    ct = cts.get(id(var))
    if ct is not None:
        return ct
    return P.broadcast_to_p(Literal(0, var.aval.dtype), shape=var.aval.shape)
