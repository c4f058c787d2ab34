"""The optimiser's update on the GPU: the optimiser's own `rule` (core's formula, written with
operators) traced once per parameter shape into a flux graph and fused into one kernel that
updates the parameter and its slots in place. The kernel also takes a flag, `ok`, computed on
the GPU from the loss: a step whose loss is not finite changes nothing, without the host
having to look at the loss first (so a whole training step can be one CUDA graph)."""
from __future__ import annotations

import numpy as np

import flux
from flux.backends import flatten_args, trace
from flux.ir import Aval

from ._fusion import Group, schedule
from ._kernels import kernel_for
from ._plan import Plan

__all__ = ["Update", "hyper_names", "counters"]


def counters(opt) -> list[bool]:
    """For each slot of `opt`: whether it is a step counter (kept on the host)."""
    return [isinstance(value, int) for value in opt.initial_slots()]


def hyper_names(opt) -> list[str]:
    """The values `opt.rule` reads from its hyper-parameter dict, in a fixed order."""
    names = list(opt.hyper())
    return names + (["c1", "c2"] if hasattr(opt, "bias_corrections") else [])


def hyper_values(opt, t: int) -> list[float]:
    """The hyper-parameters of an update that is the `t`-th (counted from 1) of a Param."""
    h = opt.hyper()
    if hasattr(opt, "bias_corrections"):
        h["c1"], h["c2"] = opt.bias_corrections(h, t)
    return [h[name] for name in hyper_names(opt)]


class Update:
    """The update of Params of one shape and dtype by `opt`: ``update(p, g, slots, hyper,
    ok)`` on device arrays, `p` and the float slots written in place."""

    def __init__(self, opt, shape, dtype, runtime):
        self.runtime = runtime
        is_counter = counters(opt)
        names = hyper_names(opt)
        n_slots = sum(1 for c in is_counter if not c)

        def update(p, g, *rest):
            slots, hyper, ok = rest[:n_slots], rest[n_slots:-1], rest[-1]
            it = iter(slots)
            full = tuple(0 if c else next(it) for c in is_counter)
            step, new = opt.rule(g, full, dict(zip(names, hyper)), sqrt=np.sqrt)
            new = [n for n, c in zip(new, is_counter) if not c]
            return (np.where(ok, p - step, p),
                    *(np.where(ok, n, s) for n, s in zip(new, slots)))

        param = Aval(shape, dtype)
        avals = [param, param] + [param] * n_slots + [Aval((), dtype)] * len(names) + [
            Aval((), np.bool_)]
        _, tree = flatten_args(tuple(range(len(avals))))
        self.graph = graph = trace(flux.net(update), avals, tree)
        steps = schedule(graph)
        self.kernel = None
        if len(steps) == 1 and isinstance(steps[0], Group) and len(steps[0].outputs) == len(
                graph.outputs) and all(a is b for a, b in zip(steps[0].outputs, graph.outputs)):
            group = steps[0]
            self.kernel = kernel_for(group, runtime, restrict=False)
            position = {id(v): i for i, v in enumerate(graph.inputs)}
            self.order = [position[id(v)] for v in group.inputs]
        else:                                  # (a dtype kernels do not handle)
            self.plan = Plan(graph, runtime)

    def __call__(self, p, g, slots, hyper, ok) -> None:
        args = [p, g, *slots, *hyper, ok]
        if self.kernel is not None:
            self.kernel([args[i] for i in self.order], [p, *slots])
        else:
            for target, value in zip([p, *slots], self.plan.run(args, [])):
                self.runtime.xp.copyto(target, value)
