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
import sys
import time

from flux.backends import ProcessGroup, free_ports

__all__ = ["main", "launch", "free_port", "dmlc_settings"]

GRACE = 15.0
"""Seconds the servers and the scheduler get to leave after the workers are done."""

SERVE = ["-c", "import mxnet"]
"""What the scheduler and the servers run: importing MXNet with that DMLC_ROLE serves."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def dmlc_settings(port: int, workers: int, servers: int, host: str = "127.0.0.1") -> dict:
    """The DMLC_* settings every process of a run shares (DMLC_ROLE is added per process)."""
    return {"DMLC_PS_ROOT_URI": host, "DMLC_PS_ROOT_PORT": str(port),
            "DMLC_NUM_SERVER": str(servers), "DMLC_NUM_WORKER": str(workers),
            "DMLC_NODE_HOST": host, "PS_VERBOSE": "0"}


def launch(script: list, workers: int = 2, servers: int = 1, timeout: float = 600.0,
           python: str = sys.executable, tries: int = 3, grace: float = GRACE) -> int:
    """Run `script` (a script path and its arguments) as `workers` workers with `servers`
    servers and a scheduler on 127.0.0.1 (see the module); the exit status. The servers and
    the scheduler get `grace` seconds to leave after the workers are done."""
    if workers < 1 or servers < 1:
        raise ValueError(f"launch: needs at least 1 worker and 1 server, given -n {workers} "
                         f"-s {servers}")
    with ProcessGroup(sys.stderr, "flux_mxnet.launch") as group:
        for attempt in range(tries):
            port = free_port()
            settings = dmlc_settings(port, workers, servers)
            scheduler = group.start([python, *SERVE], _role("scheduler", settings))
            time.sleep(0.3)
            if scheduler.poll() is None or attempt + 1 == tries:
                break                   # (else the port was taken meanwhile: another one)
        helpers = [scheduler] + [group.start([python, *SERVE], _role("server", settings))
                                 for _ in range(servers)]
        ranks = [group.start([python, *script], _role("worker", settings))
                 for _ in range(workers)]

        def describe(process) -> str:
            role = ("the scheduler" if process is scheduler else
                    "a server" if process in helpers else "a worker")
            return f"{role} (pid {process.pid}, scheduler port {port})"
        return group.wait(ranks, timeout, helpers, grace, describe)


def _role(role: str, settings: dict) -> dict:
    return {**os.environ, **settings, "DMLC_ROLE": role}


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
