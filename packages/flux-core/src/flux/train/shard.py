"""Each worker's share of the data when several processes train one model together."""
from __future__ import annotations

import numbers

from flux.backends.eager import compiled_of
from flux.errors import FluxTypeError, FluxValueError

__all__ = ["shard"]


def shard(data, model=None, *, rank=None, workers=None):
    """The items of `data` this worker trains on: those at positions ``rank, rank + workers,
    rank + 2 workers, ...`` (so `workers` processes between them see every item once, and
    step ``i`` of every worker reads item ``i · workers + rank``).

    `rank` and `workers` come from `model`, a model compiled data-parallel
    (``flux.tf(model, strategy=...)``, ``flux.mxnet(model, kvstore="dist_sync")``: its
    ``rank`` and ``workers``), or are given. `data` is any iterable (of ``(x, y)`` pairs);
    the result is a list when `data` has a length (so it can be trained on for several
    epochs), else an iterator. Every worker should get the same number of items (items at
    the end that not every worker would get are dropped), so that all take the same number of
    synchronised steps.

    >>> shard(range(10), rank=1, workers=3)
    [1, 4, 7]
    >>> shard(range(10), rank=0, workers=1)
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """
    if model is not None:
        compiled = compiled_of(model)
        rank = compiled.rank if rank is None else rank
        workers = compiled.workers if workers is None else workers
    if rank is None or workers is None:
        raise FluxTypeError("shard: pass the model compiled data-parallel (its rank and "
                            "workers), or rank= and workers=")
    for name, value in (("rank", rank), ("workers", workers)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise FluxTypeError(f"shard: {name} is an int, found {value!r}")
    if workers < 1 or not 0 <= rank < workers:
        raise FluxValueError(f"shard: needs 0 ≤ rank < workers, found rank {rank}, "
                             f"workers {workers}")
    if hasattr(data, "__len__"):
        items = list(data)
        usable = len(items) - len(items) % workers
        return items[rank:usable:workers]
    return _shard_stream(iter(data), rank, workers)


def _shard_stream(items, rank: int, workers: int):
    while True:
        group = []
        for _ in range(workers):
            try:
                group.append(next(items))
            except StopIteration:
                return
        yield group[rank]
