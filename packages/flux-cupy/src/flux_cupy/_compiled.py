"""`CupyCompiled`: a flux model compiled for one GPU (or the NumPy stand-in).

Every graph flux builds for it (forward, `back`, training steps; unrolled and carried-state
graphs alike) becomes a `Plan`. Parameters live on the GPU (`DeviceParams`, the
`MirroredCompiled` mirror), and so does the optimiser state (`DeviceSlots`). A training step
with SGD, Momentum or ADAM (`Trainer`) is core's gradient graph of the objective, planned,
then one fused update kernel over all Params (per dtype), skipped on the GPU when the loss is
not finite; with
real CuPy the whole step is captured as a CUDA graph after its first run, so later steps cost
one launch. NumPy arrays in give NumPy arrays out; CuPy arrays in give CuPy arrays out, with
no copy through the host.
"""
from __future__ import annotations

import math

import numpy as np

import flux
from flux.backends import MirroredCompiled, OptimiserMirror, ParamMirror

from ._plan import Plan, _contiguous
from ._runtime import open_runtime
from ._update import MultiUpdate, counters, hyper_names, hyper_values

__all__ = ["CupyCompiled", "DeviceParams", "DeviceSlots", "Trainer", "OPTIONS"]

OPTIONS = ("device", "standin", "cuda_graphs")
NATIVE = (flux.SGD, flux.Momentum, flux.ADAM)


def write(runtime, array, value) -> None:
    """Copy `value` (a NumPy array, or a device array) into the device `array`."""
    if runtime.standin or runtime.is_native(value):
        runtime.xp.copyto(array, value)
    else:
        array.set(np.ascontiguousarray(value, dtype=array.dtype))


class DeviceParams(ParamMirror):
    """One device array per Param, kept current by version (`flux.backends.ParamMirror`)."""

    def __init__(self, runtime):
        super().__init__()
        self.runtime = runtime

    def new(self, value):
        return self.runtime.to_device(value)

    def assign(self, array, value) -> None:
        write(self.runtime, array, value)

    def read(self, array) -> np.ndarray:
        return self.runtime.to_host(array)


class DeviceSlots(OptimiserMirror):
    """An optimiser's slots on the GPU (step counters on the host) and its update kernels
    (one per dtype, each updating every Param of that dtype at once)."""

    def __init__(self, opt, runtime):
        super().__init__(opt)
        self.runtime = runtime
        self.is_counter = counters(opt)
        self.updates: dict = {}

    def new_slots(self, p, array) -> list:
        xp = self.runtime.xp
        with self.runtime.on_device():
            return [0 if c else xp.zeros_like(array) for c in self.is_counter]

    def load_slots(self, p, slots, values) -> None:
        for i, (c, value) in enumerate(zip(self.is_counter, values)):
            if c:
                slots[i] = int(value)
            else:
                write(self.runtime, slots[i], np.broadcast_to(np.asarray(value, p.dtype),
                                                              p.shape))

    def read_slots(self, p, slots) -> tuple:
        return tuple(s if c else self.runtime.to_host(s) for c, s in zip(self.is_counter, slots))

    def update_for(self, dtype) -> MultiUpdate:
        if dtype not in self.updates:
            self.updates[dtype] = MultiUpdate(self.opt, dtype, self.runtime)
        return self.updates[dtype]

    def counter_of(self, slots) -> int:
        return next((s for c, s in zip(self.is_counter, slots) if c), 0)

    def stepped_counters(self, entries) -> None:
        """One update more for each (slots) of `entries` (their step counters move)."""
        for slots in entries:
            for i, c in enumerate(self.is_counter):
                if c:
                    slots[i] += 1


class _Entry:
    """One Param's part of an update: its record, slots, and where its gradient is."""

    __slots__ = ("record", "slots", "arrays", "grad")

    def __init__(self, record, slots, is_counter, grad):
        self.record, self.slots, self.grad = record, slots, grad
        self.arrays = [s for s, c in zip(slots, is_counter) if not c]   # on the device


