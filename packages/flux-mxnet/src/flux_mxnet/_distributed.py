"""Data-parallel training on MXNet's kvstores: ``flux.mxnet(model, kvstore="dist_sync")``.

One `KVStore` per compiled model, over an MXNet store (``mx.kv.create(name)``, or one the user
made; a process's dist models share one, as a process joins ps-lite once). The first
training step that uses a Param registers it: its values are ``init`` on the store (in a
``dist_*`` store only the chief's, rank 0's, reach the servers) and pulled back, so every
worker starts from the chief's parameters.

Synchronous stores (``local``, ``device``, ``dist_sync``, ``dist_device_sync``) aggregate
gradients only: every step pushes each worker's gradients and pulls their sum, which is scaled
by 1/workers and applied on each worker by flux's own update (`_training`), so the update is
the one a single process makes with the mean gradient of the combined batch, with flux's exact
formulas (ADAM's bias correction included) and the optimiser's state kept by flux (checkpoints,
``resume``). Every worker applies the same update to the same values, so all hold the same
parameters after every step. (The alternative, the update on the servers with MXNet's
optimisers, cannot reproduce flux's ADAM, whose ε is bias-corrected too, keeps the optimiser
state where checkpoints do not see it, and needs a pickled optimiser per store.)

``dist_async`` cannot aggregate (each push is applied on its own): there the update runs on
the servers (`server_optimiser`: MXNet's SGD, SGD with momentum or Adam with flux's settings,
gradients scaled by 1/workers) and every step pulls the servers' current weights. Workers then
differ by the pushes in flight; `synchronise` (a barrier and a pull) makes them equal. The
optimiser state lives on the servers: it is not in flux's checkpoints.

ps-lite blocks forever when a peer died or never comes. Every kvstore call here runs in a
watchdog thread and is waited for at most `timeout` seconds (``timeout=`` of the compiled model,
else ``FLUX_KV_TIMEOUT``, else `DEFAULT_TIMEOUT`); past it a `BackendError` names the role and
address waited on. The store is unusable then (its calls never return), so the process leaves
with status 1 when Python exits instead of hanging in MXNet's shutdown.
"""
from __future__ import annotations

import atexit
import os
import queue
import sys
import threading
import time

import mxnet as mx
import numpy as np

import flux
from flux import BackendError, FluxTypeError, FluxValueError

__all__ = ["KVStore", "DEFAULT_TIMEOUT", "kv_timeout", "server_optimiser", "synchronise"]

DEFAULT_TIMEOUT = 120.0
"""Seconds a kvstore call may wait (for the scheduler, the servers, the other workers) before
it fails: long enough for the slowest worker's start-up and first step."""

_SETTINGS = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER",
             "DMLC_NUM_WORKER")


def kv_timeout(option) -> float:
    """The watchdog bound in seconds: `option`, else ``FLUX_KV_TIMEOUT``, else the default."""
    value, where = option, "timeout="
    if value is None:
        value, where = os.environ.get("FLUX_KV_TIMEOUT", DEFAULT_TIMEOUT), "FLUX_KV_TIMEOUT"
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not seconds > 0:
        raise FluxValueError(f"mxnet backend: {where} is a number of seconds > 0, found "
                             f"{value!r}")
    return seconds


def scheduler_address() -> str:
    """``host:port`` of the ps-lite scheduler from the DMLC_* settings."""
    return (f"{os.environ.get('DMLC_PS_ROOT_URI', '?')}:"
            f"{os.environ.get('DMLC_PS_ROOT_PORT', '?')}")


