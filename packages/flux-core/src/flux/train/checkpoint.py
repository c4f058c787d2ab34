"""Training checkpoints: parameters, optimiser state, progress and RNG state in one file, so
that ``flux.train(..., resume=path)`` continues an interrupted run exactly where it stopped.

The file is written like `flux.save` (an ``.npz`` read without pickle, renamed into place
atomically): parameters under ``param/<path>``, optimiser state under ``opt/<path>/<slot>``,
and a ``__flux__`` JSON entry with the progress (epoch, updates done in it, the running loss
total, finished epochs' means), the optimiser's type and settings, and the state of flux's
random generator.
"""
from __future__ import annotations

import json
import math

import numpy as np

from flux.model import param as _param
from flux.errors import FluxValueError
from flux.train.io import FORMAT_VERSION, META, read_checked, write_atomically
from flux.model.walk import params, stored

KIND = "flux-checkpoint"


class Progress:
    """Where training stands: `epoch` (0-based), `step` updates done in it, the running `total`
    and `count` of its losses, and `history`, the finished epochs' mean losses."""

    def __init__(self, epoch=0, step=0, total=0.0, count=0, history=()):
        self.epoch, self.step, self.total, self.count = epoch, step, total, count
        self.history = list(history)


def write(path, model, opt, progress: Progress) -> None:
    ps = params(model)
    arrays = {f"param/{name}": p.peek() for name, p in stored(model).items()}
    by_id = {id(p): name for name, p in ps.items()}
    for key, value in opt.state_arrays(by_id).items():
        arrays[f"opt/{key}"] = np.asarray(value)
    meta = {"format": KIND, "version": FORMAT_VERSION,
            "optimiser": {"type": type(opt).__name__, "settings": opt.settings()},
            "progress": {"epoch": progress.epoch, "step": progress.step,
                         "total": progress.total, "count": progress.count,
                         "history": progress.history},
            "rng": _param.rng().bit_generator.state,
            "params": {name: {"dtype": p.dtype.str, "shape": list(p.shape)}
                       for name, p in stored(model).items()}}
    arrays[META] = np.array(json.dumps(meta, default=int))
    write_atomically(path, arrays)


def restore(path, model, opt) -> Progress:
    """Check the checkpoint at `path` against `model` and `opt`, then restore parameters,
    optimiser state and the random generator; returns the progress to continue from. Every
    part is checked before anything changes: a damaged checkpoint is a FluxValueError naming
    `path`, and the model, the optimiser and flux's random state are left as they were."""
    ps = params(model)
    values, meta = read_checked(path, stored(model), KIND, prefix="param/",
                                extra_prefixes=("opt/",))
    try:
        saved, progress, rng_state = meta["optimiser"], meta["progress"], meta["rng"]
        saved_type, settings = saved["type"], list(saved["settings"])
        at = Progress(int(progress["epoch"]), int(progress["step"]), float(progress["total"]),
                      int(progress["count"]), [math.nan if h is None else float(h)
                                               for h in progress["history"]])
        generator = np.random.default_rng()
        generator.bit_generator.state = rng_state
    except (KeyError, TypeError, ValueError) as error:
        raise FluxValueError(f"{path}: its metadata is incomplete or damaged "
                             f"({type(error).__name__}: {error})") from error
    if saved_type != type(opt).__name__ or settings != opt.settings():
        raise FluxValueError(
            f"{path} was written while training with {saved_type}{tuple(settings)}; "
            f"resuming with {type(opt).__name__}{tuple(opt.settings())} would not continue the "
            f"same run")
    state = {k[len("opt/"):]: v for k, v in values.items() if k.startswith("opt/")}
    _check_state(path, opt, ps, state)
    opt.load_state_arrays({name: p for name, p in ps.items()}, state)
    for name, p in stored(model).items():
        p.value[...] = values[name]
    _param._rng = generator
    return at


def _check_state(path, opt, ps: dict, state: dict) -> None:
    """The optimiser entries of a checkpoint: each ``<param path>/<slot>`` names a Param and
    one of the optimiser's slots, every Param that has one has them all, and each holds what
    that slot holds (the Param's shape and dtype, or a whole number for a step counter)."""
    kinds = dict(zip(opt.slot_names, opt.initial_slots()))
    seen: dict[str, set] = {}
    for key, value in state.items():
        name, _, slot = key.rpartition("/")
        if name not in ps or slot not in kinds:
            raise FluxValueError(f"{path}: optimiser entry {key!r} names no Param or slot of "
                                 f"{type(opt).__name__} (its slots: {list(kinds) or 'none'})")
        p = ps[name]
        if isinstance(kinds[slot], int):
            ok = np.shape(value) == () and np.asarray(value).dtype.kind in "iu" and value >= 0
        else:
            ok = np.shape(value) == p.shape and np.asarray(value).dtype == p.dtype
        if not ok:
            raise FluxValueError(f"{path}: optimiser entry {key!r} has shape "
                                 f"{np.shape(value)} and dtype {np.asarray(value).dtype}; the "
                                 f"slot holds " + ("a step count" if isinstance(kinds[slot], int)
                                                   else f"{p.shape} {p.dtype}"))
        seen.setdefault(name, set()).add(slot)
    for name, slots in seen.items():
        if slots != set(kinds):
            raise FluxValueError(f"{path}: the optimiser state of {name} lacks "
                                 f"{', '.join(sorted(set(kinds) - slots))}")
