"""Start a data-parallel MXNet run on this machine: the ps-lite scheduler, S servers and N
workers, all on 127.0.0.1.

    python -m flux_mxnet.launch -n 2 -s 1 [--timeout 600] script.py [args ...]

Every process gets MXNet's settings: DMLC_ROLE (scheduler, server, worker), DMLC_PS_ROOT_URI
(127.0.0.1), DMLC_PS_ROOT_PORT (a free port), DMLC_NUM_SERVER, DMLC_NUM_WORKER,
DMLC_NODE_HOST (127.0.0.1) and PS_VERBOSE=0. The scheduler and the servers run
``python -c "import mxnet"`` (importing MXNet with that role runs its server loop); each worker
runs ``python script.py args`` with its output passed through. The launcher waits at most
`--timeout` seconds; it ends every process (each in its own process group) when a worker
fails, when time is up (status 124), or once the workers are done, and returns 0 or the
first failing worker's status. On a cluster, start the same commands with the same settings
on each host (docs/distributed.md); this module is only the one-machine case.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

__all__ = ["main", "launch", "free_port", "dmlc_settings"]

GRACE = 15.0
"""Seconds the servers and the scheduler get to leave after the workers are done."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dmlc_settings(port: int, workers: int, servers: int, host: str = "127.0.0.1") -> dict:
    """The DMLC_* settings every process of a run shares (DMLC_ROLE is added per process)."""
    return {"DMLC_PS_ROOT_URI": host, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers),
            "DMLC_NODE_HOST": host, "PS_VERBOSE": "0"}


def _start(role: str, command: list, settings: dict) -> subprocess.Popen:
    env = {**os.environ, **settings, "DMLC_ROLE": role}
    return subprocess.Popen(command, env=env, start_new_session=True)


def _stop(processes) -> None:
    """SIGKILL every process group still running, and reap them."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def launch(script: list, workers: int = 2, servers: int = 1, timeout: float = 600.0,
           python: str = sys.executable, tries: int = 3, grace: float = GRACE) -> int:
    """Run `script` (a script path and its arguments) as `workers` workers with `servers`
    servers and a scheduler on 127.0.0.1 (see the module); the exit status. The servers and
    the scheduler get `grace` seconds to leave after the workers are done."""
    if workers < 1 or servers < 1:
        raise ValueError(f"launch: needs at least 1 worker and 1 server, given -n {workers} "
                         f"-s {servers}")
    for attempt in range(tries):
        port = free_port()
        settings = dmlc_settings(port, workers, servers)
        scheduler = _start("scheduler", [python, "-c", "import mxnet"], settings)
        time.sleep(0.3)
        if scheduler.poll() is not None and attempt + 1 < tries:
            continue                    # the port was taken meanwhile: another one
        break
    processes = [scheduler]
    try:
        processes += [_start("server", [python, "-c", "import mxnet"], settings)
                      for _ in range(servers)]
        ranks = [_start("worker", [python, *script], settings) for _ in range(workers)]
        processes += ranks
        return _wait(processes, ranks, timeout, port, grace)
    finally:
        _stop(processes)


def _wait(processes, ranks, timeout: float, port: int, grace: float) -> int:
    """Wait for the workers: the first failing status, 124 after `timeout`, else 0 (the
    servers and scheduler get `grace` seconds to leave after the workers)."""
    deadline = time.monotonic() + timeout
    while True:
        for process in ranks:
            code = process.poll()
            if code is not None and code != 0:
                print(f"flux_mxnet.launch: a worker (pid {process.pid}) exited with status "
                      f"{code}; stopping the others", file=sys.stderr)
                return code
        for process in processes[:len(processes) - len(ranks)]:
            code = process.poll()
            if code is not None and code != 0:
                role = "the scheduler" if process is processes[0] else "a server"
                print(f"flux_mxnet.launch: {role} (pid {process.pid}, scheduler port {port}) "
                      f"exited with status {code}; stopping the others", file=sys.stderr)
                return code
        if all(process.poll() == 0 for process in ranks):
            end = min(deadline, time.monotonic() + grace)
            while time.monotonic() < end and any(p.poll() is None for p in processes):
                time.sleep(0.05)
            return 0
        if time.monotonic() > deadline:
            print(f"flux_mxnet.launch: not done after {timeout:g} s; stopping every process",
                  file=sys.stderr)
            return 124
        time.sleep(0.05)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flux_mxnet.launch",
        description="Run a flux script as N MXNet kvstore workers with S servers and a "
                    "scheduler on 127.0.0.1.")
    parser.add_argument("-n", "--workers", type=int, default=2, help="worker processes")
    parser.add_argument("-s", "--servers", type=int, default=1, help="server processes")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds before every process is stopped (status 124)")
    parser.add_argument("script", help="the worker script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    try:
        return launch([options.script, *options.args], options.workers, options.servers,
                      options.timeout)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
