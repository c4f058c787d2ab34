"""Running lowered graphs: one bound executor per graph (so per input signature), Params
shared by every executor of a compiled model, MXNet errors mapped back to equations."""
from __future__ import annotations

import mxnet as mx
import numpy as np

from flux import BackendError, Compiled

from ._lower import equation_of, lower_graph, nd_array

__all__ = ["MXNetCompiled", "ParamStore", "Executable", "backend_error", "input_names",
           "param_names"]


def input_names(n: int) -> list[str]:
    """``data`` for one input, else ``data0``, ``data1``, ..."""
    return ["data"] if n == 1 else [f"data{i}" for i in range(n)]


def param_names(graph) -> list[str]:
    """A Variable name per Param: its attribute path, made unique (``p<i>`` if it has none)."""
    names, taken = [], set()
    for i in range(len(graph.params)):
        name = graph.param_names[i] if i < len(graph.param_names) else ""
        name = name or f"p{i}"
        while name in taken or name.startswith("data") or name.startswith("const"):
            name = f"param_{name}"
        taken.add(name)
        names.append(name)
    return names


class ParamStore:
    """One NDArray per Param, shared by all the executors of one compiled model.

    `sync` copies a Param's value in when it differs from the snapshot taken at the last copy
    (assignments and in-place writes alike), so every executor, for every input shape, sees
    the current values; there is only one copy to keep current.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self._arrays: dict[int, tuple] = {}      # id(Param) -> (Param, NDArray, snapshot)

    def array(self, p) -> mx.nd.NDArray:
        got = self._arrays.get(id(p))
        if got is None or got[1].shape != p.shape:
            value = np.asarray(p.value)
            got = self._arrays[id(p)] = (p, nd_array(value, self.ctx), value.copy())
        return got[1]

    def sync(self, ps) -> None:
        for p in ps:
            _, array, snapshot = self._arrays[id(p)]
            value = p.value
            if not np.array_equal(value, snapshot):
                array[:] = value.reshape(array.shape)
                np.copyto(snapshot, value)


class Executable:
    """A lowered graph bound to one executor: call it with the graph's flat input arrays."""

    def __init__(self, graph, store: ParamStore, ctx):
        self.graph = graph
        self.store = store
        self.lowered = lowered = lower_graph(graph, input_names(len(graph.inputs)),
                                             param_names(graph))
        self.params = list(graph.param_objs)
        self.inputs = [mx.nd.empty(lowered.shapes[n], ctx=ctx, dtype=lowered.dtypes[n])
                       for n in lowered.input_names]
        self.executor = None
        if lowered.symbol is not None:
            args = dict(zip(lowered.input_names, self.inputs))
            args.update((n, store.array(p)) for n, p in zip(lowered.param_names, self.params))
            args.update((n, nd_array(v, ctx)) for n, v in lowered.consts.items())
            try:
                self.executor = lowered.symbol.bind(ctx, args=args, grad_req="null")
            except mx.base.MXNetError as error:
                raise backend_error(error, graph) from error
        self.out_avals = [a.aval for a in graph.outputs]

    def __call__(self, *xs):
        try:
            self.store.sync(self.params)
            for array, x in zip(self.inputs, xs):
                array[:] = np.asarray(x).reshape(array.shape)
            outs = self.executor.forward(is_train=False) if self.executor else []
            results = []
            for i, ((kind, what), aval) in enumerate(zip(self.lowered.outputs, self.out_avals)):
                value = outs[what].asnumpy() if kind == "sym" else what
                if value.size != aval.size:
                    raise BackendError(f"mxnet backend: internal: output {i} has shape "
                                       f"{value.shape}; flux inferred {aval.shape}", trace=[])
                results.append(value.reshape(aval.shape).astype(aval.dtype, copy=False))
            return results
        except mx.base.MXNetError as error:
            raise backend_error(error, self.graph) from error


def backend_error(error: Exception, graph) -> BackendError:
    """An MXNet error as a BackendError at the equation its message names (its model frames)."""
    message = str(error).strip().splitlines()
    short = next((line for line in message if "Error in operator" in line),
                 message[0] if message else type(error).__name__)
    eqn = equation_of(graph, str(error))
    if eqn is None:
        return BackendError(f"mxnet backend: {short.strip()}", trace=[])
    source = eqn.source
    shapes = ", ".join(str(a.aval) for a in eqn.inputs)
    return BackendError(f"mxnet backend: error in {eqn.prim.name} ({shapes}): {short.strip()}\n"
                        f"  at {source.file}:{source.line}", trace=source.frames)


class MXNetCompiled(Compiled):
    """A flux model compiled for MXNet: every graph flux builds for it (forward, `back`,
    training steps, unrolled and carried-state graphs alike) runs as one bound executor, and
    all of them share one NDArray per Param (`ParamStore`)."""

    def __init__(self, model, backend, options):
        options = dict(options)
        ctx = options.pop("ctx", None) or mx.cpu()
        if options:
            raise TypeError(f"the mxnet backend takes the option ctx= only, given "
                            f"{sorted(options)}")
        super().__init__(model, backend, {})
        self.ctx = ctx
        self.store = ParamStore(ctx)

    def __repr__(self) -> str:
        return f"mxnet({self.model!r})"

    def lower(self, graph):
        return Executable(graph, self.store, self.ctx)
