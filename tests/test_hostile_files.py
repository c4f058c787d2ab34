"""flux.load and checkpoints against damaged, foreign and hostile files (issue 14): every one
is a FluxError naming the user's path, changes nothing, and costs no more memory than the
model's own size, whatever the file claims. And saving: modes, killed saves, bad targets."""
import io
import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
import zipfile

import numpy as np
import pytest

import flux
from flux import Affine, Chain, relu


def model():
    flux.seed(0)
    return Chain(Affine(4, 8), relu, Affine(8, 2))


def values(m):
    return {n: np.array(p.value) for n, p in flux.params(m).items()}


def unchanged(m, before):
    for name, p in flux.params(m).items():
        np.testing.assert_array_equal(p.value, before[name])


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=True)
    return buffer.getvalue()


def npy_header_only(shape, dtype="<f4") -> bytes:
    """A .npy that declares `shape` but holds no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


def rewrite(path, replace: dict, drop=()):
    """Copy the archive at `path` with some entries replaced (name -> bytes) or dropped."""
    with zipfile.ZipFile(path) as src:
        entries = {i.filename: src.read(i) for i in src.infolist()}
    for name in drop:
        entries.pop(name)
    entries.update(replace)
    with zipfile.ZipFile(path, "w") as dst:
        for name, data in entries.items():
            dst.writestr(name, data)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.flux"
    flux.save(model(), path)
    return path


def hostile(kind, path, tmp_path):
    if kind == "a .npy file":
        np.save(tmp_path / "x.npy", np.zeros(3))
        os.replace(tmp_path / "x.npy", path)
    elif kind == "text":
        path.write_text("not a flux file")
    elif kind == "flipped bytes":
        data = bytearray(path.read_bytes())
        for i in range(len(data) // 3, len(data) // 3 + 40):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "metadata not an object":
        rewrite(path, {"__flux__.npy": npy(np.array(json.dumps([1, 2])))})
    elif kind == "metadata not text":
        rewrite(path, {"__flux__.npy": npy(np.arange(3))})
    elif kind == "object entry":
        rewrite(path, {"layers.0.W.npy": npy(np.array([{"a": 1}], dtype=object))})
    elif kind == "1e12 floats declared":
        rewrite(path, {"layers.0.W.npy": npy_header_only((10**12,))})
    elif kind == "wrong dtype":
        rewrite(path, {"layers.0.b.npy": npy(np.zeros(8, np.float64))})
    elif kind == "missing entry":
        rewrite(path, {}, drop=["layers.2.b.npy"])
    elif kind == "foreign entry":
        rewrite(path, {"evil.txt": b"x"})


KINDS = ["a .npy file", "text", "flipped bytes", "truncated", "metadata not an object",
         "metadata not text", "object entry", "1e12 floats declared", "wrong dtype",
         "missing entry", "foreign entry"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_or_foreign_file_is_a_flux_error_naming_the_path(kind, saved, tmp_path):
    hostile(kind, saved, tmp_path)
    m = model()
    for p in flux.params(m).values():
        p.value = np.full(p.shape, 7.0)
    before = values(m)
    with pytest.raises(flux.FluxError) as info:
        flux.load(m, saved)
    assert str(saved) in str(info.value)
    unchanged(m, before)


BOMB = textwrap.dedent("""
    import resource, sys, zipfile
    import numpy as np, flux
    path = sys.argv[1]
    flux.seed(0)
    m = flux.Chain(flux.Affine(4, 8), flux.relu, flux.Affine(8, 2))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        flux.load(m, path)
    except flux.FluxError as error:
        print("refused:", str(error).splitlines()[0][:200])
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print("grown_kb", grown)
""")


def test_a_zip_bomb_is_refused_without_spending_its_memory(saved, tmp_path):
    """An entry with the right header but 256 MiB of (compressed) zeros behind it: refused
    from the archive's directory, peak memory barely moves."""
    header = npy_header_only((4, 8))
    with zipfile.ZipFile(saved) as src:
        entries = {i.filename: src.read(i) for i in src.infolist()}
    with zipfile.ZipFile(saved, "w", zipfile.ZIP_DEFLATED) as dst:
        for name, data in entries.items():
            if name != "layers.0.W.npy":
                dst.writestr(name, data)
        with dst.open("layers.0.W.npy", "w", force_zip64=True) as f:
            f.write(header)
            chunk = bytes(1 << 20)
            for _ in range(256):
                f.write(chunk)
    assert saved.stat().st_size < 2 << 20
    run = subprocess.run([sys.executable, "-c", BOMB, str(saved)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout and "claims" in run.stdout
    grown = int(run.stdout.split("grown_kb")[1])
    assert grown < 64 * 1024, f"peak memory grew by {grown} kB"


# -- checkpoints ---------------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    x = np.ones((5, 4), np.float32)
    y = np.zeros((5, 2), np.float32)
    flux.train(model(), [(x, y)] * 3, loss=flux.mse, opt=flux.ADAM(0.01), checkpoint=path)
    return path


def meta_of(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(str(np.lib.format.read_array(io.BytesIO(
            archive.read("__flux__.npy")))))


@pytest.mark.parametrize("damage", ["no rng", "no progress", "bad history", "opt entry shape",
                                    "opt entry type", "opt entry unknown slot",
                                    "opt slot missing"])
def test_a_damaged_checkpoint_is_refused_before_anything_changes(damage, checkpoint):
    meta = meta_of(checkpoint)
    replace, drop = {}, []
    if damage == "no rng":
        del meta["rng"]
    elif damage == "no progress":
        del meta["progress"]
    elif damage == "bad history":
        meta["progress"]["history"] = ["x"]
    elif damage == "opt entry shape":
        replace["opt/layers.0.W/m.npy"] = npy(np.zeros((2, 2), np.float32))
    elif damage == "opt entry type":
        replace["opt/layers.0.W/t.npy"] = npy(np.array(1.5))
    elif damage == "opt entry unknown slot":
        replace["opt/layers.0.W/q.npy"] = npy(np.zeros((4, 8), np.float32))
    else:
        drop.append("opt/layers.0.W/v.npy")
    replace["__flux__.npy"] = npy(np.array(json.dumps(meta)))
    rewrite(checkpoint, replace, drop)
    m, opt = model(), flux.ADAM(0.01)
    before, rng = values(m), flux.initn(3)
    flux.seed(0)
    rng = flux.initn(3)
    flux.seed(0)
    with pytest.raises(flux.FluxError, match=str(checkpoint)):
        flux.train(m, [(np.ones((5, 4), np.float32), np.zeros((5, 2), np.float32))],
                   loss=flux.mse, opt=opt, resume=checkpoint)
    unchanged(m, before)
    assert opt.state == {}
    np.testing.assert_array_equal(flux.initn(3), rng)        # flux's random state untouched


# -- saving ---------------------------------------------------------------------------------------


def test_saved_files_get_the_umask_mode_or_the_replaced_files(tmp_path):
    path = tmp_path / "m.flux"
    old = os.umask(0o022)
    try:
        flux.save(model(), path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    os.chmod(path, 0o640)
    flux.save(model(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_saving_to_a_missing_folder_or_a_read_only_one_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "m.flux"
    with pytest.raises(flux.FluxError, match=f"{missing}.*does not exist"):
        flux.save(model(), missing)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    target = locked / "m.flux"
    try:
        if os.access(locked, os.W_OK):          # root: a read-only file system instead
            target = Path("/sys") / "flux-test.flux"
            if _writable(target.parent):
                pytest.skip("running as a user who can write anywhere, /sys included")
        with pytest.raises(flux.FluxError, match=re.escape(str(target))) as info:
            flux.save(model(), target)
        assert ".tmp" not in str(info.value)
        assert not list(target.parent.glob(".flux-*.tmp"))
    finally:
        os.chmod(locked, 0o700)


def _writable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


KILLED = textwrap.dedent("""
    import sys, numpy as np, flux
    m = flux.Chain(*[flux.Affine(1000, 1000) for _ in range(20)])
    print("saving", flush=True)
    flux.save(m, sys.argv[1])
""")


def test_a_killed_saves_temporary_file_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "big.flux"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(path)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "saving"
    deadline = 200
    while deadline and not any(n.endswith(".tmp") for n in os.listdir(tmp_path)):
        deadline -= 1
        subprocess.run(["sleep", "0.02"])
    child.kill()
    child.wait(timeout=30)
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    if not left:
        pytest.skip("the save finished before it could be killed")
    flux.save(model(), path)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    flux.load(model(), path)
