"""A graph planned once per input signature for the GPU (`Plan`): the scheduled steps
(`_fusion.schedule`), each a fused kernel or one CuPy call (cuBLAS matmuls, CuPy's
reductions, views, concatenation, indexing), and every intermediate buffer allocated once,
from CuPy's memory pool, when the plan is made and reused by every call.

`Plan.run(inputs, params)` takes and returns device arrays (the returned ones are the plan's
own buffers: the caller copies them). Errors map to the equation that raised them; running
out of GPU memory says how much was asked for.
"""
from __future__ import annotations

import numpy as np

from flux.backends import equation_error, first_line, is_basic_index, lift_loops
from flux import BackendError
from flux.ir import Literal
from flux.ir import primitives as P

from ._fusion import Group, schedule
from ._kernels import kernel_for

__all__ = ["Plan"]


class Plan:
    """`graph` on `runtime` (see the module docstring)."""

    def __init__(self, graph, runtime):
        graph = lift_loops(graph)        # (a loop's input products: one long GEMM, not L)
        self.graph, self.runtime = graph, runtime
        self.steps = schedule(graph)
        xp = runtime.xp
        self.slot: dict[int, int] = {}
        self.values: list = []                       # the value of each slot, this call

        def slot(var) -> int:
            if id(var) not in self.slot:
                self.slot[id(var)] = len(self.values)
                self.values.append(None)
            return self.slot[id(var)]

        self.input_slots = [slot(v) for v in graph.inputs]
        self.param_slots = [slot(v) for v in graph.param_vars]
        with runtime.on_device():
            for var, value in zip(graph.consts, graph.const_values):
                self.values[slot(var)] = runtime.to_device(np.asarray(value))
            self.ops = []
            for step in self.steps:
                try:
                    self.ops.append(self._op(step, slot, xp))
                except runtime.out_of_memory as error:
                    raise _memory_error(error, step) from error
        self.output_slots = [None if isinstance(a, Literal) else slot(a) for a in graph.outputs]
        self.literals = [runtime.to_device(np.asarray(a.value)) if isinstance(a, Literal)
                         else None for a in graph.outputs]

    # -- building the steps -------------------------------------------------------------------

    def _buffer(self, var):
        return self.runtime.xp.empty(var.aval.shape, var.aval.dtype)

    def _op(self, step, slot, xp):
        values = self.values
        if isinstance(step, Group):
            kernel = kernel_for(step, self.runtime)
            ins = [slot(v) for v in step.inputs]
            outs = [self._buffer(v) for v in step.outputs]
            for var, buffer in zip(step.outputs, outs):
                values[slot(var)] = buffer
            def run_group(vals):
                kernel([_contiguous(xp, vals[i]) for i in ins], outs)
            return run_group
        eqn = step
        if eqn.prim is P.scan_p:
            return self._loop(eqn, slot, xp)
        out = slot(eqn.outputs[0])
        ins = [self._atom(a, slot) for a in eqn.inputs]
        build = _OPS.get(eqn.prim, _impl)
        return build(self, eqn, ins, out, xp)

    def _loop(self, eqn, slot, xp):
        """A `scan`: the body planned once (its own buffers), run once per step; the carried
        values live in the loop's output buffers (copied in at the start, and from the
        body's results after each step), each step's ys are copied into their stacked
        buffers. No host synchronisation: a captured CUDA graph holds the whole loop."""
        attrs = eqn.attrs
        body = Plan(attrs["body"], self.runtime)
        k, m, length = attrs["n_consts"], attrs["n_carry"], attrs["length"]
        ins = [self._atom(a, slot) for a in eqn.inputs]
        buffers = [self._buffer(v) for v in eqn.outputs]
        for var, buffer in zip(eqn.outputs, buffers):
            self.values[slot(var)] = buffer
        carry, ys = buffers[:m], buffers[m:]
        order = range(length - 1, -1, -1) if attrs["reverse"] else range(length)
        x_index = [[P.step_index(a, t) for t in range(length)] for a in attrs["x_axes"]]
        y_index = [[P.step_index(a, t) for t in range(length)] for a in attrs["y_axes"]]

        def run_loop(vals):
            consts = [_get(vals, a) for a in ins[:k]]
            for buffer, a in zip(carry, ins[k:k + m]):
                xp.copyto(buffer, _get(vals, a))
            xs = [_get(vals, a) for a in ins[k + m:]]
            for t in order:
                outs = body.run(consts + carry + [x[ix[t]] for x, ix in zip(xs, x_index)], [])
                for y, out, iy in zip(ys, outs[m:], y_index):   # (before the carried values
                    y[iy[t]] = out                              #  they may show change)
                new = outs[:m]
                if any(_within(out, carry[:j] + carry[j + 1:]) for j, out in enumerate(new)):
                    # (h′ is another h, or a view of it: copy them all first)
                    new = [out.copy() for out in new]
                for buffer, out in zip(carry, new):
                    if out is not buffer:
                        xp.copyto(buffer, out)
        return run_loop

    def _atom(self, atom, slot):
        """A slot number, or (for a Literal) a constant device array in a 1-tuple."""
        if isinstance(atom, Literal):
            return (self.runtime.to_device(np.asarray(atom.value)),)
        return slot(atom)

    # -- running ------------------------------------------------------------------------------

    def run(self, inputs, params) -> list:
        """Run the plan on device arrays; returns the graph's outputs (the plan's buffers)."""
        vals = self.values
        for i, x in zip(self.input_slots, inputs):
            vals[i] = x
        for i, p in zip(self.param_slots, params):
            vals[i] = p
        index = 0
        try:
            for op in self.ops:
                op(vals)
                index += 1
        except self.runtime.out_of_memory as error:
            raise _memory_error(error, self.steps[index]) from error
        except BackendError:            # (raised inside a loop's body: it names its equation)
            raise
        except Exception as error:
            step = self.steps[index]
            eqn = step.eqns[0] if isinstance(step, Group) else step
            raise equation_error("cupy", error, eqn) from error
        return [vals[i] if i is not None else lit
                for i, lit in zip(self.output_slots, self.literals)]


