"""Start N local TensorFlow workers of one script: ``python -m flux_tf.launch -n 2 script.py
[args]``.

Each worker is ``python script.py args`` with its own ``TF_CONFIG`` (a cluster of N workers on
free ports of 127.0.0.1, and its index in it), so a script that compiles its model with
``flux.tf(model, strategy=flux_tf.multi_worker())`` trains data-parallel. The launcher prints
every worker's output prefixed with ``[worker i]``, waits at most ``--timeout`` seconds, and
returns 0 when all workers succeed; when one fails it kills the others and returns the first
failing status (128 + signal for a worker killed by a signal, 124 on timeout). A start that
fails because another program took a chosen port is retried on new ports.

On a real cluster there is no launcher: run the same script once per host with that host's
``TF_CONFIG`` (see docs/distributed.md).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["free_ports", "tf_configs", "launch", "main"]

PORT_TAKEN = ("Address already in use", "Failed to add port", "address in use")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct ports of `host` free now (bound to port 0, read, closed)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_configs(ports: list[int], host: str = "127.0.0.1") -> list[str]:
    """The ``TF_CONFIG`` of each worker of a cluster of workers on `host`'s `ports`."""
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(len(ports))]


def _forward(stream, prefix: str, tail: list, out) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line)
        del tail[:-50]
        out.write(prefix + line)
        out.flush()
    stream.close()


def _kill(procs) -> None:
    """End every worker still running, with its process group (TERM, then KILL)."""
    for p in procs:
        if p.poll() is None:
            with _quiet():
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 3
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with _quiet():
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, ProcessLookupError)


def _status(code: int) -> int:
    return 128 - code if code < 0 else code


def _attempt(command, n, timeout, host, out) -> tuple[int, bool]:
    """One start of `n` workers: (status, whether a port was taken)."""
    configs = tf_configs(free_ports(n, host), host)
    procs, threads, tails = [], [], []
    try:
        for i, config in enumerate(configs):
            env = dict(os.environ, TF_CONFIG=config)
            p = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
            tail: list = []
            t = threading.Thread(target=_forward, args=(p.stdout, f"[worker {i}] ", tail, out),
                                 daemon=True)
            t.start()
            procs.append(p), threads.append(t), tails.append(tail)
        deadline = time.monotonic() + timeout
        while True:
            codes = [p.poll() for p in procs]
            failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i = failed[0]
                _kill(procs)
                for t in threads:
                    t.join(5)
                taken = any(s in line for line in tails[i] for s in PORT_TAKEN)
                out.write(f"flux_tf.launch: worker {i} exited with status "
                          f"{_status(codes[i])}; stopped the others\n")
                return _status(codes[i]), taken
            if all(c == 0 for c in codes):
                for t in threads:
                    t.join(5)
                return 0, False
            if time.monotonic() > deadline:
                running = [i for i, c in enumerate(codes) if c is None]
                out.write(f"flux_tf.launch: timeout: workers {running} still running after "
                          f"{timeout:g} s; killed them all\n")
                return 124, False
            time.sleep(0.05)
    finally:
        _kill(procs)


def launch(script_args: list[str], n: int, timeout: float = 600.0, host: str = "127.0.0.1",
           out=None, attempts: int = 3) -> int:
    """Run ``python script args`` as `n` workers of one TF cluster on `host` (see the
    module); the status of the run."""
    out = sys.stdout if out is None else out
    command = [sys.executable, *script_args]
    for attempt in range(attempts):
        status, taken = _attempt(command, n, timeout, host, out)
        if not taken:
            return status
        out.write(f"flux_tf.launch: a port was taken by another program; starting again on "
                  f"new ports ({attempt + 2}/{attempts})\n")
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flux_tf.launch",
        description="Start N local TensorFlow workers of a script, each with its TF_CONFIG.")
    parser.add_argument("-n", "--workers", type=int, default=2, help="number of workers")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for all workers (default 600)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("script", help="the Python script every worker runs")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"-n is a number of workers ≥ 1, found {args.workers}")
    return launch([args.script, *args.args], args.workers, args.timeout, args.host)


if __name__ == "__main__":
    sys.exit(main())
