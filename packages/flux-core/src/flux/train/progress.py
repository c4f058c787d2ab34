"""The progress bar of `flux.train`: tqdm's (rate, time left, notebooks), one bar per epoch.

Shown when ``verbose=True``, or by default (``verbose=None``) when stderr is a terminal or the
program runs in a Jupyter notebook; never with ``verbose=False`` or without tqdm installed.
Callbacks run with the bar lifted (`quiet`), so what they print gets its own line; the bar is
closed, with its line ended, however training ends.
"""
from __future__ import annotations

import contextlib
import shutil
import sys

try:                                   # a dependency of flux-core; optional where installed
    from tqdm.auto import tqdm         # without it (the GPU machine has no package index)
except ImportError:                    # pragma: no cover
    tqdm = None

__all__ = ["Progress"]


def _in_notebook() -> bool:
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


class Progress:
    """The bars of one `train` call over `data` for `epochs` epochs."""

    def __init__(self, data, epochs: int, verbose):
        if verbose is None:
            verbose = sys.stderr.isatty() or _in_notebook()
        self.enabled = bool(verbose) and tqdm is not None
        self.total = len(data) if hasattr(data, "__len__") else None
        self.epochs = epochs
        self.bar = None

    def begin(self, epoch: int, done: int = 0) -> None:
        """A new bar for `epoch` (0-based), `done` of its steps already made (a resume)."""
        self.close()
        if self.enabled:
            label = f"epoch {epoch + 1}/{self.epochs}" if self.epochs > 1 else "training"
            size = shutil.get_terminal_size((100, 24))    # (a new pty says 0 x 0)
            self.bar = tqdm(total=self.total, initial=done, desc=label, unit="step",
                            file=sys.stderr, ncols=size.columns, nrows=size.lines, leave=True)

    def step(self, mean_loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)
            self.bar.update(1)

    def quiet(self):
        """``with progress.quiet():`` while callbacks run, so their output is not glued to
        the bar."""
        if self.bar is None:
            return contextlib.nullcontext()
        return self.bar.external_write_mode(file=sys.stdout)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
