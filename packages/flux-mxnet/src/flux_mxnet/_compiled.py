"""Running graphs on MXNet: `MXNetCompiled` binds one executor per graph (so per input
signature); all of a compiled model's executors share one NDArray per Param (`ParamStore`);
MXNet errors map back to equations.

A training step with SGD, Momentum or ADAM is one executor too: core's objective graph
``loss(model(x), y)`` bound with gradient buffers for the floating Params, run as
``forward(is_train=True)`` and MXNet's own backward, then the optimiser's update with MXNet's
fused operators on the shared arrays (`_training`); other optimisers take core's step.
With ``kvstore=`` the step's gradients go through an MXNet kvstore (`_distributed`): averaged
over the workers of a data-parallel run before the update.
"""
from __future__ import annotations

import math
import weakref

import mxnet as mx
import numpy as np

from flux import BackendError, FluxTypeError, FluxValueError
from flux.backends import MirroredCompiled, ParamMirror, backend_error, parse_device

from ._distributed import KVStore
from ._symbol import copy_in, mx_dtype, mx_shape, nd_array, to_symbol
from ._training import NATIVE, OptimiserState

__all__ = ["MXNetCompiled", "ParamStore", "Executable", "mx_error", "mx_context"]


class ParamStore(ParamMirror):
    """One NDArray per Param, shared by all the executors of one compiled model, kept current
    by `flux.backends.ParamMirror`: copied in when a Param's `version` moved, so every executor,
    for every input shape, sees the current values; after an update on the MXNet side, fetched
    back only when the Param is next read."""

    def __init__(self, ctx):
        super().__init__()
        self.ctx = ctx

    def new(self, value):
        return nd_array(value, self.ctx)

    def assign(self, array, value) -> None:
        copy_in(array, value)

    def read(self, array) -> np.ndarray:
        return array.asnumpy()


