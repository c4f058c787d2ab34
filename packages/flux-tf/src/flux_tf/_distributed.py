"""Data-parallel training on `tf.distribute`: ``flux.tf(model, strategy=...)``.

With a strategy, the compiled model's variables (Params and optimiser slots) are the
strategy's variables (created under ``strategy.scope()``), and a training step runs as
``strategy.run`` on every replica: each replica takes the gradients of its worker's batch,
TF's collectives average them (``all_reduce(MEAN)``, together with the loss), and every
replica applies the same update to its own copy, so after every step all workers hold the
same parameters, equal to those of one process training on the combined batches.

- ``tf.distribute.MultiWorkerMirroredStrategy``: one worker per process (on one or many
  hosts), the cluster from ``TF_CONFIG``. `multi_worker` builds one that waits a bounded time
  for its peers and names the ones it could not reach.
- ``tf.distribute.MirroredStrategy`` on one host: one process (rank 0 of 1); each local
  device is a replica that computes the gradient of the whole batch it is given (the mean of
  identical gradients), so the result equals a plain run: several devices give no speed-up.

A collective that waits longer than the model's ``timeout`` (seconds, default
`DEFAULT_TIMEOUT`; a peer died or hangs) ends with a `flux.BackendError` naming the workers
that no longer answer; TensorFlow's collectives cannot continue after that, so the process
should exit, and every worker restart with ``flux.train(..., resume=checkpoint)``.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys

import tensorflow as tf

from flux import BackendError

__all__ = ["DEFAULT_TIMEOUT", "multi_worker", "check_strategy", "cluster_of", "replicated",
           "all_mean", "collective_error", "unreachable"]

DEFAULT_TIMEOUT = 60.0
"""Seconds a collective (a step's all-reduce, the wait for the cluster) may wait for peers."""

COLLECTIVE_ERRORS = (tf.errors.DeadlineExceededError, tf.errors.UnavailableError,
                     tf.errors.CancelledError, tf.errors.AbortedError,
                     tf.errors.FailedPreconditionError, tf.errors.InternalError)

NOT_A_STRATEGY = ("tf backend: strategy= takes a tf.distribute.Strategy "
                  "(MirroredStrategy, MultiWorkerMirroredStrategy, flux_tf.multi_worker()); "
                  "found {found}")


def check_strategy(strategy, options: dict):
    """`strategy`, checked: a `tf.distribute.Strategy`, not combined with ``device=``."""
    if not isinstance(strategy, tf.distribute.Strategy):
        raise BackendError(NOT_A_STRATEGY.format(found=type(strategy).__name__), trace=[])
    if options.get("device") is not None:
        raise BackendError("tf backend: device= and strategy= exclude each other: the "
                           "strategy places the variables on its own devices", trace=[])
    return strategy


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG")
    if not text:
        return {}
    try:
        config = json.loads(text)
    except ValueError as error:
        raise BackendError(f"tf backend: TF_CONFIG is not JSON ({error}): {text!r}",
                           trace=[]) from None
    if not isinstance(config, dict):
        raise BackendError(f"tf backend: TF_CONFIG is a JSON object, found {text!r}", trace=[])
    return config


def _check_tf_config(config: dict) -> None:
    """TF_CONFIG names a cluster and, in it, this task; else a BackendError saying what is
    missing."""
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise BackendError("tf backend: TF_CONFIG has no \"cluster\" (a dict of job name to "
                           f"list of host:port); found {config!r}", trace=[])
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise BackendError("tf backend: TF_CONFIG has no \"task\" {\"type\": ..., \"index\": "
                           f"...}} saying which worker this process is; found {config!r}",
                           trace=[])
    hosts = cluster.get(task["type"])
    if not isinstance(hosts, list) or not 0 <= task["index"] < len(hosts):
        raise BackendError(f"tf backend: TF_CONFIG's task is {task['type']} "
                           f"{task['index']}, but its cluster has no such entry (cluster: "
                           f"{json.dumps(cluster)})", trace=[])
    for job, entries in cluster.items():
        for i, address in enumerate(entries):
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise BackendError(f"tf backend: TF_CONFIG's {job} {i} is {address!r}, "
                                   f"expected host:port", trace=[])


def _addresses(config: dict) -> list[tuple[str, str]]:
    """``(who, host:port)`` of every task of TF_CONFIG's cluster but this one."""
    task = config.get("task", {})
    return [(f"{job} {i}", address) for job, entries in config.get("cluster", {}).items()
            for i, address in enumerate(entries)
            if (job, i) != (task.get("type"), task.get("index"))]


def unreachable(config: dict | None = None, wait: float = 1.0) -> list[str]:
    """The peers of TF_CONFIG's cluster that accept no TCP connection now, as ``"worker 1 at
    127.0.0.1:4567"``."""
    config = _tf_config() if config is None else config
    down = []
    for who, address in _addresses(config):
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=wait).close()
        except OSError:
            down.append(f"{who} at {address}")
    return down


