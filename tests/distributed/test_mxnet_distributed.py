"""Data-parallel training on MXNet's kvstore (``flux.mxnet(model, kvstore=...)``), with every
process on 127.0.0.1: 2 workers, 1 server and the scheduler (`flux_mxnet.launch`) train an MLP
and an unrolled LSTM with SGD and ADAM and must match a single process on the combined batches;
a killed worker makes the other fail within its timeout, and a resumed run ends where an
uninterrupted one does; a worker pointed at no scheduler fails in bounded time naming it.

The worker script is `mx_train.py` beside this file. Every subprocess has a timeout and runs in
its own process group, killed in ``finally``.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
flux_mxnet = pytest.importorskip("flux_mxnet")

import flux  # noqa: E402
from flux import BackendError  # noqa: E402
from flux_mxnet import launch  # noqa: E402

HERE = Path(__file__).parent
WORKER = str(HERE / "mx_train.py")
_spec = importlib.util.spec_from_file_location("mx_train", WORKER)
mx_train = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mx_train)

STEPS, WORKERS = 6, 2


def run_launcher(out, *args, workers=WORKERS, timeout=90):
    """``python -m flux_mxnet.launch -n workers -s 1 mx_train.py out args``: its status and
    output."""
    command = [sys.executable, "-m", "flux_mxnet.launch", "-n", str(workers), "-s", "1",
               "--timeout", str(timeout - 10), WORKER, str(out), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def reference(kind, opt, steps=STEPS, workers=WORKERS) -> list:
    """Single process, plain ``flux.mxnet``: the parameters after each step of training on the
    combined batches (step i: the items i·workers ... i·workers + workers − 1 stacked)."""
    model = mx_train.model(kind)
    items = mx_train.data(kind, steps * workers)
    batches = [(np.concatenate([x for x, _ in items[i * workers:(i + 1) * workers]]),
                np.concatenate([y for _, y in items[i * workers:(i + 1) * workers]]))
               for i in range(steps)]
    after = []
    flux.train(flux.mxnet(model), batches, loss=flux.mse, opt=mx_train.optimiser(opt),
               cb=lambda: after.append(mx_train.values(model)), verbose=False)
    return after


def load(out, rank) -> dict:
    with np.load(Path(out) / f"rank{rank}.npz") as archive:
        return {k: archive[k] for k in archive.files}


@pytest.mark.parametrize("kind, opt, kvstore", [
    ("mlp", "sgd", "dist_sync"), ("mlp", "adam", "dist_sync"), ("lstm", "sgd", "dist_sync"),
    ("lstm", "adam", "dist_sync"), ("mlp", "momentum", "dist_sync"),
    ("mlp", "adam", "dist_device_sync")])
def test_two_workers_equal_one_process_on_the_combined_batches(tmp_path, kind, opt, kvstore):
    """(With dist_device_sync, rank 1 starts from other values: the chief's win.)"""
    perturb = ["--perturb"] if kvstore == "dist_device_sync" else []
    status, output = run_launcher(tmp_path, "--model", kind, "--opt", opt,
                                  "--steps", str(STEPS), "--kvstore", kvstore, *perturb)
    assert status == 0, output
    ranks = [load(tmp_path, r) for r in range(WORKERS)]
    assert sorted(int(r["rank"]) for r in ranks) == [0, 1]
    assert all(int(r["workers"]) == WORKERS and int(r["steps"]) == STEPS for r in ranks)
    expected = reference(kind, opt)
    for step, want in enumerate(expected, 1):
        for name, value in want.items():
            key = f"step{step}.{name}"
            np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
            np.testing.assert_allclose(ranks[0][key], value, rtol=2e-5, atol=2e-6,
                                       err_msg=key)
    first = mx_train.values(mx_train.model(kind))
    assert any(not np.allclose(first[n], ranks[0][f"final.{n}"]) for n in first)


def start(role, command, settings, **kw):
    return subprocess.Popen(command, env={**os.environ, **settings, "DMLC_ROLE": role},
                            start_new_session=True, **kw)


def stop(processes):
    for p in processes:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def test_a_killed_worker_stops_the_other_in_time_and_the_run_resumes(tmp_path):
    """Rank 1 SIGKILLs itself before step 4; rank 0 waits `timeout` seconds in the all-reduce,
    then fails naming what it waited on. Resumed from the chief's checkpoint (written after
    every step), both workers end with the parameters of an uninterrupted run."""
    ckpt, timeout = tmp_path / "ckpt", 6
    settings = launch.dmlc_settings(launch.free_port(), WORKERS, 1)
    server = [sys.executable, "-c", "import mxnet"]
    processes = [start("scheduler", server, settings), start("server", server, settings)]
    try:
        args = [sys.executable, WORKER, str(tmp_path), "--opt", "adam", "--checkpoint",
                str(ckpt), "--every", "1", "--die-at", "4", "--timeout", str(timeout)]
        workers = [start("worker", args, settings, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True) for _ in range(WORKERS)]
        processes += workers
        began = time.monotonic()
        results = [w.communicate(timeout=60) for w in workers]
        took = time.monotonic() - began
    finally:
        stop(processes)
    codes = sorted(w.returncode for w in workers)
    assert codes == [-signal.SIGKILL, 1], results
    survivor = next(out for w, out in zip(workers, results) if w.returncode == 1)
    assert f"waited {timeout} s for all-reducing the gradients" in survivor[1], survivor[1]
    assert f"scheduler {settings['DMLC_PS_ROOT_URI']}:{settings['DMLC_PS_ROOT_PORT']}" in \
        survivor[1]
    assert took < timeout + 30
    assert ckpt.exists()

    status, output = run_launcher(tmp_path, "--opt", "adam", "--checkpoint", str(ckpt),
                                  "--every", "1", "--resume", str(ckpt))
    assert status == 0, output
    ranks = [load(tmp_path, r) for r in range(WORKERS)]
    assert [int(r["steps"]) for r in ranks] == [STEPS - 3] * WORKERS    # steps 4..6 only
    for name, value in reference("mlp", "adam")[-1].items():
        np.testing.assert_array_equal(ranks[0][f"final.{name}"], ranks[1][f"final.{name}"])
        np.testing.assert_allclose(ranks[0][f"final.{name}"], value, rtol=2e-5, atol=2e-6,
                                   err_msg=name)


def test_a_worker_that_reaches_no_scheduler_fails_in_bounded_time_naming_it(tmp_path):
    port = launch.free_port()                   # nothing listens there
    settings = launch.dmlc_settings(port, WORKERS, 1)
    began = time.monotonic()
    worker = start("worker", [sys.executable, WORKER, str(tmp_path), "--timeout", "3"],
                   settings, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = worker.communicate(timeout=60)
    finally:
        stop([worker])
    assert worker.returncode == 1, err
    assert time.monotonic() - began < 40
    assert f"DMLC_PS_ROOT_URI:DMLC_PS_ROOT_PORT = 127.0.0.1:{port}" in err, err
    assert "BackendError" in err and "waited 3 s" in err


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_dist_async_trains_and_ends_in_sync(tmp_path, opt):
    """No single-process run equals dist_async: it trains (the parameters moved, the loss
    fell), and after `flux_mxnet.synchronise` both workers hold the same parameters."""
    status, output = run_launcher(tmp_path, "--kvstore", "dist_async", "--steps", "8",
                                  "--opt", opt)
    assert status == 0, output
    ranks = [load(tmp_path, r) for r in range(WORKERS)]
    first = mx_train.values(mx_train.model("mlp"))
    for name in first:
        final = [r[f"final.{name}"] for r in ranks]
        np.testing.assert_array_equal(final[0], final[1], err_msg=name)
        assert np.isfinite(final[0]).all()
    assert any(not np.allclose(first[n], ranks[0][f"final.{n}"]) for n in first)
    x = np.concatenate([x for x, _ in mx_train.data("mlp", 16)])
    y = np.concatenate([y for _, y in mx_train.data("mlp", 16)])
    trained = mx_train.model("mlp")
    for name, p in flux.params(trained).items():
        p.value = ranks[0][f"final.{name}"]
    before = float(flux.mse(mx_train.model("mlp")(x), y))
    assert float(flux.mse(trained(x), y)) < before


def test_models_of_one_process_share_its_store(tmp_path):
    command = [sys.executable, "-m", "flux_mxnet.launch", "-n", "2", "-s", "1", "--timeout",
               "60", str(HERE / "mx_shared.py"), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=80)
    assert done.returncode == 0, done.stdout + done.stderr
    ranks = [load(tmp_path, r) for r in range(WORKERS)]
    for key in ranks[0]:
        np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    assert "already joined the ps-lite cluster with a 'dist_sync' kvstore" in \
        str(ranks[0]["refused"])
    # rank r fed 4 rows of r + 1: one process on the 8 rows together
    flux.seed(0)
    a, b = flux.Chain(flux.Affine(3, 2)), flux.Chain(flux.Affine(3, 2))
    x = np.repeat(np.array([1, 2], np.float32), 4)[:, None] * np.ones((1, 3), np.float32)
    y = np.zeros((8, 2), np.float32)
    flux.train(flux.mxnet(a), [(x, y)] * 3, verbose=False)
    flux.train(flux.mxnet(b), [(x, y)] * 2, opt=flux.Momentum(0.1), verbose=False)
    for prefix, model in (("a", a), ("b", b)):
        for name, p in flux.params(model).items():
            np.testing.assert_allclose(ranks[0][f"{prefix}.{name}"], p.value, rtol=2e-5,
                                       atol=2e-6)


@pytest.mark.parametrize("name", ["local", "device"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_a_local_kvstore_in_one_process_trains_as_without(name, opt):
    items = mx_train.data("mlp", 4)
    want = mx_train.model("mlp")
    flux.train(flux.mxnet(want), items, loss=flux.mse, opt=mx_train.optimiser(opt),
               verbose=False)
    got = mx_train.model("mlp")
    compiled = flux.compile(got, "mxnet", kvstore=name)
    assert compiled.kvstore.name == name
    assert (compiled.rank, compiled.workers) == (0, 1)
    assert flux.shard(items, compiled) == items
    flux.train(compiled, items, loss=flux.mse, opt=mx_train.optimiser(opt), verbose=False)
    for key, value in mx_train.values(want).items():
        np.testing.assert_allclose(mx_train.values(got)[key], value, rtol=1e-6, atol=1e-7)


def test_flux_update_goes_through_the_kvstore():
    x, y = mx_train.data("mlp", 1)[0]
    want, got = mx_train.model("mlp"), mx_train.model("mlp")
    for _, compiled in ((want, flux.mxnet(want)), (got, flux.mxnet(got, kvstore="local"))):
        flux.back(compiled, np.ones((x.shape[0], 2), np.float32), x)
        flux.update(compiled, flux.ADAM(0.01))
    for key, value in mx_train.values(want).items():
        np.testing.assert_allclose(mx_train.values(got)[key], value, rtol=1e-6, atol=1e-7)


def test_dist_settings_missing_is_an_error_saying_which(monkeypatch):
    for key in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(BackendError, match="missing DMLC_ROLE, DMLC_PS_ROOT_URI, "
                                           "DMLC_PS_ROOT_PORT.*flux_mxnet.launch"):
        flux.mxnet(mx_train.model("mlp"), kvstore="dist_sync")


def test_kvstore_option_errors():
    model = mx_train.model("mlp")
    with pytest.raises(flux.FluxTypeError, match="kvstore= takes a name"):
        flux.mxnet(model, kvstore=3)
    with pytest.raises(TypeError, match="needs kvstore="):
        flux.mxnet(model, timeout=5)
    with pytest.raises(flux.FluxValueError, match="timeout= is a number of seconds"):
        flux.mxnet(model, kvstore="local", timeout=0)
    compiled = flux.mxnet(model, kvstore="local")
    x, y = mx_train.data("mlp", 1)[0]

    class Mine(flux.SGD):
        """An optimiser of the user's own (MXNet does not run its update)."""

    with pytest.raises(flux.FluxError, match="takes SGD, Momentum or ADAM, found Mine"):
        flux.train(compiled, [(x, y)], loss=flux.mse, opt=Mine(0.01), verbose=False)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_launcher_returns_the_first_failing_status_and_ends_everyone(tmp_path):
    script = write(tmp_path, "fail.py", "import os, sys\n"
                   "sys.exit(3 if os.environ['DMLC_ROLE'] == 'worker' else 0)\n")
    began = time.monotonic()
    assert launch.launch([script], workers=2, servers=1, timeout=30) == 3
    assert time.monotonic() - began < 20


def test_the_launcher_stops_everything_after_its_timeout(tmp_path):
    script = write(tmp_path, "slow.py", "import os, time\n"
                   "open(os.path.join(os.path.dirname(__file__), 'pid%d' % os.getpid()), 'w')\n"
                   "time.sleep(60)\n")
    began = time.monotonic()
    assert launch.launch([script], workers=2, servers=1, timeout=2) == 124
    assert time.monotonic() - began < 15
    pids = [int(p.name[3:]) for p in tmp_path.glob("pid*")]
    assert len(pids) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_the_launcher_sets_mxnets_settings(tmp_path):
    script = write(tmp_path, "env.py", "import os, sys\n"
                   "keys = ['DMLC_ROLE', 'DMLC_PS_ROOT_URI', 'DMLC_NUM_SERVER', "
                   "'DMLC_NUM_WORKER', 'PS_VERBOSE']\n"
                   "open(sys.argv[1] + str(os.getpid()), 'w').write("
                   "' '.join(os.environ[k] for k in keys) + ' ' + "
                   "os.environ['DMLC_PS_ROOT_PORT'])\n")
    assert launch.launch([script, str(tmp_path / "env")], workers=2, servers=1, timeout=30,
                         grace=1) == 0
    found = [p.read_text().split() for p in tmp_path.glob("env*[0-9]")]
    assert len(found) == 2
    assert all(f[:5] == ["worker", "127.0.0.1", "1", "2", "0"] for f in found)
    assert found[0][5] == found[1][5] and int(found[0][5]) > 0
