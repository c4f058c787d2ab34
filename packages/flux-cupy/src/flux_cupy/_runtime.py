"""Where a compiled model runs: CuPy on one GPU, or NumPy standing in for CuPy.

The stand-in is a testing aid: with ``FLUX_CUPY_STANDIN=numpy`` in the environment (or the
option ``standin=True``) the backend runs every plan it makes on NumPy, each fused kernel as
the NumPy code generated beside its CUDA source (`_codegen.numpy_source`), so the conformance
kit checks the planner, the fusion, the mirrors and the training steps on a machine without a
GPU. With ``FLUX_CUPY_NVRTC=1`` every CUDA kernel the backend generates is also compiled
with NVRTC (a host library: no GPU needed) as it is made, so a kernel that would not compile
fails the run that made it.
"""
from __future__ import annotations

import os

import numpy as np

from flux import BackendError, BackendNotInstalled
from flux.backends import first_line, parse_device

__all__ = ["Runtime", "open_runtime", "nvrtc_compile", "STANDIN", "NVRTC"]

STANDIN = "FLUX_CUPY_STANDIN"
NVRTC = "FLUX_CUPY_NVRTC"
ARCH = "compute_90"            # NVRTC's target for the CI check (the H200 is sm_90)

INSTALL = ("the cupy backend needs CuPy, which is not installed: install the CuPy build for "
           "your CUDA (pip install cupy-cuda12x, or cupy-cuda13x), or flux-cupy with its "
           "extra from this repository's wheels (pip install --no-index --find-links WHEELS "
           "'flux-cupy[cuda12]==0.1.0'); to test without a GPU, set FLUX_CUPY_STANDIN=numpy")

NO_GPU = ("cupy backend: no usable GPU: {reason}. flux.cupy needs an NVIDIA GPU and its "
          "driver; to test without one, set FLUX_CUPY_STANDIN=numpy")


def _env_flag(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def nvrtc_compile(source: str, name: str, arch: str = ARCH) -> str:
    """Compile CUDA C++ `source` to PTX with NVRTC (no GPU needed); a compile error is a
    BackendError with NVRTC's log."""
    from cupy_backends.cuda.libs import nvrtc
    program = nvrtc.createProgram(source, f"{name}.cu", [], [])
    try:
        nvrtc.compileProgram(program, [f"-arch={arch}", "-std=c++17"])
        ptx = nvrtc.getPTX(program)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    except Exception as error:
        log = nvrtc.getProgramLog(program)
        raise BackendError(f"cupy backend: the generated kernel {name} does not compile: "
                           f"{log or error}", trace=[]) from error
    finally:
        nvrtc.destroyProgram(program)


class Runtime:
    """The array module (`xp`: cupy, or numpy standing in) and the device a model runs on."""

    def __init__(self, xp, device: int, standin: bool):
        self.xp = xp
        self.device = device
        self.standin = standin
        self.check_kernels = _env_flag(NVRTC) in ("1", "true", "yes")
        if standin:
            self.native = np.ndarray
            self.out_of_memory = MemoryError
        else:
            self.native = xp.ndarray
            self.out_of_memory = xp.cuda.memory.OutOfMemoryError

    def __repr__(self) -> str:
        return "numpy stand-in" if self.standin else f"cuda:{self.device}"

    def on_device(self):
        """``with runtime.on_device():`` makes this model's GPU the current one (for the
        stand-in: NumPy without floating-point warnings, which a GPU does not give either)."""
        if self.standin:
            return np.errstate(all="ignore")
        return self.xp.cuda.Device(self.device)

    def to_device(self, value):
        if self.standin:
            return np.array(value)
        with self.xp.cuda.Device(self.device):
            return self.xp.asarray(value)

    def to_host(self, array) -> np.ndarray:
        return np.array(array) if self.standin else self.xp.asnumpy(array)

    def is_native(self, value) -> bool:
        """True for a CuPy array (never, for the stand-in: NumPy arrays are host arrays)."""
        return not self.standin and isinstance(value, self.native)

    def check_device(self, array, where: str) -> None:
        """A CuPy array given to this model must be on its GPU."""
        if array.device.id != self.device:
            from flux import FluxValueError
            raise FluxValueError(f"cupy backend: {where} is a CuPy array on GPU "
                                 f"{array.device.id}, but the model runs on GPU {self.device}; "
                                 f"move it with cupy.asarray under cupy.cuda.Device"
                                 f"({self.device})")


def open_runtime(device=None, standin=None) -> Runtime:
    """The runtime for ``flux.cupy(model, device=..., standin=...)``, checked now: CuPy
    importable, a GPU with a driver, and the device present."""
    if standin is None:
        standin = _env_flag(STANDIN) == "numpy"
    if standin:
        return Runtime(np, 0, True)
    try:
        import cupy
    except ImportError as error:
        raise BackendNotInstalled(INSTALL) from error
    index = 0 if device is None else _device_index(device)
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:          # cudaErrorInsufficientDriver, cudaErrorNoDevice ...
        reason = first_line(error) or type(error).__name__
        raise BackendError(NO_GPU.format(reason=reason), trace=[]) from error
    if count == 0:
        raise BackendError(NO_GPU.format(reason="CUDA sees no device"), trace=[])
    if index >= count:
        raise BackendError(f"cupy backend: there is no GPU {index}: CUDA sees {count} "
                           f"(device=0 to {count - 1})", trace=[])
    return Runtime(cupy, index, False)


def _device_index(device) -> int:
    parsed = parse_device(device, "cupy")
    if parsed.kind != "gpu":
        raise BackendError(f"cupy backend: device= names a GPU (0, 1, 'gpu:1', 'cuda:0'); "
                           f"found {device!r}", trace=[])
    return parsed.index
