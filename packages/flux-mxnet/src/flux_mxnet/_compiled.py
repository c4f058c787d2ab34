"""Running lowered graphs: one bound executor per graph (so per input signature), Params
shared by every executor of a compiled model, MXNet errors mapped back to equations."""
from __future__ import annotations

import re
import weakref

import mxnet as mx
import numpy as np

from flux import BackendError, Compiled, FluxTypeError
from flux._source import user_facing

from ._lower import equation_of, lower_graph, nd_array
from ._store import ParamStore, copy_in
from ._training import NATIVE, OptimiserState, TrainStep, Unsupported

__all__ = ["MXNetCompiled", "ParamStore", "Executable", "backend_error", "input_names",
           "param_names"]


def input_names(n: int) -> list[str]:
    """``data`` for one input, else ``data0``, ``data1``, ..."""
    return ["data"] if n == 1 else [f"data{i}" for i in range(n)]


def param_names(graph) -> list[str]:
    """A Variable name per Param: its attribute path, made unique (``p<i>`` if it has none)."""
    names, taken = [], set()
    for i in range(len(graph.param_vars)):
        name = graph.param_names[i] if i < len(graph.param_names) else ""
        name = name or f"p{i}"
        while name in taken or name.startswith("data") or name.startswith("const"):
            name = f"param_{name}"
        taken.add(name)
        names.append(name)
    return names


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
        self.input_shapes = [lowered.shapes[n] for n in lowered.input_names]
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
            for array, shape, x in zip(self.inputs, self.input_shapes, xs):
                copy_in(array, x, shape)
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


def mx_context(device) -> mx.Context:
    """The MXNet context for a ``ctx=``/``device=`` option: an `mx.Context`, ``"cpu"``,
    ``"gpu"``, ``"gpu:1"`` or None (the CPU)."""
    if device is None or isinstance(device, mx.Context):
        return device or mx.cpu()
    match = re.fullmatch(r"(cpu|gpu)(?::(\d+))?", str(device).strip().lower())
    if match is None:
        raise FluxTypeError(f"mxnet backend: ctx=/device= takes an mx.Context (mx.cpu(), "
                            f"mx.gpu(0)) or 'cpu', 'gpu', 'gpu:1'; found {device!r}")
    return mx.Context(match.group(1), int(match.group(2) or 0))


def usable_context(ctx) -> mx.Context:
    """`ctx` if MXNet can allocate on it, else a BackendError saying why (a GPU context on a
    CPU-only MXNet build fails only at the first allocation otherwise)."""
    if not isinstance(ctx, mx.Context):
        raise FluxTypeError(f"mxnet backend: ctx= takes an mx.Context (mx.cpu(), mx.gpu(0)), "
                            f"found {type(ctx).__name__}")
    try:
        mx.nd.zeros((1,), ctx=ctx).wait_to_read()
    except mx.base.MXNetError as error:
        reason = next((line.strip() for line in str(error).splitlines()
                       if line.startswith("MXNetError")), str(error).strip().splitlines()[-1])
        raise BackendError(f"mxnet backend: the context {ctx} cannot be used here: {reason}",
                           trace=[]) from error
    return ctx


class MXNetCompiled(Compiled):
    """A flux model compiled for MXNet: every graph flux builds for it (forward, `back`,
    training steps, unrolled and carried-state graphs alike) runs as one bound executor, and
    all of them share one NDArray per Param (`ParamStore`)."""

    def __init__(self, model, backend, options):
        options = dict(options)
        ctx, device = options.pop("ctx", None), options.pop("device", None)
        if options:
            raise TypeError(f"the mxnet backend takes the options ctx= and device=, given "
                            f"{sorted(options)}")
        if ctx is not None and device is not None:
            raise TypeError("the mxnet backend takes ctx= or device= (the same thing), not both")
        ctx = mx_context(device if device is not None else ctx)
        super().__init__(model, backend, {})
        self.ctx = usable_context(ctx)
        self.store = ParamStore(ctx)
        self._trainers: dict = {}                    # id(step) -> (step, TrainStep)
        self._optimisers = weakref.WeakKeyDictionary()     # optimiser -> OptimiserState

    def __repr__(self) -> str:
        return f"mxnet({self.model!r})"

    def lower(self, graph):
        return Executable(graph, self.store, self.ctx)

    def _optimiser_state(self, opt) -> OptimiserState:
        found = self._optimisers.get(opt)
        if found is None:
            found = self._optimisers[opt] = OptimiserState(opt, self.store)
        return found

    def train_step(self, loss, opt, x, y) -> float:
        """Forward, MXNet's backward and the optimiser's update on the MXNet side (see
        `_training`); the Params fetch their new values when next read. Optimisers other
        than SGD, Momentum and ADAM take core's step."""
        if type(opt) not in NATIVE:
            return super().train_step(loss, opt, x, y)
        try:
            step, leaves = self.training_step(loss, x, y)
            found = self._trainers.get(id(step))
            trainer = found[1] if found is not None and found[0] is step else None
            if trainer is None:
                try:
                    trainer = TrainStep(self, step, (input_names, param_names))
                except Unsupported:
                    trainer = _CORE_STEP
                except mx.base.MXNetError as error:
                    raise backend_error(error, step.objective) from error
                self._trainers[id(step)] = (step, trainer)
            if trainer is _CORE_STEP:
                return super().train_step(loss, opt, x, y)
            try:
                return trainer(leaves, self._optimiser_state(opt))
            except mx.base.MXNetError as error:
                raise backend_error(error, step.objective) from error
        except Exception as error:
            raise user_facing(error) from error.__cause__

    def apply_update(self, opt, ps, grads) -> None:
        """`flux.update` on MXNet: the gradients go in, MXNet's update operators run on the
        shared parameter arrays."""
        if type(opt) not in NATIVE:
            return super().apply_update(opt, ps, grads)
        for p in ps:
            self.store.record(p)
        self.store.sync(ps)
        state = self._optimiser_state(opt)
        state.update(ps, [nd_array(np.asarray(g, p.dtype), self.ctx) for p, g in zip(ps, grads)])


_CORE_STEP = object()   # a step that runs as core's (gradients here, update in NumPy)
