"""Data-parallel training on MXNet's kvstore: steps/s and per-step communication for 1, 2 and 4
local workers (`flux_mxnet.launch`, 1 server, all on 127.0.0.1), against one process without a
kvstore.

Model: the MLP of `mxnet_mlp.py` (64→128→128→10, softmax cross-entropy from logits, SGD),
batch 128 per worker; or ``--model lstm``: ``unroll(LSTM(32, 64), 16, stateful=False)``, batch
32 per worker, MSE. Each worker times `--steps` steps after `--warmup` (the first step binds the
executor and registers the Params); the kvstore counts the time spent in the gradient exchange
(pushpull and its wait) and the bytes each worker pushes and pulls. The run's steps/s is the
slowest worker's. On a machine with fewer cores than processes (workers + server + scheduler)
more workers cannot be faster: the figures to read are the exchange's time per step against
the single-process step and the bytes exchanged.

    python bench/distributed_mxnet.py [--steps 200] [--warmup 20] [--model mlp|lstm]
        [--workers 1 2 4]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile


import flux
from _data_parallel import BATCH, arguments, model, timed


def worker(args) -> None:
    """(run by the launcher) One worker: its timing and the kvstore's counters as JSON."""
    compiled = flux.mxnet(model(args.model), kvstore="dist_sync", timeout=120)
    store = compiled.kvstore
    timed(compiled, args.model, args.warmup, 1, compiled.rank)        # warm-up, not counted
    store.exchanges, store.seconds, store.bytes = 0, 0.0, 0
    seconds = timed(compiled, args.model, args.steps, 0, compiled.rank)
    result = {"rank": compiled.rank, "step": seconds, "exchange": store.seconds /
              store.exchanges, "bytes": store.bytes / store.exchanges}
    with open(os.path.join(args.out, f"rank{compiled.rank}.json"), "w") as f:
        json.dump(result, f)


def main() -> None:
    args = arguments(steps=200, warmup=20)
    if os.environ.get("DMLC_ROLE") == "worker":
        return worker(args)
    from flux_mxnet import launch

    single = timed(flux.mxnet(model(args.model)), args.model, args.steps, args.warmup, 0)
    params = sum(p.value.size for p in flux.params(model(args.model)).values())
    print(f"{args.model}, batch {BATCH[args.model]} per worker, {params} float32 parameters "
          f"({params * 4} bytes of gradients per step), SGD, {args.steps} timed steps; "
          f"{os.cpu_count()} CPU cores")
    print(f"  one process, no kvstore: {1 / single:8.1f} steps/s  {single * 1e3:7.2f} ms/step")
    print(f"  {'workers':>7} {'steps/s':>8} {'ms/step':>8} {'exchange ms':>11} "
          f"{'overhead':>9} {'bytes/step/worker':>18} {'samples/s':>10}")
    for n in args.workers:
        with tempfile.TemporaryDirectory(prefix="flux-kv-bench-") as out:
            status = launch.launch([os.path.abspath(__file__), "--model", args.model,
                                    "--steps", str(args.steps), "--warmup", str(args.warmup),
                                    "--out", out], workers=n, servers=1, timeout=600)
            if status != 0:
                sys.exit(f"distributed_mxnet: the run with {n} workers failed ({status})")
            ranks = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(n)]
        step = max(r["step"] for r in ranks)
        exchange = sum(r["exchange"] for r in ranks) / n
        print(f"  {n:7d} {1 / step:8.1f} {step * 1e3:8.2f} {exchange * 1e3:11.2f} "
              f"{(step - single) * 1e3:+8.2f}ms {ranks[0]['bytes']:18.0f} "
              f"{n * BATCH[args.model] / step:10.0f}")


if __name__ == "__main__":
    main()
