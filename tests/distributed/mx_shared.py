"""A worker of the MXNet data-parallel tests: two models in one process share its one
ps-lite store (one made by the user, one by name); a second kind of dist store is refused.
Writes ``OUT/rank<r>.npz``: both models' parameters and the refusal's message.

    python mx_shared.py OUT
"""
from __future__ import annotations

import os
import sys

import mxnet as mx
import numpy as np

import flux


def main(out: str) -> int:
    kv = mx.kv.create("dist_sync")
    flux.seed(0)
    a, b = flux.Chain(flux.Affine(3, 2)), flux.Chain(flux.Affine(3, 2))
    ca, cb = flux.mxnet(a, kvstore=kv), flux.mxnet(b, kvstore="dist_sync")
    assert cb.kvstore.kv is kv
    x = np.full((4, 3), kv.rank + 1, np.float32)
    y = np.zeros((4, 2), np.float32)
    flux.train(ca, [(x, y)] * 3, verbose=False)
    flux.train(cb, [(x, y)] * 2, opt=flux.Momentum(0.1), verbose=False)
    try:
        flux.mxnet(flux.Chain(flux.Affine(3, 2)), kvstore="dist_async")
        refused = ""
    except flux.BackendError as error:
        refused = str(error)
    np.savez(os.path.join(out, f"rank{kv.rank}.npz"), refused=refused,
             **{f"a.{k}": p.value for k, p in flux.params(a).items()},
             **{f"b.{k}": p.value for k, p in flux.params(b).items()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
