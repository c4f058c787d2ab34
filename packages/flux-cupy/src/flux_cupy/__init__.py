"""flux-cupy: flux's GPU backend, on CuPy.

    import flux
    gpu = flux.cupy(model, device=0)       # or flux.compile(model, "cupy", device="gpu:1")
    gpu(x)                                 # NumPy in, NumPy out; CuPy in, CuPy out
    flux.train(gpu, data, loss=flux.mse, opt=flux.ADAM())   # Params and optimiser state stay
                                                            # on the GPU

Each graph is planned once per input signature: chains of elementwise primitives (and their
gradients) become single generated CUDA kernels, matmuls go to cuBLAS and reductions to
CuPy's, intermediates are allocated once per plan; a training step with SGD, Momentum or ADAM
ends in one fused update kernel for all parameters (per dtype) and runs as one CUDA graph
after its first call. Options: ``device`` (a GPU number or ``"gpu:1"``), ``cuda_graphs``
(default True) and ``standin`` (True: run on NumPy instead of CuPy, a testing aid, also set by
the environment variable ``FLUX_CUPY_STANDIN=numpy``; see `flux_cupy._runtime`).

flux-core finds this backend through the ``flux`` entry-point group; importing it imports no
CuPy (compiling a model does, and says what is missing).
"""
from __future__ import annotations

from flux.backends import Backend, hookimpl, lift_loops
from flux.ir import primitives as P

from ._codegen import cuda_source, numpy_source
from ._compiled import CupyCompiled
from ._fusion import Group, schedule
from ._runtime import NVRTC, STANDIN, nvrtc_compile

__all__ = ["CupyBackend", "CupyCompiled", "flux_backends", "schedule", "Group", "cuda_source",
           "numpy_source", "nvrtc_compile", "kernel_sources", "STANDIN", "NVRTC"]


class CupyBackend(Backend):
    """The ``cupy`` backend (see the module docstring)."""

    name = "cupy"
    package = "flux-cupy"
    loops = True

    def compile(self, model, options: dict):
        return CupyCompiled(model, self, options)

    def lower(self, graph, options: dict):
        return CupyCompiled(None, self, options).lower(graph)


def kernel_sources(graph) -> list[str]:
    """The CUDA source of every fused kernel the backend makes for `graph`, loop bodies
    included (what CI compiles with NVRTC, and what `tools/gpu_check.sh` runs)."""
    steps = schedule(lift_loops(graph))
    sources = [cuda_source(step, f"flux_k{i}") for i, step in enumerate(steps)
               if isinstance(step, Group)]
    for step in steps:
        if not isinstance(step, Group) and step.prim is P.scan_p:
            sources += kernel_sources(step.attrs["body"])
    return sources


@hookimpl
def flux_backends():
    return [CupyBackend()]