class _Updates:
    """The update of a list of Params by one optimiser: per dtype, one kernel over all of its
    Params and one device array of hyper-parameter rows (one per Param, written with one
    copy per step). `grad_of(record)` is where each Param's gradient is in the list `launch`
    is given."""

    def __init__(self, runtime, opt_mirror: DeviceSlots, records, grad_of):
        self.mirror, self.runtime = opt_mirror, runtime
        n_hyper = len(hyper_names(opt_mirror.opt))
        floating = [rec for rec in records if rec.param.dtype.kind == "f"]
        self.groups = []
        with runtime.on_device():
            xp = runtime.xp
            self.ok = xp.ones((), np.bool_)                 # the update is applied
            self.grads_ok = xp.ones((), np.bool_)           # every gradient is finite
            self.sums = xp.zeros(len(floating), np.float64)
            self.finite = xp.zeros(len(floating), np.bool_)
            self.norm = xp.zeros((), np.float64)
            for dtype in sorted({rec.param.dtype for rec in floating}, key=str):
                entries = [_Entry(rec, opt_mirror.slots(rec.param, rec.array),
                                  opt_mirror.is_counter, grad_of(rec))
                           for rec in floating if rec.param.dtype == dtype]
                rows = runtime.xp.zeros((len(entries), n_hyper), dtype)
                self.groups.append((opt_mirror.update_for(dtype), entries, rows))
            self.scales = [xp.ones((), rows.dtype) for _, _, rows in self.groups]

    def set_hyper(self) -> None:
        """The hyper-parameters of this step (Adam's bias corrections are per Param)."""
        opt, mirror = self.mirror.opt, self.mirror
        for _, entries, rows in self.groups:
            write(self.runtime, rows, np.array(
                [hyper_values(opt, mirror.counter_of(e.slots) + 1) for e in entries],
                rows.dtype))

    def check(self, loss, grads) -> None:
        """`ok` and `grads_ok` on the device: the loss and every gradient finite (a gradient
        is checked through its sum, in float64: NaN and ±inf reach it)."""
        xp = self.runtime.xp
        entries = [e for _, group, _ in self.groups for e in group]
        for k, e in enumerate(entries):
            xp.sum(grads[e.grad], dtype=np.float64, out=self.sums[k, ...])
        xp.isfinite(self.sums, out=self.finite)
        xp.all(self.finite, out=self.grads_ok)
        xp.isfinite(loss, out=self.ok)
        xp.logical_and(self.ok, self.grads_ok, out=self.ok)

    def launch(self, grads) -> None:
        """The update kernels, in stream order; `ok` decides on the device. With `clip_norm`
        the gradients' common scale is computed on the device first."""
        xp = self.runtime.xp
        grads = {e.grad: _contiguous(xp, grads[e.grad])
                 for _, entries, _ in self.groups for e in entries}
        if self.mirror.opt.clip_norm is not None:
            self._norm_scale(grads)
        for (update, entries, rows), scale in zip(self.groups, self.scales):
            update([e.record.array for e in entries], [grads[e.grad] for e in entries],
                   [e.arrays for e in entries], rows, self.ok, scale)

    def _norm_scale(self, grads) -> None:
        """``min(1, clip_norm / (‖g‖ + 1e-6))`` over every gradient, on the device, into the
        0-d scale of each dtype."""
        xp, total = self.runtime.xp, self.norm
        total.fill(0)
        for g in grads.values():
            xp.add(total, xp.vdot(g, g), out=total)
        xp.sqrt(total, out=total)
        xp.add(total, 1e-6, out=total)
        xp.divide(self.mirror.opt.clip_norm, total, out=total)
        xp.minimum(total, 1.0, out=total)
        for scale in self.scales:
            xp.copyto(scale, total, casting="unsafe")

    def counted(self) -> None:
        self.mirror.stepped_counters([e.slots for _, entries, _ in self.groups
                                      for e in entries])