def mx_error(error: Exception, graph) -> BackendError:
    """An MXNet error as a BackendError at the equation its message names, with MXNet's own
    message: the ``Error in operator ...`` line, else the ``MXNetError: ...`` line (not the
    ``Traceback (most recent call last):`` that starts MXNet's C++ traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    short = next((line for line in lines if "Error in operator" in line), None) or next(
        (line for line in reversed(lines) if line.startswith("MXNetError")), None)
    return backend_error("mxnet", error, graph, message=short)


class Executable:
    """A graph bound to one executor: its arguments are input buffers, the store's shared
    Param arrays and the constants. Call it with the graph's flat input arrays.

    With `train`, the graph is a training step's objective (the loss, then any carried
    state), built with the FullyConnected fusion and bound with gradient buffers for the
    floating Params: `train` runs it. `Unsupported` if an output is a constant."""

    def __init__(self, compiled, graph, train=False):
        self.graph, self.compiled = graph, compiled
        self.built = built = to_symbol(graph, fuse_affine=train)
        ctx = compiled.ctx
        self.records = compiled.store.records(graph.param_objs)
        self.inputs = [mx.nd.empty(built.shapes[n], ctx=ctx, dtype=built.dtypes[n])
                       for n in built.input_names]
        args = dict(zip(built.input_names, self.inputs))
        args.update((n, rec.array) for n, rec in zip(built.param_names, self.records))
        args.update((n, nd_array(v, ctx)) for n, v in built.consts.items())
        self.out_avals = [a.aval for a in graph.outputs]
        self.executor, grads, grad_req = None, None, "null"
        if train:
            if any(not isinstance(what, int) for what in built.outputs):
                raise Unsupported("a constant output")
            trained = [(n, rec) for n, rec in zip(built.param_names, self.records)
                       if rec.param.dtype.kind == "f"]
            self.trained = [rec for _, rec in trained]
            self.grads = [mx.nd.zeros(built.shapes[n], ctx=ctx, dtype=built.dtypes[n])
                          for n, _ in trained]
            grads = dict(zip((n for n, _ in trained), self.grads))
            grad_req = {n: "write" if n in grads else "null" for n in args}
            # d loss / d loss = 1; the carried hidden state (the other outputs) is not trained
            # through: the gradient stops at the call boundary, as in core's step
            self.head = [mx.nd.zeros(mx_shape(a.shape), ctx=ctx, dtype=mx_dtype(a.dtype))
                         for a in self.out_avals]
            self.head[0][:] = 1
        if built.symbol is not None:
            try:
                self.executor = built.symbol.bind(ctx, args=args, args_grad=grads,
                                                  grad_req=grad_req)
            except mx.base.MXNetError as error:
                raise mx_error(error, graph) from error

    def feed(self, xs) -> None:
        """Bring the Param arrays up to date and copy the inputs in."""
        self.compiled.store.sync(self.records)
        for array, x in zip(self.inputs, xs):
            copy_in(array, x)

    def __call__(self, *xs):
        try:
            self.feed(xs)
            outs = self.executor.forward(is_train=False) if self.executor else []
            return [(outs[what].asnumpy() if isinstance(what, int) else what)
                    .reshape(aval.shape).astype(aval.dtype, copy=False)
                    for what, aval in zip(self.built.outputs, self.out_avals)]
        except mx.base.MXNetError as error:
            raise mx_error(error, self.graph) from error

    def train(self, inputs, opt_mirror: OptimiserState) -> tuple:
        """One training step: forward and backward, the loss read, and, if it and every
        gradient are finite, the update of `opt_mirror`'s optimiser. Returns the loss, the
        carried state and whether the gradients were finite."""
        executor, store = self.executor, self.compiled.kvstore
        try:
            self.feed(inputs)
            if store is not None:
                store.register(self.trained)        # (the chief's values, on first use)
            executor.forward(is_train=True)
            executor.backward(out_grads=self.head)
            outs = executor.outputs
            value = float(outs[0].asnumpy()[0])
            carried = [o.asnumpy().reshape(a.shape).astype(a.dtype, copy=False)
                       for o, a in zip(outs[1:], self.out_avals[1:])]
            if store is not None and not store.asynchronous:
                store.reduce(self.trained, self.grads)      # every worker, every step
            finite = not self.grads or bool(mx.nd.multi_all_finite(
                *self.grads, num_arrays=len(self.grads)).asscalar())
            if math.isfinite(value) and finite:
                if store is not None and store.asynchronous:
                    store.server_update(opt_mirror.opt, self.trained, self.grads)
                else:
                    opt_mirror.update(self.trained, self.grads)
            return value, carried, finite
        except mx.base.MXNetError as error:
            raise mx_error(error, self.graph) from error


class Unsupported(Exception):
    """This training step cannot run as one executor (core's step runs it)."""


def mx_context(option) -> mx.Context:
    """The MXNet context for a ``ctx=``/``device=`` option (an `mx.Context`, ``"cpu"``,
    ``"gpu"``, ``"gpu:1"``; None is the CPU), checked by allocating on it: a GPU context on a
    CPU-only MXNet build fails only at the first allocation otherwise."""
    if option is None or isinstance(option, mx.Context):
        ctx = option or mx.cpu()
    else:
        try:
            device = parse_device(option, "mxnet")
        except FluxValueError:
            device = None
        if device is None or device.kind not in ("cpu", "gpu"):
            raise FluxTypeError(f"mxnet backend: ctx=/device= takes an mx.Context (mx.cpu(), "
                                f"mx.gpu(0)) or 'cpu', 'gpu', 'gpu:1'; found {option!r}")
        ctx = mx.Context(device.kind, device.index)
    try:
        mx.nd.zeros((1,), ctx=ctx).wait_to_read()
    except mx.base.MXNetError as error:
        lines = str(error).strip().splitlines()
        reason = next((line.strip() for line in lines if line.startswith("MXNetError")),
                      lines[-1])
        raise BackendError(f"mxnet backend: the context {ctx} cannot be used here: {reason}",
                           trace=[]) from error
    return ctx


class MXNetCompiled(MirroredCompiled):
    """A flux model compiled for MXNet: every graph flux builds for it (forward, `back`,
    training steps, unrolled and carried-state graphs alike) runs as one bound executor, and
    all of them share one NDArray per Param (`store`, the `MirroredCompiled` mirror).

    With ``kvstore=`` (a name for ``mx.kv.create`` or an ``mx.kv.KVStore``) training goes
    through that kvstore (`_distributed.KVStore`, `kvstore`): `rank` and `workers` are its;
    ``timeout=`` bounds each of its calls in seconds (default ``FLUX_KV_TIMEOUT`` or 120)."""

    def __init__(self, model, backend, options):
        options = dict(options)
        ctx, device = options.pop("ctx", None), options.pop("device", None)
        kvstore, timeout = options.pop("kvstore", None), options.pop("timeout", None)
        if options:
            raise TypeError(f"the mxnet backend takes the options ctx=, device=, kvstore= and "
                            f"timeout=, given {sorted(options)}")
        if timeout is not None and kvstore is None:
            raise TypeError("the mxnet backend's timeout= bounds kvstore calls; it needs "
                            "kvstore=")
        if ctx is not None and device is not None:
            raise TypeError("the mxnet backend takes ctx= or device= (the same thing), not both")
        ctx = mx_context(device if device is not None else ctx)
        super().__init__(model, backend, {}, ParamStore(ctx))
        self.ctx, self.store = ctx, self.mirror
        self._executors = weakref.WeakKeyDictionary()     # TrainingStep -> Executable or None
        self.kvstore = None if kvstore is None else KVStore(kvstore, timeout)
        if self.kvstore is not None:
            self.rank, self.workers = self.kvstore.rank, self.kvstore.workers

    def __repr__(self) -> str:
        return f"mxnet({self.model!r})"

    def lower(self, graph):
        try:
            return Executable(self, graph)
        except mx.base.MXNetError as error:         # (allocating its arrays, out of memory)
            raise mx_error(error, graph) from error

    def trains(self, opt) -> bool:
        if self.kvstore is not None and type(opt) not in NATIVE:
            raise FluxTypeError(f"mxnet backend: training through kvstore="
                                f"{self.kvstore.name!r} takes SGD, Momentum or ADAM, found "
                                f"{type(opt).__name__}")
        return type(opt) in NATIVE

    def new_optimiser_mirror(self, opt) -> OptimiserState:
        return OptimiserState(opt)

    def build_trainer(self, step, opt_mirror):
        """The step's objective as one training executor (shared by every optimiser), then
        the update with MXNet's operators; None (core's step) if it has a constant output."""
        if step not in self._executors:
            try:
                self._executors[step] = Executable(self, step.objective, train=True)
            except Unsupported:
                self._executors[step] = None
        executable = self._executors[step]
        if executable is None:
            if self.kvstore is not None:
                raise BackendError(f"mxnet backend: this training step (an output is a "
                                   f"constant) cannot run through kvstore="
                                   f"{self.kvstore.name!r}", trace=[])
            return None
        return lambda inputs: executable.train(inputs, opt_mirror)

    def update(self, opt_mirror, records, grads) -> None:
        """`flux.update` on MXNet: MXNet's update operators on the shared parameter arrays."""
        grads = [nd_array(np.asarray(g, rec.param.dtype), self.ctx)
                 for rec, g in zip(records, grads)]
        store = self.kvstore
        if store is not None:
            store.register(records)
            if store.asynchronous:
                return store.server_update(opt_mirror.opt, records, grads)
            store.reduce(records, grads)
        opt_mirror.update(records, grads)
