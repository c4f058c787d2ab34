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
from flux.model.walk import params

KIND = "flux-checkpoint"


class Progress:
    """Where training stands: `epoch` (0-based), `step` updates done in it, the running `total`
    and `count` of its losses, and `history`, the finished epochs' mean losses."""

    def __init__(self, epoch=0, step=0, total=0.0, count=0, history=()):
        self.epoch, self.step, self.total, self.count = epoch, step, total, count
        self.history = list(history)


def write(path, model, opt, progress: Progress) -> None:
    ps = params(model)
    arrays = {f"param/{name}": p.peek() for name, p in ps.items()}
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
                       for name, p in ps.items()}}
    arrays[META] = np.array(json.dumps(meta, default=int))
    write_atomically(path, arrays)


def restore(path, model, opt) -> Progress:
    """Check the checkpoint at `path` against `model` and `opt`, then restore parameters,
    optimiser state and the random generator; returns the progress to continue from."""
    ps = params(model)
    values, meta = read_checked(path, ps, KIND, prefix="param/", extra_prefixes=("opt/",))
    saved = meta["optimiser"]
    if saved["type"] != type(opt).__name__ or saved["settings"] != opt.settings():
        raise FluxValueError(
            f"{path} was written while training with {saved['type']}{tuple(saved['settings'])}; "
            f"resuming with {type(opt).__name__}{tuple(opt.settings())} would not continue the "
            f"same run")
    state = {k[len("opt/"):]: v for k, v in values.items() if k.startswith("opt/")}
    opt.load_state_arrays({name: p for name, p in ps.items()}, state)
    for name, p in ps.items():
        p.value[...] = values[name]
    generator = np.random.default_rng()
    generator.bit_generator.state = meta["rng"]
    _param._rng = generator
    p = meta["progress"]
    return Progress(p["epoch"], p["step"], p["total"], p["count"],
                    [math.nan if h is None else h for h in p["history"]])