class Trainer:
    """A training step on the GPU: the planned gradient graph of the step's objective, the
    finiteness flag of the loss, the fused updates; captured as a CUDA graph from its second
    call (real CuPy, ``cuda_graphs=True``), replayed with one launch after that."""

    def __init__(self, compiled, step, opt_mirror: DeviceSlots):
        self.compiled, self.runtime = compiled, compiled.runtime
        graph = step.graph                         # loss, carried state, then param grads
        self.plan = Plan(graph, self.runtime)
        self.records = compiled.mirror.records(graph.param_objs)
        n_out = len(graph.outputs) - len(graph.param_vars)
        self.n_carried = n_out - 1
        position = {id(rec.param): i for i, rec in enumerate(self.records)}
        self.outs = None
        self.updates = _Updates(self.runtime, opt_mirror, self.records,
                                lambda rec: n_out + position[id(rec.param)])
        self.inputs = None
        self.graph_exec = None
        self.graph_error = None
        self.calls = 0
        self.use_graphs = (not self.runtime.standin) and compiled.options.get("cuda_graphs",
                                                                             True)

    def _step(self, inputs) -> list:
        outs = self.plan.run(inputs, [rec.array for rec in self.records])
        self.updates.check(outs[0], outs)
        self.updates.launch(outs)
        return outs

    def __call__(self, inputs) -> tuple:
        runtime = self.runtime
        native = any(runtime.is_native(x) for x in inputs)
        self.updates.set_hyper()
        with runtime.on_device():
            if self.graph_exec is not None:
                for buffer, x in zip(self.inputs, inputs):
                    write(runtime, buffer, x)
                self.graph_exec.launch()          # on the current stream, after the copies
                outs = self.outs
            else:
                device = [x if runtime.is_native(x) or runtime.standin else runtime.to_device(x)
                          for x in inputs]
                outs = self._step(device)
                self.calls += 1
                if self.use_graphs and self.calls == 1 and self.graph_error is None:
                    self._capture(device)
        value = float(runtime.to_host(outs[0]))
        grads_finite = bool(runtime.to_host(self.updates.grads_ok))
        if math.isfinite(value) and grads_finite:
            self.updates.counted()
        carried = outs[1:1 + self.n_carried]
        carried = [o.copy() for o in carried] if native else [runtime.to_host(o)
                                                              for o in carried]
        return value, carried, grads_finite

    def _capture(self, inputs) -> None:
        """Record the step as a CUDA graph on static input buffers (tried once; if CuPy
        refuses, e.g. an operation that allocates while capturing, steps run as before and
        `graph_error` says why)."""
        xp = self.runtime.xp
        try:
            self.inputs = [xp.array(x) for x in inputs]
            self.stream = xp.cuda.Stream(non_blocking=True)
            with self.stream:
                self.stream.begin_capture()
                try:
                    self.outs = self._step(self.inputs)
                finally:
                    graph = self.stream.end_capture()
            self.graph_exec = graph
        except Exception as error:             # noqa: BLE001 (any refusal: run uncaptured)
            self.graph_error = f"{type(error).__name__}: {error}"
            self.graph_exec = None


class CupyCompiled(MirroredCompiled):
    """A flux model compiled for CuPy (see the module docstring)."""

    def __init__(self, model, backend, options):
        options = dict(options or {})
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise TypeError(f"the cupy backend takes the options {', '.join(OPTIONS)}; given "
                            f"{', '.join(unknown)}")
        runtime = open_runtime(options.get("device"), options.get("standin"))
        super().__init__(model, backend, options, DeviceParams(runtime))
        self.runtime = runtime

    def __repr__(self) -> str:
        return f"cupy({self.model!r})"

    def input_array(self, value, where: str):
        """NumPy arrays as for every backend; CuPy arrays stay on the GPU (in the model's
        dtype), after checking they are on this model's GPU."""
        if self.runtime.is_native(value):
            self.runtime.check_device(value, where)
            dtype = self.dtype
            return value if dtype is None or value.dtype == dtype else value.astype(dtype)
        return super().input_array(value, where)

    def lower(self, graph):
        """`graph` as a `Plan`; the function takes and returns NumPy arrays, or CuPy arrays
        when it is given any."""
        runtime, plan = self.runtime, Plan(graph, self.runtime)
        records = self.mirror.records(graph.param_objs)
        sync = self.mirror.sync

        def run(*xs):
            sync(records)
            native = any(runtime.is_native(x) for x in xs)
            with runtime.on_device():
                device = [x if runtime.is_native(x) or runtime.standin else runtime.to_device(x)
                          for x in xs]
                outs = plan.run(device, [rec.array for rec in records])
                if native:
                    return [o.copy() for o in outs]
                return [runtime.to_host(o) for o in outs]

        run.plan = plan
        return run

    def trains(self, opt) -> bool:
        return type(opt) in NATIVE

    def new_optimiser_mirror(self, opt) -> DeviceSlots:
        return DeviceSlots(opt, self.runtime)

    def build_trainer(self, step, opt_mirror):
        return Trainer(self, step, opt_mirror)

    def update(self, opt_mirror, records, grads) -> None:
        """`flux.update` on the GPU: the gradients go up, the fused update kernels run."""
        runtime = self.runtime
        with runtime.on_device():
            device = [runtime.to_device(np.asarray(g, rec.param.dtype))
                      for rec, g in zip(records, grads)]
            position = {id(rec.param): i for i, rec in enumerate(records)}
            updates = _Updates(runtime, opt_mirror, records, lambda rec: position[id(rec.param)])
            updates.set_hyper()
            updates.launch(device)
        updates.counted()
