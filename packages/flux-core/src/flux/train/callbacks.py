"""What `flux.train` tells callbacks, and the callbacks flux ships: early stopping and
learning-rate schedules.

A callback with no parameters is called after every update (the seed's style, e.g. a
`throttle`d print). A callback with one parameter gets the `TrainingState`: before the first
update (``state.event == "begin"``), after every update (``"step"``) and at the end of every
epoch (``"epoch"``); setting ``state.stop = True`` ends training cleanly after that call
(`flux.train` returns the history so far).

Schedules are functions of the number of updates done, ``schedule(t) -> lr``; `lr_schedule`
makes one a callback that sets ``opt.lr`` before every update (every optimiser reads ``lr``
at each step, on every backend, so changing it needs nothing else).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

from flux.errors import FluxTypeError, FluxValueError

__all__ = ["TrainingState", "EarlyStopping", "lr_schedule", "step_decay", "exponential_decay",
           "cosine_decay", "warmup", "takes_state"]


@dataclass
class TrainingState:
    """Where training stands, for one-parameter callbacks.

    `event` is ``"begin"``, ``"step"`` or ``"epoch"``; `epoch` counts from 0, `step` is the
    number of updates done in this epoch and `updates` in the whole run; `loss` is the last
    update's loss and `epoch_loss` the mean of this epoch's so far; `history` the finished
    epochs' mean losses; `model` and `opt` what is being trained. Set `stop` to end training.
    """

    model: object
    opt: object
    epochs: int
    event: str = "begin"
    epoch: int = 0
    step: int = 0
    updates: int = 0
    loss: float = math.nan
    epoch_loss: float = math.nan
    history: list = field(default_factory=list)
    stop: bool = False


def takes_state(f) -> bool:
    """Whether callback `f` takes the `TrainingState` (one required parameter) or nothing."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError):
        return False                 # (a builtin: called with nothing, as before)
    required = [p for p in signature.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                       p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise FluxTypeError(f"train: a callback takes no parameter or one (the training "
                            f"state); {getattr(f, '__name__', f)!r} takes {len(required)}")
    return len(required) == 1


class EarlyStopping:
    """Stop training when the monitored value has not improved by more than `min_delta` for
    `patience` epochs (as Keras' EarlyStopping). The value is the epoch's mean training loss,
    or ``monitor(state)`` (e.g. a validation loss) when given; lower is better.

    >>> import numpy as np, flux
    >>> model = flux.Affine(1, 1)
    >>> data = [(np.ones((4, 1)), np.ones((4, 1)))]
    >>> stop = flux.EarlyStopping(patience=2, monitor=lambda state: 1.0)   # never improves
    >>> len(flux.train(model, data, epochs=10, cb=stop)), stop.stopped_epoch
    (3, 3)
    """

    def __init__(self, patience: int = 3, min_delta: float = 0.0, monitor=None):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise FluxValueError(f"EarlyStopping: patience is a whole number ≥ 1, found "
                                 f"{patience!r}")
        self.patience, self.min_delta, self.monitor = patience, float(min_delta), monitor
        self.best = math.inf
        self.waited = 0
        self.stopped_epoch = None

    def __call__(self, state: TrainingState) -> None:
        if state.event == "begin":
            self.best, self.waited, self.stopped_epoch = math.inf, 0, None
        if state.event != "epoch":
            return
        value = float(self.monitor(state)) if self.monitor is not None else state.epoch_loss
        if value < self.best - self.min_delta:
            self.best, self.waited = value, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            state.stop = True
            self.stopped_epoch = state.epoch + 1


def lr_schedule(schedule):
    """A callback setting ``state.opt.lr = schedule(t)`` before update t (t counts from 0).

    >>> import flux
    >>> opt = flux.SGD(0.1)
    >>> s = flux.TrainingState(model=None, opt=opt, epochs=1, updates=10)
    >>> lr_schedule(step_decay(0.1, every=10, factor=0.5))(s); opt.lr
    0.05
    """
    def set_lr(state: TrainingState) -> None:
        if state.event in ("begin", "step"):
            state.opt.lr = float(schedule(state.updates))
    set_lr.schedule = schedule
    return set_lr


def step_decay(lr: float, every: int, factor: float = 0.1):
    """``lr · factor^⌊t / every⌋``: multiplied by `factor` every `every` updates."""
    return lambda t: lr * factor ** (t // every)


def exponential_decay(lr: float, factor: float):
    """``lr · factor^t``."""
    return lambda t: lr * factor ** t


def cosine_decay(lr: float, steps: int, lr_min: float = 0.0):
    """From `lr` down to `lr_min` over `steps` updates along half a cosine, then `lr_min`."""
    def schedule(t):
        progress = min(t, steps) / steps
        return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))
    return schedule


def warmup(schedule, steps: int):
    """`schedule` (or a constant learning rate) reached linearly over the first `steps`
    updates: ``schedule(t) · (t + 1) / steps`` while ``t < steps``."""
    then = schedule if callable(schedule) else (lambda t: schedule)
    return lambda t: then(t) * (t + 1) / steps if t < steps else then(t)
