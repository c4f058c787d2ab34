"""Side-by-side timing shared by the benchmarks: every contender runs in every repeat, in a
different (seeded) order each time, and the median per call is reported, so that ratios taken
from one run are robust to a noisy, shared machine."""
from __future__ import annotations

import random
import statistics
import time


def side_by_side(contenders: dict, repeats: int, calls: int) -> dict:
    """Median seconds per call for each ``name -> run(calls)`` in `contenders`."""
    times = {name: [] for name in contenders}
    order = list(contenders.items())
    for repeat in range(repeats):
        random.Random(repeat).shuffle(order)
        for name, run in order:
            start = time.perf_counter()
            run(calls)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}
