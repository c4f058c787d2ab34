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
import sys

from flux.backends import ProcessGroup, free_ports

__all__ = ["free_ports", "tf_configs", "launch", "main"]

PORT_TAKEN = ("Address already in use", "Failed to add port", "address in use")


def tf_configs(ports: list[int], host: str = "127.0.0.1") -> list[str]:
    """The ``TF_CONFIG`` of each worker of a cluster of workers on `host`'s `ports`."""
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(len(ports))]


def _attempt(command, n, timeout, host, out) -> tuple[int, bool]:
    """One start of `n` workers: (status, whether a port was taken)."""
    with ProcessGroup(out, "flux_tf.launch") as group:
        workers = [group.start(command, dict(os.environ, TF_CONFIG=config), f"[worker {i}] ")
                   for i, config in enumerate(tf_configs(free_ports(n, host), host))]
        status = group.wait(workers, timeout,
                            describe=lambda p: f"worker {workers.index(p)}")
        taken = status != 0 and any(s in line for p in workers for line in group.tails[p]
                                    for s in PORT_TAKEN)
        return status, taken


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
