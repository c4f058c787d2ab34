"""Training: `back` and `update` (the seed's `back!`/`update!`) and the `train` loop."""
from __future__ import annotations

import math
import numbers
import os


from flux.train import checkpoint as _checkpoint
from flux.backends.compiled import Compiled, NonFiniteGradient
from flux.backends.eager import compiled_of
from flux.errors import FluxError, FluxTypeError, FluxValueError
from flux.ops.losses import mse
from flux.model.walk import is_model
from flux.train.callbacks import TrainingState, takes_state
from flux.train.progress import Progress
from flux.train.optimisers import SGD, as_optimiser
from flux.ir.source import user_errors

__all__ = ["back", "update", "train"]


@user_errors
def back(model, Δ, *xs):
    """Backpropagate the output cotangent Δ of ``model(*xs)``: accumulate every parameter's
    gradient into ``p.grad`` and return the tuple of input gradients (one per input)."""
    return compiled_of(model).back(Δ, *xs)


def _all_params(model) -> list:
    """Every Param `back` may have given a gradient: the model's, and those its traced graphs
    reach otherwise (closures), through its compiled twin and, if compiled, itself."""
    found = {}
    targets = [model] if not isinstance(model, Compiled) else [model, model.model]
    for target in targets:
        if isinstance(target, Compiled) or is_model(target):
            for p in compiled_of(target).all_params():
                found.setdefault(id(p), p)
    return list(found.values())


@user_errors
def update(model, opt) -> None:
    """Apply the accumulated gradients with `opt` (a number is an SGD learning rate) and clear
    them. Params that received no gradient are left alone."""
    opt = as_optimiser(opt)
    ps = [p for p in _all_params(model) if p._grad is not None]
    grads = [p._grad for p in ps]
    if isinstance(model, Compiled):
        model.apply_update(opt, ps, grads)      # on the backend's side
    else:
        opt.apply(ps, grads)
    for p in ps:
        p.zero_grad()


@user_errors
def train(model, data, loss=mse, opt=None, epochs: int = 1, cb=(), *, checkpoint=None,
          every: int | None = None, resume=None, verbose: bool | None = None):
    """Train `model` on `data`, an iterable of ``(x, y)`` pairs: one update per pair, in order.

    Returns the per-epoch means of the losses computed before each update. Shows a progress
    bar (tqdm's: rate and time left) when stderr is a terminal or in a notebook, always with
    ``verbose=True``, never with ``verbose=False``. Calls each callback in `cb` (one callable
    or a list): one without parameters after every update; one with a parameter with the
    `TrainingState` before the first update, after every update and at the end of every
    epoch; it may set ``state.stop = True`` to end training (see `flux.train.callbacks`:
    `EarlyStopping`, `lr_schedule`). A NaN or infinite loss, or a non-finite gradient, stops
    training with a FluxError naming the step; that step's update is not applied.

    Checkpoints: with ``checkpoint=path`` the parameters, the optimiser's state, the progress
    and flux's random state are written to `path` (atomically) every `every` updates and at
    the end of every epoch; ``resume=path`` restores such a file and continues from where it
    was written, skipping the pairs of `data` already used, so a run interrupted and resumed
    (with the same model, data, loss and optimiser settings) ends with the same parameters as
    one that was not. The returned history covers the whole run. A model trained by several
    worker processes together (``flux.tf(model, strategy=...)``, ``flux.mxnet(model,
    kvstore="dist_sync")``) writes its checkpoints from the chief (rank 0) only.
    """
    compiled = compiled_of(model)
    target = compiled.model
    opt = SGD(0.1) if opt is None else as_optimiser(opt)
    callbacks = _callbacks(cb)
    with_state = [f for f in callbacks if takes_state(f)]
    plain = [f for f in callbacks if f not in with_state]
    _check_arguments(data, loss, epochs, checkpoint, every)
    if epochs > 1 and iter(data) is data:
        raise FluxError("train: `data` is a one-shot iterator but epochs > 1; pass a list (or "
                        "another re-iterable collection) of (x, y) pairs")
    if every is not None and (not isinstance(every, int) or every < 1):
        raise FluxValueError(f"train: every= is a number of updates ≥ 1, found {every!r}")
    at = _checkpoint.restore(resume, target, opt) if resume is not None else \
        _checkpoint.Progress()
    bar = Progress(data, epochs, verbose)
    try:
        return _epochs(compiled, target, data, loss, opt, epochs, at, plain, with_state, bar,
                       checkpoint, every)
    finally:
        bar.close()


