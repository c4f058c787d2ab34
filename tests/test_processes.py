"""flux.backends.ProcessGroup, the launchers' shared machinery: the first failure ends a run
with its status, a timeout with 124, output passes through prefixed, and nothing outlives the
group. Every process here is a short Python one-liner; the waits are bounded."""
import io
import os
import socket
import sys
import time

import pytest

from flux.backends import ProcessGroup, exit_status, free_ports


def python(code: str) -> list:
    return [sys.executable, "-c", code]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_every_worker_succeeding_is_status_0_and_output_passes_through_prefixed():
    out = io.StringIO()
    with ProcessGroup(out, "test") as group:
        workers = [group.start(python(f"print('hello from {i}')"), dict(os.environ),
                               f"[w{i}] ") for i in range(2)]
        assert group.wait(workers, timeout=30) == 0
    assert "[w0] hello from 0\n" in out.getvalue() and "[w1] hello from 1\n" in out.getvalue()
    assert group.tails[workers[1]] == ["hello from 1\n"]


def test_the_first_failure_ends_the_run_with_its_status_and_stops_the_others():
    out = io.StringIO()
    began = time.monotonic()
    with ProcessGroup(out, "test") as group:
        slow = group.start(python("import time; time.sleep(60)"), dict(os.environ))
        failing = group.start(python("import sys; sys.exit(3)"), dict(os.environ))
        assert group.wait([slow, failing], timeout=30,
                          describe=lambda p: "the failing one" if p is failing else "slow") == 3
    assert slow.poll() is not None and gone(slow.pid)
    assert time.monotonic() - began < 20
    assert "test: the failing one exited with status 3; stopping the others" in out.getvalue()


def test_a_helper_that_fails_ends_the_run():
    with ProcessGroup(io.StringIO()) as group:
        worker = group.start(python("import time; time.sleep(60)"), dict(os.environ))
        server = group.start(python("import os; os.abort()"), dict(os.environ))
        assert group.wait([worker], timeout=30, helpers=[server]) == 128 + 6    # SIGABRT
    assert gone(worker.pid)


def test_a_timeout_is_status_124_and_kills_a_process_that_ignores_sigterm():
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('started', flush=True); time.sleep(60)")
    out = io.StringIO()
    began = time.monotonic()
    with ProcessGroup(out, "test") as group:
        stubborn = group.start(python(code), dict(os.environ), "")
        assert group.wait([stubborn], timeout=1.5) == 124
    assert gone(stubborn.pid)
    assert time.monotonic() - began < 15
    assert "timeout" in out.getvalue()


@pytest.mark.parametrize("code, status", [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_status_is_what_a_shell_reports(code, status):
    assert exit_status(code) == status


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
