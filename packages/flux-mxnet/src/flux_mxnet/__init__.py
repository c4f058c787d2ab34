"""flux-mxnet: flux's MXNet backend plugin.

``flux.mxnet(model)`` (or ``flux.compile(model, backend="mxnet", ctx=mx.cpu())``) runs the
model's graphs as MXNet executors; `flux.train`/`flux.update` run MXNet's backward and its
optimiser operators on one shared NDArray per Param (`ParamStore`); `symbol` and `module` hand
the model to MXNet's own API (Module, its optimisers and kvstores).
``flux.mxnet(model, kvstore="dist_sync")`` trains data-parallel through MXNet's kvstore
(`_distributed`; `synchronise`); ``python -m flux_mxnet.launch -n 2 -s 1 script.py`` starts
the workers, servers and scheduler on one machine (`launch`).

Modules: `_rules` (the lowering table), `_windows` and `_loops` (its rules for windows and for
`scan`, as ``foreach``), `_hoist` (work lifted out of loops), `_symbol` (a graph as one Symbol),
`_compiled` (bound executors, the shared Param arrays, `MXNetCompiled`), `_training` (flux's
optimisers as MXNet's update operators), `_native` (`symbol`, `module`, `set_params`),
`_distributed` (kvstores), `launch` (local launcher).
"""
from __future__ import annotations

import os

os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")   # no "MKLDNN is activated" per bind
# MXNet 1.9's MKL-DNN subgraph backend (on by default, applied when an executor is bound for
# inference) fuses 2-D/3-D Convolutions (and FullyConnected) into operators that read their
# weights once and keep them: a later call with other weights (an updated Param, the g of a
# filter gradient) would get the first call's. flux's graphs need none of its fusions. It is
# read at each bind; a user's own setting is kept (and brings the stale weights back).
os.environ.setdefault("MXNET_SUBGRAPH_BACKEND", "NONE")

import flux.backends as fb  # noqa: E402

from ._compiled import MXNetCompiled, ParamStore  # noqa: E402
from ._distributed import synchronise  # noqa: E402
from ._native import module, set_params, symbol  # noqa: E402

__all__ = ["MXNetBackend", "MXNetCompiled", "ParamStore", "symbol", "module", "set_params",
           "synchronise", "flux_backends"]


class MXNetBackend(fb.Backend):
    """The ``mxnet`` backend. Options: ``ctx`` or its synonym ``device`` (an `mx.Context`, or
    ``"cpu"``, ``"gpu"``, ``"gpu:1"``; default the CPU); ``kvstore`` (``"local"``,
    ``"device"``, ``"dist_sync"``, ``"dist_async"``, ``"dist_device_sync"`` or an
    ``mx.kv.KVStore``: training through it, data-parallel for ``dist_*``) and ``timeout``
    (seconds each kvstore call may wait, default ``FLUX_KV_TIMEOUT`` or 120)."""

    name = "mxnet"
    package = "flux-mxnet"
    loops = True        # scan as mx.sym.contrib.foreach (`_loops`)

    def compile(self, model, options: dict):
        return MXNetCompiled(model, self, options)

    def lower(self, graph, options: dict):
        return MXNetCompiled(None, self, options).lower(graph)


@fb.hookimpl
def flux_backends():
    return [MXNetBackend()]