def _within(x, buffers) -> bool:
    """Whether `x` is one of `buffers` or a view of one."""
    return any(x is b or getattr(x, "base", None) is b for b in buffers)


def _memory_error(error, step):
    eqn = step.eqns[0] if isinstance(step, Group) else step
    aval = eqn.outputs[0].aval
    size = aval.size * aval.dtype.itemsize
    reason = first_line(error) or type(error).__name__
    return equation_error("cupy", error, eqn,
                          message=f"out of memory allocating {size:,} bytes for a result of "
                                  f"shape {aval.shape} {aval.dtype} ({reason})")


def _contiguous(xp, x):
    """`x` itself when C-contiguous (kernels index inputs as such), else a contiguous copy."""
    return x if x.flags.c_contiguous else xp.ascontiguousarray(x).reshape(x.shape)


def _get(vals, atom):
    return atom[0] if isinstance(atom, tuple) else vals[atom]


# -- one CuPy call per unfused primitive: builder(plan, eqn, ins, out, xp) -> op(vals) --------


def _matmul(plan, eqn, ins, out, xp):
    buffer = plan.values[out] = plan._buffer(eqn.outputs[0])
    a, b = ins

    def run(vals):
        xp.matmul(_get(vals, a), _get(vals, b), out=buffer)
    return run


def _reduction(function):
    def build(plan, eqn, ins, out, xp):
        axes, keepdims = eqn.attrs["axes"], eqn.attrs["keepdims"]
        (x,) = ins
        if not axes:
            def alias(vals):
                vals[out] = _get(vals, x)
            return alias
        buffer = plan.values[out] = plan._buffer(eqn.outputs[0])
        reduce = getattr(xp, function)

        def run(vals):
            reduce(_get(vals, x), axis=axes, keepdims=keepdims, out=buffer)
        return run
    return build


def _view(make):
    def build(plan, eqn, ins, out, xp):
        (x,) = ins
        attrs = eqn.attrs

        def run(vals):
            vals[out] = make(xp, _get(vals, x), attrs)
        return run
    return build


def _concatenate(plan, eqn, ins, out, xp):
    buffer = plan.values[out] = plan._buffer(eqn.outputs[0])
    axis = eqn.attrs["axis"]

    def run(vals):
        xp.concatenate([_get(vals, a) for a in ins], axis=axis, out=buffer)
    return run


def _device_index(plan, index):
    return tuple(plan.runtime.to_device(i) if isinstance(i, np.ndarray) else i for i in index)


def _getitem(plan, eqn, ins, out, xp):
    index = _device_index(plan, eqn.attrs["index"])
    (x,) = ins

    def run(vals):
        vals[out] = _get(vals, x)[index]
    return run


def _index_add(plan, eqn, ins, out, xp):
    buffer = plan.values[out] = plan._buffer(eqn.outputs[0])
    raw = eqn.attrs["index"]
    index = _device_index(plan, raw)
    (g,) = ins
    if is_basic_index(raw):
        def run(vals):
            buffer.fill(0)
            buffer[index] = _get(vals, g)
    elif plan.runtime.standin:
        def run(vals):
            buffer.fill(0)
            np.add.at(buffer, index, _get(vals, g))
    else:
        import cupyx

        def run(vals):
            buffer.fill(0)
            cupyx.scatter_add(buffer, index, _get(vals, g))
    return run


def _impl(plan, eqn, ins, out, xp):
    """Any other primitive (an elementwise one on a dtype kernels do not handle): its NumPy
    implementation, which CuPy arrays take through NumPy's dispatch protocols."""
    impl, attrs = eqn.prim.impl, eqn.attrs
    dtype = eqn.outputs[0].aval.dtype

    def run(vals):
        vals[out] = xp.asarray(impl(*(_get(vals, a) for a in ins), **attrs)).astype(
            dtype, copy=False)
    return run


_OPS = {
    P.matmul_p: _matmul,
    P.reduce_sum_p: _reduction("sum"),
    P.reduce_max_p: _reduction("max"),
    P.reshape_p: _view(lambda xp, x, a: x.reshape(a["shape"])),
    P.transpose_p: _view(lambda xp, x, a: x.transpose(a["perm"])),
    P.broadcast_to_p: _view(lambda xp, x, a: xp.broadcast_to(x, a["shape"])),
    P.stop_gradient_p: _view(lambda xp, x, a: x),
    P.concatenate_p: _concatenate,
    P.getitem_p: _getitem,
    P.index_add_p: _index_add,
}
