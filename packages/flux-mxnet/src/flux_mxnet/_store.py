"""`ParamStore`: the MXNet side of a compiled model's Params, one NDArray per Param."""
from __future__ import annotations

import mxnet as mx
import numpy as np

from ._lower import mx_shape, nd_array

__all__ = ["ParamStore", "copy_in"]


class ParamStore:
    """One NDArray per Param, shared by all the executors of one compiled model.

    `sync` copies a Param in when its `version` moved since the last copy (assignments,
    in-place writes, NumPy updates), so every executor, for every input shape, sees the
    current values; there is only one copy to keep current. After an update made on the
    MXNet side, `hold` tells the Params (`Param.defer`) and they fetch the new values from
    here (`fetch`) when next read.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self._arrays: dict[int, list] = {}   # id(Param) -> [Param, NDArray, version, shape]

    def record(self, p) -> list:
        got = self._arrays.get(id(p))
        if got is None or got[0] is not p or got[3] != p.shape:    # (NDArray.shape is slow)
            version = p.version
            got = self._arrays[id(p)] = [p, nd_array(p.peek(), self.ctx), version, p.shape]
        return got

    def array(self, p) -> mx.nd.NDArray:
        return self.record(p)[1]

    def sync(self, ps) -> None:
        arrays = self._arrays
        for p in ps:
            rec = arrays[id(p)]
            if p._version != rec[2]:
                copy_in(rec[1], p.peek(), mx_shape(rec[3]))   # fetched first if held elsewhere
                rec[2] = p._version

    def hold(self, ps) -> None:
        arrays = self._arrays
        for p in ps:
            arrays[id(p)][2] = p.defer(self)

    def fetch(self, p) -> np.ndarray:
        return self._arrays[id(p)][1].asnumpy().reshape(p.shape)


def copy_in(array: mx.nd.NDArray, value: np.ndarray, shape: tuple) -> None:
    """Copy a NumPy array of the same size into `array`, whose shape is `shape` (waiting for
    its pending writes). This is what ``array[:] = value`` ends in, without the indexing
    machinery in front of it (about 150 µs a call in MXNet 1.9.1, whose own method
    `_sync_copyfrom` this is)."""
    array._sync_copyfrom(np.asarray(value).reshape(shape))
