"""The optimiser's update on the GPU: the optimiser's own `rule` (core's formula, written with
operators) traced into a flux graph on 0-d values and fused into one kernel that updates
every Param of one dtype and its slots in place, all Params at once (`MultiUpdate`: each
thread finds its Param from a table of offsets). The kernel also takes a flag computed on the
GPU from the loss: a step whose loss is not finite changes nothing, without the host having to
look at the loss first (so a whole training step can be one CUDA graph)."""
from __future__ import annotations

import numpy as np

import flux
from flux.backends import flatten_args, trace
from flux.ir import Aval

from ._codegen import multi_tensor_source, numpy_source
from ._fusion import Group, schedule
from ._kernels import THREADS, MAX_BLOCKS
from ._runtime import nvrtc_compile

__all__ = ["MultiUpdate", "hyper_names", "counters"]


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


class MultiUpdate:
    """The update of Params of one dtype by `opt` (see the module docstring): ``update(params,
    grads, slots, hyper, flag)`` with lists of device arrays (one per Param; `slots` one list
    per Param), `hyper` the (Params x hyper-parameters) device array and `flag` a 0-d bool."""

    def __init__(self, opt, dtype, runtime):
        self.runtime = runtime
        is_counter = counters(opt)
        names = hyper_names(opt)
        self.n_slots = n_slots = sum(1 for c in is_counter if not c)
        self.scaled = scaled = opt.clip_norm is not None     # a global factor for every g
        n_globals = 2 if scaled else 1

        def update(p, g, *rest):
            slots, hyper = rest[:n_slots], rest[n_slots:-n_globals]
            ok = rest[-1]
            if scaled:
                g = g * rest[-2]
            it = iter(slots)
            full = tuple(0 if c else next(it) for c in is_counter)
            step, new = opt.rule(g, full, dict(zip(names, hyper)), sqrt=np.sqrt, clip=np.clip,
                                 p=p)
            new = [n for n, c in zip(new, is_counter) if not c]
            return (np.where(ok, p - step, p),
                    *(np.where(ok, n, s) for n, s in zip(new, slots)))

        scalar = Aval((), dtype)
        avals = [scalar] * (2 + n_slots + len(names) + (1 if scaled else 0)) + [
            Aval((), np.bool_)]
        _, tree = flatten_args(tuple(range(len(avals))))
        graph = trace(flux.net(update), avals, tree)
        steps = schedule(graph)
        if not (len(steps) == 1 and isinstance(steps[0], Group)
                and [id(v) for v in steps[0].outputs] == [id(v) for v in graph.outputs]):
            raise TypeError(f"the cupy backend cannot fuse {type(opt).__name__}'s update for "
                            f"{np.dtype(dtype)} Params")
        group = steps[0]
        self.n_arrays = 2 + n_slots
        if runtime.standin:
            source, env = numpy_source(group, "update", broadcast=False)
            exec(compile(source, "<flux-cupy update>", "exec"), env)
            position = {id(v): i for i, v in enumerate(graph.inputs)}
            self._order = [position[id(v)] for v in group.inputs]
            self._fn = env["update"]
        self.cuda = multi_tensor_source(group, graph, self.n_arrays, "flux_update",
                                        n_globals=n_globals)
        if runtime.check_kernels:
            nvrtc_compile(self.cuda, "flux_update")
        if not runtime.standin:
            self._raw = runtime.xp.RawKernel(self.cuda, "flux_update", options=("-std=c++17",))
        self._tables: dict = {}

    def __call__(self, params, grads, slots, hyper, flag, scale=None) -> None:
        """Update every Param; `scale` (a 0-d device array) multiplies every gradient first
        when the optimiser clips by norm."""
        arrays = [params, grads] + [[s[k] for s in slots] for k in range(self.n_slots)]
        globals_ = [scale, flag] if self.scaled else [flag]
        if self.runtime.standin:
            for i, row in enumerate(zip(*arrays)):
                args = [*row, *(hyper[i, k, ...] for k in range(hyper.shape[1])), *globals_]
                targets = [row[0], *row[2:]]
                for target, value in zip(targets, self._fn(*(args[j] for j in self._order))):
                    np.copyto(target, value, casting="unsafe")
            return
        tables, offsets, total = self._table(arrays)
        if total:
            grid = (max(1, min(MAX_BLOCKS, -(-total // THREADS))),)
            self._raw(grid, (THREADS,), (*tables, offsets, hyper, *globals_,
                                         np.int32(len(params))))

    def _table(self, arrays):
        """The device tables of the arrays' pointers and offsets (made again only when an
        array moved: the Params' and the plan's buffers do not)."""
        key = tuple(a.data.ptr for column in arrays for a in column)
        found = self._tables.get(key)
        if found is None:
            xp = self.runtime.xp
            sizes = [a.size for a in arrays[0]]
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
            tables = [xp.asarray(np.array([a.data.ptr for a in column], np.uint64))
                      for column in arrays]
            found = self._tables[key] = (tables, xp.asarray(offsets), int(offsets[-1]))
        return found
