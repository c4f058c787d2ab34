"""Data-parallel training on tf.distribute (`flux_tf._distributed`, `flux_tf.launch`): two
MultiWorkerMirroredStrategy workers on 127.0.0.1 against one process on the combined batches,
a worker killed mid-run, resuming from the chief's checkpoint, and workers that cannot reach
their peers. Every process runs under a timeout and is killed with its process group."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow is not installed (pip install flux-tf)")
flux_tf = pytest.importorskip("flux_tf", reason="flux-tf is not installed")

import flux  # noqa: E402
import tensorflow as tf  # noqa: E402
from flux_tf.launch import free_ports, tf_configs  # noqa: E402

WORKER = str(Path(__file__).with_name("tf_train.py"))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
ENV.pop("TF_CONFIG", None)


def run(args, timeout=120, env=None):
    """``python args`` to the end (killed with its group after `timeout` s): (status, output)."""
    p = subprocess.Popen([sys.executable, *args], env=env or ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def launch(args, timeout=120):
    return run(["-m", "flux_tf.launch", "-n", "2", "--timeout", str(timeout - 10), WORKER,
                *args], timeout=timeout)


def params(path):
    with np.load(path) as f:
        return {k: f[k] for k in f}


def assert_same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5 if atol else 0, atol=atol, err_msg=k)


@pytest.mark.parametrize("model,opt,plain", [
    ("mlp", "sgd", False), ("mlp", "adam", False), ("lstm", "sgd", False),
    ("lstm", "adam", False), ("mlp", "momentum", False),
    ("lstm", "adam", True)])      # TF's own MultiWorkerMirroredStrategy(), as API.md has it
def test_two_workers_equal_one_process_on_combined_batches(tmp_path, model, opt, plain):
    steps = 3
    status, out = launch(["--model", model, "--opt", opt, "--steps", str(steps),
                          "--out", str(tmp_path / "d"), *(["--plain"] if plain else [])])
    assert status == 0, out
    status, out = run([WORKER, "--single", "--model", model, "--opt", opt, "--steps",
                       str(steps), "--out", str(tmp_path / "s")])
    assert status == 0, out
    for step in [*range(1, steps + 1), "final"]:
        w0, w1 = (params(tmp_path / "d" / f"{r}_{step}.npz") for r in (0, 1))
        assert_same(w0, w1)                          # the same parameters after every step
        assert_same(w0, params(tmp_path / "s" / f"single_{step}.npz"), atol=1e-6)
    start = params(tmp_path / "d" / "0_1.npz")      # and training moved them
    assert any(not np.array_equal(start[k], w0[k]) for k in start)


def test_killed_worker_stops_the_other_then_all_resume_to_the_uninterrupted_result(tmp_path):
    common = ["--model", "mlp", "--opt", "adam", "--steps", "4", "--timeout", "20"]
    ckpt = str(tmp_path / "ck.npz")
    ports = free_ports(2)
    procs = []
    try:
        for config in tf_configs(ports):           # without the launcher: nobody kills worker 0
            procs.append(subprocess.Popen(
                [sys.executable, WORKER, *common, "--out", str(tmp_path / "k"), "--checkpoint",
                 ckpt, "--every", "1", "--die-at", "2"], env=dict(ENV, TF_CONFIG=config),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True))
        start = time.monotonic()
        out0, _ = procs[0].communicate(timeout=90)
        procs[1].wait(30)
        took = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode != 0 and took < 90
    assert "flux.BackendError" in out0 and f"worker 1 at 127.0.0.1:{ports[1]}" in out0, out0
    assert "resume=checkpoint" in out0
    assert os.path.exists(ckpt)
    status, out = launch([*common, "--out", str(tmp_path / "k"), "--checkpoint", ckpt,
                          "--every", "1", "--resume"])
    assert status == 0, out
    status, out = launch([*common, "--out", str(tmp_path / "u")])
    assert status == 0, out
    want = params(tmp_path / "u" / "0_final.npz")
    for r in (0, 1):
        assert_same(params(tmp_path / "k" / f"{r}_final.npz"), want)


def test_worker_whose_peer_is_not_there_fails_in_bounded_time_naming_it(tmp_path):
    ports = free_ports(2)                           # nobody listens on ports[1]
    config = tf_configs(ports)[0]
    start = time.monotonic()
    status, out = run([WORKER, "--out", str(tmp_path), "--timeout", "5"], timeout=60,
                      env=dict(ENV, TF_CONFIG=config))
    assert time.monotonic() - start < 60
    assert status != 0
    assert "flux.BackendError" in out and f"worker 1 at 127.0.0.1:{ports[1]}" in out, out
    assert "waited 5 s" in out


def test_missing_tf_config_entry_is_named(tmp_path):
    ports = free_ports(2)
    config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": 2}})
    status, out = run([WORKER, "--out", str(tmp_path)], timeout=60,
                      env=dict(ENV, TF_CONFIG=config))
    assert status != 0
    assert "task is worker 2, but its cluster has no such entry" in out, out


def test_launcher_returns_the_first_failing_status(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text("import json, os, sys, time\n"
                      "i = json.loads(os.environ['TF_CONFIG'])['task']['index']\n"
                      "print('index', i, flush=True)\n"
                      "sys.exit(3) if i == 1 else time.sleep(60)\n")
    start = time.monotonic()
    status, out = run(["-m", "flux_tf.launch", "-n", "2", "--timeout", "50", str(script)],
                      timeout=60)
    assert status == 3 and time.monotonic() - start < 30, out
    assert "[worker 1] index 1" in out and "worker 1 exited with status 3" in out


def test_mirrored_strategy_in_one_process_trains_like_a_plain_model():
    rng = np.random.default_rng(0)
    data = [(rng.standard_normal((6, 4)).astype(np.float32),
             rng.standard_normal((6, 2)).astype(np.float32)) for _ in range(3)]

    def model():
        flux.seed(3)
        return flux.Chain(flux.Affine(4, 8), flux.tanh, flux.Affine(8, 2))
    a, b = model(), model()
    t = flux.tf(a, strategy=tf.distribute.MirroredStrategy())
    assert (t.rank, t.workers) == (0, 1)
    flux.train(t, data, opt=flux.ADAM(0.01), verbose=False)
    flux.train(flux.tf(b), data, opt=flux.ADAM(0.01), verbose=False)
    for k, p in flux.params(a).items():
        np.testing.assert_allclose(p.value, flux.params(b)[k].value, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(t(data[0][0]), flux.tf(b)(data[0][0]), rtol=1e-5, atol=1e-6)
    flux.back(t, np.ones((6, 2), np.float32), data[0][0])     # flux.update on the strategy
    flux.update(t, flux.SGD(0.1))


def test_strategy_option_is_checked():
    m = flux.Chain(flux.Affine(2, 2))
    with pytest.raises(flux.BackendError, match="strategy= takes a tf.distribute.Strategy"):
        flux.tf(m, strategy="mirrored")
    with pytest.raises(flux.BackendError, match="timeout="):
        flux.tf(m, timeout=5)
