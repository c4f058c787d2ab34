"""flux.train's progress bar (tqdm) under a pseudo-terminal, as users see it (issue 14)."""
import os
import pty
import re
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tqdm", reason="tqdm is not installed (a dependency of flux-core)")

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np, flux
    flux.seed(0)
    model = flux.Affine(3, 1)
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32)
    case = sys.argv[1]
    if case == "epochs":
        flux.train(model, [(x, y)] * 20, loss=flux.mse, epochs=2)
    elif case == "callback":
        flux.train(model, [(x, y)] * 5, loss=flux.mse,
                   cb=lambda s: print("hello from the callback") if s.event == "step" else None)
    elif case == "raises":
        flux.train(model, [(x, y)] * 3 + [(x,)], loss=flux.mse)
    elif case == "generator":
        flux.train(model, ((x, y) for _ in range(50)), loss=flux.mse)
    elif case == "quiet":
        flux.train(model, [(x, y)] * 5, loss=flux.mse, verbose=False)
""")


def in_a_terminal(case: str) -> str:
    """Run the script with stdout and stderr on a pseudo-terminal; its whole output."""
    leader, follower = pty.openpty()
    child = subprocess.Popen([sys.executable, "-c", SCRIPT, case], stdout=follower,
                             stderr=follower, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    finally:
        child.wait(timeout=60)
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def lines(text: str) -> list[str]:
    """What the terminal shows, line by line (the last redraw of each line)."""
    return [re.split(r"\r", line)[-1] for line in text.replace("\r\n", "\n").split("\n")]


def test_one_bar_per_epoch_with_rate_and_loss():
    out = in_a_terminal("epochs")
    shown = [line for line in lines(out) if "epoch" in line]
    assert any(line.startswith("epoch 1/2") and "20/20" in line for line in shown), shown
    assert any(line.startswith("epoch 2/2") and "20/20" in line for line in shown), shown
    assert all("loss=" in line and ("step/s" in line or "s/step" in line) for line in shown)


def test_what_a_callback_prints_gets_its_own_line():
    out = in_a_terminal("callback")
    printed = [line for line in out.replace("\r\n", "\n").split("\n") if "hello" in line]
    assert len(printed) == 5
    assert all(re.split(r"\r", line)[-1].strip().startswith("hello") for line in printed)


def test_the_bar_line_ends_before_an_error_is_shown():
    out = in_a_terminal("raises").replace("\r\n", "\n")
    assert "Traceback" in out and "(x, y) pair" in out
    before = out[:out.index("Traceback")]
    assert before.endswith("\n") and "3/4" in before


def test_a_generator_shows_its_step_count():
    shown = [line for line in lines(in_a_terminal("generator")) if "step" in line]
    assert any(re.search(r"\b50step", line) for line in shown), shown


def test_verbose_false_shows_nothing():
    assert "step" not in in_a_terminal("quiet")
