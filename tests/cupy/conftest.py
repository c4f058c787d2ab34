"""The CuPy suites: skipped, with the reason, where flux-cupy is missing. Without a GPU they
run on flux-cupy's NumPy stand-in (tests/conftest.py sets FLUX_CUPY_STANDIN=numpy unless told
otherwise) and compile every generated CUDA kernel with NVRTC."""
import pytest

pytest.importorskip("flux_cupy", reason="flux-cupy is not installed (tools/dev.py test cupy "
                                        "builds that environment)")
