"""Side-by-side timing shared by the benchmarks: every contender runs in every repeat, in a
different (seeded) order each time, and the median per call is reported, so that ratios taken
from one run are robust to a noisy, shared machine."""
from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np


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


def print_times(title: str, times: dict, unit: str = "µs", scale: float = 1e6) -> None:
    """`title`, then one line per contender: its name and time (seconds × `scale` in `unit`)."""
    print(title)
    for name, t in times.items():
        print(f"  {name:12s} {t * scale:9.1f} {unit}")


def print_ratio(times: dict, ours: str, theirs, note: str = "") -> float:
    """Print and return ``times[ours] / times[theirs]`` (the fastest of several if a list)."""
    names = [theirs] if isinstance(theirs, str) else list(theirs)
    best = min(times[n] for n in names)
    label = names[0] if len(names) == 1 else "fastest hand-written"
    ratio = times[ours] / best
    print(f"  ratio {ours} / {label}: {ratio:.3f}" + (f" ({note})" if note else ""))
    return ratio


def steps_and_repeats(steps: int = 200, repeats: int = 7) -> argparse.Namespace:
    """The command line of the MLP benchmarks: ``--steps`` per repeat and ``--repeats``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser.parse_args()


def classification_batch(batch: int, n_in: int, n_classes: int, seed: int = 1) -> tuple:
    """Float32 standard-normal inputs ``(batch, n_in)`` and one-hot targets of random classes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, n_in), dtype=np.float32)
    return x, np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, batch)]