def multi_worker(timeout: float = DEFAULT_TIMEOUT):
    """A `tf.distribute.MultiWorkerMirroredStrategy` for the cluster of ``TF_CONFIG`` whose
    collectives (the wait for every worker at the start, each step's all-reduce) give up after
    `timeout` seconds: a worker whose peers are not all up within `timeout` raises a
    `flux.BackendError` naming the addresses it could not reach, instead of waiting forever.
    Without TF_CONFIG it is a one-worker strategy (rank 0 of 1)."""
    config = _tf_config()
    if config:
        _check_tf_config(config)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    # The constructor waits for every worker (it lists their devices) with no bound, inside
    # C++ code that holds the interpreter: a watchdog process ends this one after `timeout` s,
    # printing the peers it could not reach, unless told (its stdin closed) that all are up.
    watchdog = subprocess.Popen(
        [sys.executable, "-c", WATCHDOG, str(os.getpid()), str(timeout),
         json.dumps(_addresses(config)), _me(config)], stdin=subprocess.PIPE)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    finally:
        watchdog.stdin.close()
        watchdog.wait()


WATCHDOG = """
import json, os, select, signal, socket, sys
pid, timeout, peers, me = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3]), \\
    sys.argv[4]
if not select.select([sys.stdin], [], [], timeout)[0]:       # still waiting for the cluster
    down = []
    for who, address in peers:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except OSError:
            down.append(f"{who} at {address}")
    down = down or ["(every address accepts connections: a peer hangs)"]
    sys.stderr.write(f"flux.BackendError: tf backend: {me} waited {timeout:g} s for the "
                     f"cluster of TF_CONFIG and could not reach {', '.join(down)}; "
                     f"ended this process (pid {pid}) with SIGKILL\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


def _me(config: dict) -> str:
    task = config.get("task", {})
    return f"{task.get('type', 'worker')} {task.get('index', 0)} of TF_CONFIG"


def cluster_of(strategy) -> tuple[int, int]:
    """``(rank, workers)`` of this process under `strategy`: its position among the worker
    processes (a chief first, then the workers by index) and their number."""
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    jobs = [job for job in ("chief", "worker") if spec.get(job)]
    if not jobs:
        return 0, 1
    tasks = [(job, i) for job in jobs for i in range(len(spec[job]))]
    me = (resolver.task_type, resolver.task_id)
    return (tasks.index(me) if me in tasks else 0), len(tasks)


def scope(strategy):
    """``with scope(strategy):`` creates the strategy's variables (none: plain ones)."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def all_mean(values: list, timeout: float) -> list:
    """Inside ``strategy.run``: the mean over every replica of every worker of each of the
    floating tensors `values` (others kept), in one batched all-reduce giving up after
    `timeout` seconds."""
    ctx = tf.distribute.get_replica_context()
    floating = [i for i, v in enumerate(values) if v.dtype.is_floating]
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    # (tf.identity: a replica's own tensor; the same input tensor on every replica would be
    # taken for a value already reduced, with no device to reduce to)
    reduced = ctx.all_reduce(tf.distribute.ReduceOp.MEAN,
                             [tf.identity(values[i]) for i in floating], options=options)
    out = list(values)
    for i, v in zip(floating, reduced):
        out[i] = v
    return out


def replicated(strategy, fn):
    """`fn` (taking and returning lists of tensors, inside a `tf.function`) run by
    ``strategy.run`` on every replica; the outputs of this worker's first replica."""
    def run(*xs):
        outs = strategy.run(fn, args=xs)
        return [strategy.experimental_local_results(o)[0] for o in outs]
    return run


def collective_error(error: Exception, timeout: float) -> BackendError:
    """A failed collective (a peer died, hangs or cannot be reached) as a BackendError naming
    the peers that accept no connection now."""
    config = _tf_config()
    down = unreachable(config) if config else []
    who = (f"unreachable now: {', '.join(down)}" if down else
           "every peer of TF_CONFIG still accepts connections (one may hang)")
    return BackendError(f"tf backend: {_me(config)}: a collective of the training step "
                        f"failed or waited more than {timeout:g} s for the other workers "
                        f"({who}); TensorFlow cannot continue after this: restart every worker "
                        f"with flux.train(..., resume=checkpoint) ({type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''})", trace=[])
