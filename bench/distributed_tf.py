"""Data-parallel training on tf.distribute: steps/s and per-step communication for 1, 2 and 4
local workers (`flux_tf.launch`, MultiWorkerMirroredStrategy, all on 127.0.0.1), against one
process without a strategy.

Models (`_data_parallel.py`, shared with `distributed_mxnet.py`): the MLP of `tf_mlp.py`
(64→128→128→10, softmax cross-entropy from logits, SGD), batch 128 per worker; or ``--model
lstm``: ``unroll(LSTM(32, 64), 16, stateful=False)``, batch 32 per worker, MSE. Each worker
times `--steps` training steps after `--warmup` (the first traces and builds the step). Then
it times the exchange alone: the all-reduce flux's step makes (`all_reduce(MEAN)` over the loss
and every gradient, one batched collective, in `strategy.run` inside a `tf.function`) on
tensors of the gradients' shapes, `--steps` times. The run's steps/s is the slowest worker's.
On a machine with fewer cores than workers more workers cannot be faster: the figures to read
are the exchange's time per step against the single-process step, and the bytes all-reduced.

    python bench/distributed_tf.py [--steps 100] [--warmup 10] [--model mlp|lstm]
        [--workers 1 2 4]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import flux  # noqa: E402
import flux_tf  # noqa: E402
from _data_parallel import BATCH, arguments, model, timed  # noqa: E402


def exchange(strategy, shapes: list, steps: int, warmup: int) -> float:
    """Seconds per all-reduce of float32 tensors of `shapes` (and a scalar, the loss) across
    the workers, as flux's training step makes it."""
    values = [tf.constant(np.ones(s, np.float32)) for s in [(), *shapes]]

    def reduce():
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.MEAN, [tf.identity(v) for v in values])

    step = tf.function(lambda: strategy.run(reduce))
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    np.asarray(strategy.experimental_local_results(out[0])[0])   # the last one finished
    return (time.perf_counter() - start) / steps


def worker(args) -> None:
    """(run by the launcher) One worker: its step time and exchange time, as JSON."""
    strategy = flux_tf.multi_worker(timeout=120)
    net = model(args.model)
    compiled = flux.tf(net, strategy=strategy, timeout=120)
    step = timed(compiled, args.model, args.steps, args.warmup, compiled.rank)
    shapes = [p.value.shape for p in flux.params(net).values()]
    seconds = exchange(strategy, shapes, args.steps, args.warmup)
    with open(os.path.join(args.out, f"rank{compiled.rank}.json"), "w") as f:
        json.dump({"rank": compiled.rank, "step": step, "exchange": seconds}, f)


def main() -> None:
    args = arguments(steps=100, warmup=10)
    if os.environ.get("TF_CONFIG"):
        return worker(args)
    from flux_tf import launch

    single = timed(flux.tf(model(args.model)), args.model, args.steps, args.warmup, 0)
    params = sum(p.value.size for p in flux.params(model(args.model)).values())
    print(f"{args.model}, batch {BATCH[args.model]} per worker, {params} float32 parameters "
          f"(all-reduced per step: {(params + 1) * 4} bytes, gradients and loss), SGD, "
          f"{args.steps} timed steps; TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores")
    print(f"  one process, no strategy: {1 / single:8.1f} steps/s  {single * 1e3:7.2f} ms/step")
    print(f"  {'workers':>7} {'steps/s':>8} {'ms/step':>8} {'exchange ms':>11} "
          f"{'overhead':>9} {'samples/s':>10}")
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix="flux-tf-bench-") as out:
            log = os.path.join(out, "log")
            with open(log, "w") as quiet:
                status = launch.launch([os.path.abspath(__file__), "--model", args.model,
                                        "--steps", str(args.steps), "--warmup",
                                        str(args.warmup), "--out", out], n, timeout=900,
                                       out=quiet)
            if status != 0:
                sys.exit(f"distributed_tf: the run with {n} workers failed ({status}):\n"
                         + open(log).read()[-3000:])
            ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(n)]
        step = max(r["step"] for r in ranks)
        seconds = sum(r["exchange"] for r in ranks) / n
        print(f"  {n:7d} {1 / step:8.1f} {step * 1e3:8.2f} {seconds * 1e3:11.2f} "
              f"{(step - single) * 1e3:+8.2f}ms {n * BATCH[args.model] / step:10.0f}")


if __name__ == "__main__":
    main()
