"""train(..., checkpoint=, every=, resume=): a run killed mid-way and resumed ends with the same
parameters as one that was never interrupted."""
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import flux

SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    import flux

    def setup():
        flux.seed(0)
        model = flux.Chain(flux.Affine(4, 16), flux.tanh, flux.Affine(16, 3))
        rng = np.random.default_rng(1)
        data = [(rng.random((8, 4), dtype=np.float32),
                 rng.random((8, 3), dtype=np.float32)) for _ in range(30)]
        return model, data

    mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    model, data = setup()
    opt = flux.ADAM(0.01)
    slow = (lambda: time.sleep(0.02)) if mode == "slow" else ()
    if mode == "resume":
        history = flux.train(model, data, opt=opt, epochs=3, resume=path, checkpoint=path,
                             every=5)
    else:
        history = flux.train(model, data, opt=opt, epochs=3, checkpoint=path, every=5, cb=slow)
    np.savez(out, history=np.array(history),
             **{k: p.value for k, p in flux.params(model).items()})
""")


def run(tmp_path, *args, wait=True):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    command = [sys.executable, str(script), *map(str, args)]
    if wait:
        subprocess.run(command, check=True, timeout=120)
        return None
    return subprocess.Popen(command)


def test_a_run_killed_with_sigkill_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    run(tmp_path, "plain", tmp_path / "plain.ckpt", tmp_path / "plain.npz")
    job = run(tmp_path, "slow", tmp_path / "killed.ckpt", tmp_path / "never.npz", wait=False)
    checkpoint = tmp_path / "killed.ckpt"
    deadline = time.time() + 60
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)                          # somewhere in the middle of the 90 updates
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.npz").exists()
    # (a kill during a write may leave a ".flux-*.tmp" file; the checkpoint itself is whole)
    run(tmp_path, "resume", checkpoint, tmp_path / "resumed.npz")
    with np.load(tmp_path / "plain.npz") as plain, np.load(tmp_path / "resumed.npz") as resumed:
        assert sorted(plain.files) == sorted(resumed.files)
        for name in plain.files:
            np.testing.assert_array_equal(plain[name], resumed[name], err_msg=name)


def small():
    flux.seed(0)
    model = flux.Chain(flux.Affine(3, 5), flux.relu, flux.Affine(5, 2))
    rng = np.random.default_rng(2)
    data = [(rng.random((4, 3), dtype=np.float32), rng.random((4, 2), dtype=np.float32))
            for _ in range(6)]
    return model, data


@pytest.mark.parametrize("make_opt", [lambda: flux.SGD(0.1), lambda: flux.Momentum(0.05, 0.9),
                                      lambda: flux.ADAM(0.01)])
def test_resuming_from_every_checkpoint_gives_the_same_parameters_and_history(tmp_path,
                                                                              make_opt):
    model, data = small()
    full = flux.train(model, data, opt=make_opt(), epochs=2)
    expected = {k: p.value.copy() for k, p in flux.params(model).items()}
    # interrupted after 9 updates (epoch 2, update 3), checkpointing every 3 updates
    model, data = small()
    updates = []

    def interrupt():
        updates.append(1)
        if len(updates) == 9:
            raise KeyboardInterrupt
    path = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        flux.train(model, data, opt=make_opt(), epochs=2, checkpoint=path, every=3,
                   cb=interrupt)
    fresh, _ = small()
    history = flux.train(fresh, data, opt=make_opt(), epochs=2, resume=path)
    for k, p in flux.params(fresh).items():
        np.testing.assert_array_equal(p.value, expected[k], err_msg=k)
    np.testing.assert_allclose(history, full, rtol=1e-12)


def test_resume_refuses_a_different_optimiser_and_changes_nothing(tmp_path):
    model, data = small()
    flux.train(model, data, opt=flux.ADAM(0.01), checkpoint=tmp_path / "c")
    other, _ = small()
    before = {k: p.value.copy() for k, p in flux.params(other).items()}
    with pytest.raises(flux.FluxError, match="ADAM"):
        flux.train(other, data, opt=flux.SGD(0.1), resume=tmp_path / "c")
    for k, p in flux.params(other).items():
        np.testing.assert_array_equal(p.value, before[k])


def test_resume_from_a_missing_or_damaged_file_is_a_flux_error(tmp_path):
    model, data = small()
    with pytest.raises(flux.FluxError):
        flux.train(model, data, resume=tmp_path / "nope")
    (tmp_path / "bad").write_bytes(b"not a checkpoint")
    with pytest.raises(flux.FluxError, match="cannot be read"):
        flux.train(model, data, resume=tmp_path / "bad")


def test_every_must_be_a_positive_number_of_updates(tmp_path):
    model, data = small()
    with pytest.raises(flux.FluxError):
        flux.train(model, data, checkpoint=tmp_path / "c", every=0)
