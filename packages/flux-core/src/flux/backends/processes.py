"""The local processes of a data-parallel run, started and stopped together: what the backends'
one-machine launchers (``python -m flux_tf.launch``, ``python -m flux_mxnet.launch``) share.

A `ProcessGroup` starts each command in a session of its own (so that stopping it ends its
children too), optionally passing its output through with a prefix (keeping its last lines),
and `wait`\\ s for the workers: the first one to fail (or any helper process, such as a
parameter server, failing) ends the wait with its status, as does a timeout (status 124). On
leaving the ``with`` block every process still running is sent SIGTERM, then SIGKILL after a
few seconds, and reaped: nothing outlives the launcher.

>>> import sys
>>> with ProcessGroup() as group:
...     ok = group.start([sys.executable, "-c", "pass"], dict(os.environ))
...     group.wait([ok], timeout=60)
0
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

__all__ = ["ProcessGroup", "free_ports", "exit_status", "TIMED_OUT"]

TIMED_OUT = 124
"""The status of a run stopped by its timeout (as coreutils' ``timeout`` reports it)."""


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """`n` distinct TCP ports of `host` free now (bound to port 0 together, read, closed)."""
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


def exit_status(code: int) -> int:
    """A process's return code as a shell reports it: 128 + the signal that killed it."""
    return 128 - code if code < 0 else code


class ProcessGroup:
    """Processes started in their own sessions, waited for and stopped together (see the
    module). ``tails[p]`` holds the last lines of a process started with a `prefix`."""

    def __init__(self, out=None, name: str = "launch"):
        self.out = sys.stdout if out is None else out
        self.name = name
        self.processes: list[subprocess.Popen] = []
        self.tails: dict[subprocess.Popen, list[str]] = {}
        self._threads: dict[subprocess.Popen, threading.Thread] = {}

    def start(self, command: list, env: dict, prefix: str | None = None) -> subprocess.Popen:
        """Start `command` with environment `env`; with a `prefix`, its output (stdout and
        stderr) is written to this group's `out`, every line prefixed, else it is inherited."""
        piped = prefix is not None
        process = subprocess.Popen(command, env=env, start_new_session=True, text=piped,
                                   stdout=subprocess.PIPE if piped else None,
                                   stderr=subprocess.STDOUT if piped else None)
        self.processes.append(process)
        if piped:
            tail = self.tails[process] = []
            thread = threading.Thread(target=self._forward, args=(process.stdout, prefix, tail),
                                      daemon=True)
            thread.start()
            self._threads[process] = thread
        return process

    def _forward(self, stream, prefix: str, tail: list) -> None:
        for line in iter(stream.readline, ""):
            tail.append(line)
            del tail[:-50]
            self.out.write(prefix + line)
            self.out.flush()
        stream.close()

    def wait(self, workers: list, timeout: float, helpers=(), grace: float = 0.0,
             describe=None) -> int:
        """0 once every process of `workers` succeeded (then `helpers` get `grace` seconds to
        leave by themselves); the status of the first of `workers` or `helpers` to fail; or
        `TIMED_OUT` after `timeout` seconds. `describe(process)` names a process in the
        message written when one fails."""
        describe = describe or (lambda p: f"process {p.pid}")
        deadline = time.monotonic() + timeout
        while True:
            for process in [*workers, *helpers]:
                code = process.poll()
                if code not in (None, 0):
                    self._join([process])       # (its last lines before the message)
                    self.out.write(f"{self.name}: {describe(process)} exited with status "
                                   f"{exit_status(code)}; stopping the others\n")
                    self.out.flush()
                    return exit_status(code)
            if all(p.poll() == 0 for p in workers):
                end = min(deadline, time.monotonic() + grace)
                while time.monotonic() < end and any(p.poll() is None for p in helpers):
                    time.sleep(0.05)
                self._join(workers)
                return 0
            if time.monotonic() > deadline:
                running = [describe(p) for p in workers if p.poll() is None]
                self.out.write(f"{self.name}: timeout: {', '.join(running)} still running "
                               f"after {timeout:g} s; stopping every process\n")
                self.out.flush()
                return TIMED_OUT
            time.sleep(0.05)

    def _join(self, processes) -> None:
        """Wait (a bounded time) for the output of `processes`, which have exited, to be
        passed through."""
        for process in processes:
            if process in self._threads:
                self._threads[process].join(5)

    def stop(self) -> None:
        """End every process still running, with its session: SIGTERM, then SIGKILL after
        3 seconds; reap them all."""
        for process in self.processes:
            if process.poll() is None:
                _signal(process, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(process, signal.SIGKILL)
                process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(process, sig) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