class _Watchdog:
    """One daemon thread that runs the calls of one kvstore; `run` waits for one at most
    `timeout` seconds. After a call overran, every later one fails at once (the thread is
    stuck in ps-lite) and the process exits with status 1 at interpreter exit."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.jobs: queue.Queue = queue.Queue()
        self.broken = None
        self.thread = threading.Thread(target=self._serve, name="flux-kvstore", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            fn, box, done = self.jobs.get()
            try:
                box.append(("ok", fn()))
            except BaseException as error:         # handed to the caller
                box.append(("error", error))
            done.set()

    def run(self, fn, what: str, timeout: float | None = None):
        """``fn()`` in the watchdog thread; a BackendError saying `what` was waited on if it
        does not return within `timeout` (default the watchdog's)."""
        timeout = self.timeout if timeout is None else timeout
        if self.broken is not None:
            raise BackendError(f"mxnet kvstore: unusable since an earlier call timed out "
                               f"({self.broken})", trace=[])
        box, done = [], threading.Event()
        self.jobs.put((fn, box, done))
        if not done.wait(timeout):
            self.broken = what
            _leave_at_exit()
            raise BackendError(f"mxnet kvstore: waited {timeout:g} s for {what}, without an "
                               f"answer: a worker or server died, or cannot reach the others "
                               f"(the bound is timeout= of flux.mxnet(...), else "
                               f"FLUX_KV_TIMEOUT). The kvstore is stuck: this process will "
                               f"exit with status 1", trace=[])
        kind, value = box[0]
        if kind == "error":
            if isinstance(value, mx.base.MXNetError):
                lines = [line for line in str(value).splitlines() if line.strip()]
                raise BackendError(f"mxnet kvstore: {what} failed: "
                                   f"{lines[-1] if lines else value}", trace=[]) from value
            raise value
        return value


_leaving = []


def _leave_at_exit() -> None:
    """At interpreter exit, leave with status 1 before MXNet's own shutdown, which would wait
    forever on the stuck kvstore (atexit runs the last registered first)."""
    if not _leaving:
        _leaving.append(True)

        def leave():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        atexit.register(leave)


def _create(name: str, watchdog: _Watchdog, timeout: float | None = None):
    """``mx.kv.create(name)``, checked: a ``dist_*`` store needs MXNet built with ps-lite and
    the DMLC_* settings, and must reach the scheduler within the timeout."""
    if not name.startswith("dist"):
        return mx.kv.create(name)
    if not mx.runtime.Features().is_enabled("DIST_KVSTORE"):
        raise BackendError(f"mxnet backend: kvstore={name!r} needs MXNet built with "
                           f"DIST_KVSTORE (the pip wheel is); this one is not", trace=[])
    missing = [key for key in _SETTINGS if not os.environ.get(key)]
    if missing:
        raise BackendError(f"mxnet backend: kvstore={name!r} needs the DMLC_* settings of a "
                           f"worker; missing {', '.join(missing)}. Start the script with "
                           f"`python -m flux_mxnet.launch -n N -s S script.py`, or set them "
                           f"as on a cluster (docs/distributed.md)", trace=[])
    if os.environ["DMLC_ROLE"] != "worker":
        raise BackendError(f"mxnet backend: kvstore={name!r} is made by workers; this process "
                           f"has DMLC_ROLE={os.environ['DMLC_ROLE']!r}", trace=[])
    return watchdog.run(lambda: mx.kv.create(name),
                        f"the ps-lite scheduler at DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT = "
                        f"{scheduler_address()} (role worker, connecting; all "
                        f"{_count(os.environ['DMLC_NUM_WORKER'], 'worker')} and "
                        f"{_count(os.environ['DMLC_NUM_SERVER'], 'server')} must join)",
                        timeout)


def _count(n: str, what: str) -> str:
    return f"{n} {what}" + ("" if n.strip() == "1" else "s")


def server_optimiser(opt, workers: int):
    """MXNet's optimiser equal to flux's `opt` for updates on the servers (``dist_async``):
    SGD; Momentum as SGD with momentum (MXNet's slot is −v); ADAM as Adam (MXNet does not
    bias-correct ε: ε√(1−β₂ᵗ) in flux). Gradients are scaled by 1/workers."""
    if opt.clip_norm is not None or opt.weight_decay:
        raise FluxValueError("mxnet backend: kvstore='dist_async' updates on the servers, "
                             "which take neither clip_norm= nor weight_decay=; use dist_sync")
    common = {"rescale_grad": 1.0 / workers, "wd": 0.0}
    if opt.clip_value is not None:
        common["clip_gradient"] = opt.clip_value
    if type(opt) is flux.SGD:
        return mx.optimizer.SGD(learning_rate=opt.lr, momentum=0.0, **common)
    if type(opt) is flux.Momentum:
        return mx.optimizer.SGD(learning_rate=opt.lr, momentum=opt.rho, **common)
    if type(opt) is flux.ADAM:
        return mx.optimizer.Adam(learning_rate=opt.lr, beta1=opt.beta1, beta2=opt.beta2,
                                 epsilon=opt.eps, **common)
    raise FluxTypeError(f"mxnet backend: kvstore='dist_async' trains with SGD, Momentum or "
                        f"ADAM, found {type(opt).__name__}")


class _Shared:
    """What the compiled models using one ``mx.kv.KVStore`` share: the store, its watchdog
    thread (every call of a store runs in that one thread), the next free key, and (dist_async)
    the optimiser set on the servers. A process joins ps-lite once: every
    ``kvstore="dist_sync"`` model of a process shares one store (`_SHARED`)."""

    def __init__(self, kv, watchdog: _Watchdog):
        self.kv, self.watchdog = kv, watchdog
        self.next_key = 0
        self.optimiser = None
        if kv.type.startswith("dist"):
            atexit.register(self.close)

    def close(self) -> None:
        """(at exit) Free the dist store in the thread that used it: its destructor waits
        for every worker (a last barrier), and freed from another thread ps-lite aborts."""
        kv = self.kv
        if self.watchdog.broken is not None or kv.handle is None:
            return
        try:
            self.watchdog.run(lambda: mx.base.check_call(mx.base._LIB.MXKVStoreFree(kv.handle)),
                              f"leaving: worker rank {kv.rank} in the last barrier of the "
                              f"kvstore (scheduler {scheduler_address()})")
            kv.handle = None
        except BackendError as error:
            print(f"flux: {error}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)


_SHARED: dict = {}      # a dist store's name, or id(an mx.kv.KVStore) -> its _Shared


def _shared(option, timeout: float) -> _Shared:
    """The `_Shared` for a kvstore= option (made on first use for a dist name)."""
    if isinstance(option, mx.kv.KVStore):
        found = _SHARED.get(id(option))
        if found is None or found.kv is not option:
            found = _SHARED[id(option)] = _Shared(option, _Watchdog(timeout))
        return found
    if not isinstance(option, str):
        raise FluxTypeError(f"mxnet backend: kvstore= takes a name ('local', 'device', "
                            f"'dist_sync', 'dist_async', 'dist_device_sync') or an "
                            f"mx.kv.KVStore, found {type(option).__name__}")
    if not option.startswith("dist"):
        watchdog = _Watchdog(timeout)
        return _Shared(_create(option, watchdog), watchdog)
    joined = [shared for shared in _SHARED.values() if shared.kv.type.startswith("dist")]
    if joined:                  # (ps-lite started twice in one process waits forever)
        if joined[0].kv.type == option:
            return joined[0]
        raise BackendError(f"mxnet backend: this process already joined the ps-lite cluster "
                           f"with a {joined[0].kv.type!r} kvstore; a process takes part in "
                           f"one kvstore, not also {option!r}", trace=[])
    found = _SHARED.get(option)
    if found is None:
        watchdog = _Watchdog(timeout)
        found = _SHARED[option] = _Shared(_create(option, watchdog, timeout), watchdog)
    return found


class KVStore:
    """The kvstore of one compiled model: `option` is its name or an ``mx.kv.KVStore``;
    each call waits at most `timeout` seconds (`kv_timeout`). `rank` and `workers` are the
    store's."""

    def __init__(self, option, timeout=None):
        self.timeout = kv_timeout(timeout)
        self.shared = _shared(option, self.timeout)
        self.kv = self.shared.kv
        self.name = self.kv.type
        self.distributed = self.name.startswith("dist")
        self.asynchronous = "async" in self.name
        self.rank, self.workers = self.kv.rank, self.kv.num_workers
        self.keys: dict[int, tuple] = {}       # id(Param) -> (Param, its array, its key)
        self.exchanges = 0          # gradient exchanges (one per training step)
        self.seconds = 0.0          # spent in them, waiting included
        self.bytes = 0              # pushed and pulled by this worker in them

    def run(self, fn, what: str):
        """``fn()`` (kvstore calls) in the store's watchdog thread, waited for at most
        `timeout` seconds (`_Watchdog.run`)."""
        return self.shared.watchdog.run(fn, self.waiting_on(what), self.timeout)

    def __repr__(self) -> str:
        return f"KVStore({self.name!r}, rank {self.rank} of {self.workers})"

    def waiting_on(self, what: str) -> str:
        others = "the other worker" if self.workers == 2 else \
            f"the other {self.workers - 1} workers"
        where = (f"the parameter servers (scheduler {scheduler_address()}) and {others}"
                 if self.distributed else "the local kvstore")
        return f"{what}: worker rank {self.rank} waiting on {where}"

    def register(self, records) -> list:
        """The store's keys for `records` (`Mirrored`), registering the new ones: ``init``
        with this worker's values (the chief's win in a dist store) and pulled back into the
        records' arrays. Every worker registers the same Params in the same order."""
        new = [rec for rec in records if self._key(rec) is None]
        if new:
            start = self.shared.next_key
            keys = list(range(start, start + len(new)))
            self.shared.next_key += len(new)
            arrays = [rec.array for rec in new]

            def init():
                self.kv.init(keys, arrays)
                self.kv.pull(keys, out=arrays)
                for array in arrays:
                    array.wait_to_read()
            self.run(init, "registering the parameters (kv.init)")
            for rec, key in zip(new, keys):
                self.keys[id(rec.param)] = (rec.param, rec.array, key)
        return [self._key(rec) for rec in records]

    def _key(self, rec):
        found = self.keys.get(id(rec.param))
        if found is None or found[0] is not rec.param or found[1] is not rec.array:
            return None
        return found[2]

    def reduce(self, records, grads) -> None:
        """(synchronous stores) Replace `grads` in place by the mean over the workers."""
        keys = self.register(records)
        if not keys:
            return

        def pushpull():
            self.kv.pushpull(keys, grads, out=grads)
            for g in grads:
                g.wait_to_read()
        self._exchange(pushpull, "all-reducing the gradients (pushpull)", grads)
        if self.workers > 1:
            scale = 1.0 / self.workers
            for g in grads:
                g *= scale

    def server_update(self, opt, records, grads) -> None:
        """(dist_async) Push the gradients to the servers, which apply `opt`'s update, and
        pull their current weights into the records' arrays."""
        shared = self.shared
        if shared.optimiser is None:
            optimiser = server_optimiser(opt, self.workers)

            def send():
                self.kv.set_optimizer(optimiser)
                self.kv._barrier()
            self.run(send, "sending the optimiser to the servers")
            shared.optimiser = opt
        elif shared.optimiser is not opt:
            raise FluxValueError("mxnet backend: a dist_async kvstore updates on the servers "
                                 "with one optimiser; this model was trained with another")
        keys = self.register(records)
        arrays = [rec.array for rec in records]

        def push_pull():
            self.kv.push(keys, grads)
            self.kv.pull(keys, out=arrays)
            for array in arrays:
                array.wait_to_read()
        self._exchange(push_pull, "pushing gradients, pulling weights", grads)

    def _exchange(self, fn, what: str, grads) -> None:
        """`run` one step's exchange, counted in `exchanges`, `seconds` and `bytes` (the
        clock starts once this worker's gradients are computed: MXNet runs backward
        asynchronously)."""
        for g in grads:
            g.wait_to_read()
        start = time.perf_counter()
        self.run(fn, what)
        self.seconds += time.perf_counter() - start
        self.exchanges += 1
        self.bytes += 2 * sum(g.size * np.dtype(g.dtype).itemsize for g in grads)

    def pull_all(self) -> list:
        """A barrier, then the servers' weights pulled into every registered array; the
        records' Params that were pulled."""
        entries = list(self.keys.values())

        def pull():
            self.kv._barrier()
            if self.asynchronous and entries:
                self.kv.pull([k for _, _, k in entries], out=[a for _, a, _ in entries])
                for _, array, _ in entries:
                    array.wait_to_read()
            self.kv._barrier()
        self.run(pull, "the final barrier and pull")
        return [p for p, _, _ in entries]


def synchronise(model) -> None:
    """Wait until every worker got here (a kvstore barrier) and, with ``dist_async``, pull the
    servers' current weights: afterwards all workers hold the same parameters. A no-op for a
    model compiled without a distributed kvstore."""
    from flux.backends.eager import compiled_of

    compiled = compiled_of(model)
    store = getattr(compiled, "kvstore", None)
    if store is None or not store.distributed:
        return
    pulled = store.pull_all()
    if store.asynchronous:
        compiled.store.pull(pulled)
