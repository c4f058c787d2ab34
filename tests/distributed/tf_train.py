"""A data-parallel training worker for the tf.distribute tests (run by `flux_tf.launch`, or
alone for the single-process oracle): trains an MLP or an unrolled LSTM on its shard of a fixed
data set and saves its parameters after every step.

    python tf_train.py --model mlp|lstm --opt sgd|momentum|adam --steps 4 --out DIR [--single]
        [--checkpoint F --every 1 --resume] [--die-at STEP] [--timeout S] [--plain]

``--single``: one process (no strategy) trains on the combined batches of two workers, the
oracle. ``--die-at k``: worker 1 kills itself (SIGKILL) after k steps.
"""
import argparse
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import flux  # noqa: E402
import flux_tf  # noqa: E402
import tensorflow as tf  # noqa: E402

BATCH = 4          # each worker's batch
N_IN, N_OUT, T = 3, 2, 5


def model_of(kind: str):
    flux.seed(7)
    if kind == "mlp":
        return flux.Chain(flux.Affine(N_IN, 8), flux.tanh, flux.Affine(8, N_OUT))
    return flux.unroll(flux.LSTM(N_IN, N_OUT), T, stateful=False)


def data_of(kind: str, steps: int, workers: int) -> list:
    """Item ``i · workers + w`` is worker w's batch of step i (as `flux.shard` reads it)."""
    rng = np.random.default_rng(11)
    shape = (BATCH, N_IN) if kind == "mlp" else (BATCH, T, N_IN)
    out = (BATCH, N_OUT) if kind == "mlp" else (BATCH, T, N_OUT)
    return [(rng.standard_normal(shape).astype(np.float32),
             rng.standard_normal(out).astype(np.float32)) for _ in range(steps * workers)]


def combined(items: list, workers: int) -> list:
    """The single-process batches: the workers' items of each step, concatenated."""
    return [tuple(np.concatenate([items[i + w][k] for w in range(workers)])
                  for k in range(2)) for i in range(0, len(items), workers)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--opt", default="sgd")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="with --single: whose batches")
    ap.add_argument("--out", required=True)
    ap.add_argument("--single", action="store_true")
    ap.add_argument("--checkpoint")
    ap.add_argument("--every", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--die-at", type=int)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--plain", action="store_true",
                    help="TF's own MultiWorkerMirroredStrategy() and flux.tf's defaults")
    args = ap.parse_args()
    model = model_of(args.model)
    opt = {"sgd": lambda: flux.SGD(0.1), "momentum": lambda: flux.Momentum(0.05, 0.9),
           "adam": lambda: flux.ADAM(0.01)}[args.opt]()
    if args.single:
        compiled, rank = flux.tf(model), "single"
        data = combined(data_of(args.model, args.steps, args.workers), args.workers)
    else:
        if args.plain:                 # as API.md writes it
            compiled = flux.tf(model, strategy=tf.distribute.MultiWorkerMirroredStrategy())
        else:
            strategy = flux_tf.multi_worker(timeout=args.timeout)
            compiled = flux.tf(model, strategy=strategy, timeout=args.timeout)
        rank = compiled.rank
        data = flux.shard(data_of(args.model, args.steps, compiled.workers), compiled)
    os.makedirs(args.out, exist_ok=True)
    def save(state):
        if state.event != "step":
            return
        np.savez(os.path.join(args.out, f"{rank}_{state.step}.npz"),
                 **{k: p.value for k, p in flux.params(model).items()})
        if args.die_at == state.step and rank == 1:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    resume = args.checkpoint if args.resume and os.path.exists(args.checkpoint or "") else None
    flux.train(compiled, data, loss=flux.mse, opt=opt, cb=save, checkpoint=args.checkpoint,
               every=args.every, resume=resume, verbose=False)
    np.savez(os.path.join(args.out, f"{rank}_final.npz"),
             **{k: p.value for k, p in flux.params(model).items()})
    print(f"rank {rank} done", flush=True)


if __name__ == "__main__":
    main()
