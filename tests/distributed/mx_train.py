"""A worker of the MXNet data-parallel tests: trains an MLP or an unrolled LSTM through
``flux.mxnet(model, kvstore=...)`` on its shard of a fixed data set and writes, to
``OUT/rank<r>.npz``, its parameters after every step (``step<i>.<name>``) and at the end
(``final.<name>``), its rank, workers and losses.

    python mx_train.py OUT --model mlp|lstm --opt sgd|momentum|adam [--steps 6]
        [--kvstore dist_sync] [--timeout 20] [--checkpoint PATH --every 1] [--resume PATH]
        [--die-at STEP]

``--perturb``: the workers but the chief change their parameters before training (the
chief's must win). ``--die-at STEP``: the worker of rank 1 SIGKILLs itself just before its
step STEP (counted from 1). `data` and `model` below build the same things for the
single-process reference.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time

import numpy as np

import flux

BATCH, T, N_IN, N_HIDDEN = 4, 3, 3, 5


def model(kind: str):
    """The model, seeded: the same parameters in every process."""
    flux.seed(7)
    if kind == "mlp":
        return flux.Chain(flux.Affine(N_IN, 8), flux.tanh, flux.Affine(8, 2))
    return flux.unroll(flux.LSTM(N_IN, N_HIDDEN), T, stateful=False)


def data(kind: str, items: int) -> list:
    """`items` (x, y) pairs of BATCH rows: one per worker per step."""
    rng = np.random.default_rng(11)
    shape, out = ((BATCH, N_IN), (BATCH, 2)) if kind == "mlp" else \
        ((BATCH, T, N_IN), (BATCH, T, N_HIDDEN))
    return [(rng.standard_normal(shape).astype(np.float32),
             rng.standard_normal(out).astype(np.float32)) for _ in range(items)]


def optimiser(name: str):
    return {"sgd": lambda: flux.SGD(0.1), "momentum": lambda: flux.Momentum(0.05, 0.9),
            "adam": lambda: flux.ADAM(0.01)}[name]()


def values(m) -> dict:
    return {name: np.array(p.value) for name, p in flux.params(m).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--opt", default="sgd")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--kvstore", default="dist_sync")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--checkpoint")
    parser.add_argument("--every", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--die-at", type=int)
    parser.add_argument("--perturb", action="store_true",
                        help="workers other than the chief start from other parameters")
    parser.add_argument("--bench", action="store_true", help="time the steps, save nothing")
    args = parser.parse_args(argv)

    net = model(args.model)
    compiled = flux.mxnet(net, kvstore=args.kvstore, timeout=args.timeout)
    rank, workers = compiled.rank, compiled.workers
    if args.perturb and rank != 0:          # the chief's values must win at kv.init
        for p in flux.params(net).values():
            p.value = p.value + 1
    mine = flux.shard(data(args.model, args.steps * workers), compiled)
    saved, losses = {}, []
    step = [0]

    def after_step(state):
        if state.event != "step":
            return
        step[0] = state.step
        losses.append(state.loss)
        if not args.bench:
            for name, value in values(net).items():
                saved[f"step{state.step}.{name}"] = value
        if args.die_at is not None and rank == 1 and state.step + 1 == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    if args.die_at == 1 and rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    start = time.perf_counter()
    flux.train(compiled, mine, loss=flux.mse, opt=optimiser(args.opt), cb=after_step,
               checkpoint=args.checkpoint, every=args.every, resume=args.resume,
               verbose=False)
    seconds = time.perf_counter() - start
    if "async" in args.kvstore:
        import flux_mxnet
        flux_mxnet.synchronise(compiled)
    for name, value in values(net).items():
        saved[f"final.{name}"] = value
    np.savez(os.path.join(args.out, f"rank{rank}.npz"), rank=rank, workers=workers,
             losses=np.array(losses), seconds=seconds, steps=len(losses), **saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