def _epochs(compiled, target, data, loss, opt, epochs, at, plain, with_state, bar, checkpoint,
            every) -> list:
    """The epochs of `train` (see there), from where `at` says. Of workers training one model
    together, only the chief (rank 0) writes checkpoints; every worker resumes from them."""
    chief = getattr(compiled, "rank", 0) == 0
    state = TrainingState(target, opt, epochs, history=at.history, epoch=at.epoch,
                          step=at.step, updates=0)

    def tell(event, **progress) -> bool:
        """Call the callbacks that take the state; True if one of them stopped training."""
        if with_state:
            state.event = event
            for key, value in progress.items():
                setattr(state, key, value)
            with bar.quiet():
                for f in with_state:
                    f(state)
        return state.stop

    stopped = tell("begin")
    for epoch in range(at.epoch, epochs):
        if stopped:
            break
        if epoch != at.epoch:
            at = _checkpoint.Progress(epoch, 0, 0.0, 0, at.history)
        bar.begin(epoch, at.step)
        for step, pair in enumerate(data):
            if step < at.step:
                continue   # used before the checkpoint this run resumed from
            try:
                x, y = pair
            except (TypeError, ValueError):
                raise FluxError(f"train: each item of `data` must be an (x, y) pair; item "
                                f"{step} is {type(pair).__name__}") from None
            try:
                value = compiled.train_step(loss, opt, x, y)
            except NonFiniteGradient as error:
                raise FluxError(f"train: {error.message} at epoch {epoch + 1}, step "
                                f"{step + 1}; training stopped before that step's update") \
                    from None
            if not math.isfinite(value):
                raise FluxError(f"train: the loss is {value} at epoch {epoch + 1}, step "
                                f"{step + 1}; training stopped before that step's update")
            at.total += value
            at.count += 1
            at.step = step + 1
            if plain:
                with bar.quiet():
                    for f in plain:
                        f()
            stopped = tell("step", epoch=epoch, step=at.step, updates=state.updates + 1,
                           loss=value, epoch_loss=at.total / at.count)
            bar.step(at.total / at.count)
            if chief and checkpoint is not None and every is not None and at.step % every == 0:
                _checkpoint.write(checkpoint, target, opt, at)
            if stopped:
                break
        at.history.append(at.total / at.count if at.count else math.nan)
        if chief and checkpoint is not None:
            _checkpoint.write(checkpoint, target, opt,
                              _checkpoint.Progress(epoch + 1, 0, 0.0, 0, at.history))
        bar.close()
        stopped = tell("epoch", epoch=epoch, epoch_loss=at.history[-1],
                       history=at.history) or stopped
    return at.history


def _callbacks(cb) -> list:
    callbacks = [cb] if callable(cb) else cb
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise FluxTypeError(f"train: cb= takes a callable or a list of callables, found "
                            f"{type(cb).__name__}")
    callbacks = list(callbacks)
    for i, f in enumerate(callbacks):
        if not callable(f):
            raise FluxTypeError(f"train: callback {i} in cb= is {type(f).__name__} "
                                f"{f!r:.40}, not a callable")
    return callbacks


def _check_arguments(data, loss, epochs, checkpoint, every) -> None:
    """What `train` is given, checked before anything is computed."""
    if data is None or isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise FluxTypeError(f"train: `data` is an iterable of (x, y) pairs, found "
                            f"{type(data).__name__}")
    if isinstance(loss, str):
        raise FluxTypeError(f"train: loss= takes a function such as flux.{loss} (not the string "
                            f"{loss!r})" if loss in ("mse", "crossentropy", "logitcrossentropy")
                            else f"train: loss= takes a function, not the string {loss!r}")
    if not callable(loss):
        raise FluxTypeError(f"train: loss= takes a function loss(ŷ, y), found "
                            f"{type(loss).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 0:
        raise FluxValueError(f"train: epochs= is a whole number ≥ 0, found {epochs!r}")
    if every is not None and checkpoint is None:
        raise FluxValueError("train: every= says how often to write checkpoint=, which is not "
                             "given")
    if checkpoint is not None:
        folder = os.path.dirname(os.path.abspath(os.fspath(checkpoint)))
        if not os.path.isdir(folder):
            raise FluxValueError(f"train: checkpoint={os.fspath(checkpoint)!r}: the folder "
                                 f"{folder} does not exist")
