"""Fused kernels: a `Group`'s generated CUDA source compiled by CuPy (`cupy.RawKernel`, NVRTC
underneath) and launched over the group's iteration shape, or, for the NumPy stand-in, the
generated NumPy function of the same expressions. Kernels are cached by source, so the
groups of an unrolled recurrence's steps, which generate the same source, share one."""
from __future__ import annotations

import hashlib

import numpy as np

from ._codegen import cuda_source, numpy_source
from ._runtime import nvrtc_compile

__all__ = ["Kernel", "kernel_for", "THREADS", "MAX_BLOCKS"]

THREADS = 256
MAX_BLOCKS = 4096            # a grid-stride loop covers the rest

_CACHE: dict = {}


class Kernel:
    """One fused kernel: ``kernel(inputs, outputs)`` writes the group's outputs."""

    def __init__(self, group, runtime, source: str, name: str):
        self.name = name
        self.cuda = source
        self.size = int(np.prod(group.shape, dtype=np.int64))
        code, env = numpy_source(group, name)
        self.numpy = code
        if runtime.check_kernels:
            nvrtc_compile(source, name)
        if runtime.standin:
            exec(compile(code, f"<flux-cupy kernel {name}>", "exec"), env)
            self._fn = env[name]
            self._raw = None
        else:
            self._raw = runtime.xp.RawKernel(source, name, options=("-std=c++17",))
            self._grid = (max(1, min(MAX_BLOCKS, -(-self.size // THREADS))),)

    def __call__(self, inputs, outputs) -> None:
        if self._raw is None:
            for out, value in zip(outputs, self._fn(*inputs)):
                np.copyto(out, value, casting="unsafe")
        elif self.size:
            self._raw(self._grid, (THREADS,), (*inputs, *outputs))


def kernel_for(group, runtime) -> Kernel:
    """The kernel of `group` (made on first use, shared by groups of the same source)."""
    body = cuda_source(group, "KERNEL")
    shapes = (group.shape, tuple(v.aval.shape for v in group.inputs))   # (the NumPy form's)
    name = "flux_" + hashlib.sha1(f"{body}{shapes}".encode()).hexdigest()[:16]
    key = (name, runtime.standin, runtime.device)
    found = _CACHE.get(key)
    if found is None:
        found = _CACHE[key] = Kernel(group, runtime, body.replace("KERNEL", name, 1), name)
    return found
