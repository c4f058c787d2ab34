#!/usr/bin/env bash
# Everything flux-cupy verifies on a GPU, in one command of a few minutes, for the GPU machine
# of the `device` tool (Python 3.12, CuPy for CUDA 13, PyTorch, NumPy, pytest, hypothesis,
# setuptools preinstalled; no package index):
#   run: bash tools/gpu_check.sh        (writes its whole output to $OUT/gpu_check.log)
# It installs flux-core and flux-cupy from the working tree without the index, runs the
# conformance kit and flux-cupy's tests on real CuPy (no stand-in), the digits demo on the GPU
# (if scikit-learn is there), the CNN and Transformer examples, and bench/gpu.py (MLPs, the CNN
# step, an LSTM) against PyTorch eager CUDA and torch.compile.
set -u
cd "$(dirname "$0")/.."
LOG="${OUT:-/tmp}/gpu_check.log"
VENV=/tmp/flux-gpu-venv
{
  echo "== $(date -u) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | head -3
  python3 -m venv --system-site-packages "$VENV" &&
    "$VENV/bin/python" -m pip install --no-deps --no-build-isolation --no-index -q \
      -e packages/flux-core -e packages/flux-cupy || echo "!! install failed"
  PY="$VENV/bin/python"
  export FLUX_CUPY_STANDIN=none FLUX_CUPY_NVRTC=0 PYTHONDONTWRITEBYTECODE=1
  "$PY" -c "import cupy, numpy, flux; print('cupy', cupy.__version__, 'numpy', numpy.__version__,
            'GPUs', cupy.cuda.runtime.getDeviceCount(), 'backends', flux.backends())"
  echo "== conformance kit and flux-cupy tests on CuPy"
  timeout 300 "$PY" -m pytest tests/cupy -q -p no:cacheprovider -x 2>&1 | tail -15
  echo "== CUDA graphs used by training steps"
  timeout 60 "$PY" - <<'PY'
import numpy as np, flux
from flux import Affine, Chain, relu
flux.seed(0)
gpu = flux.cupy(Chain(Affine(64, 128), relu, Affine(128, 10)))
x = np.random.default_rng(0).standard_normal((128, 64)).astype(np.float32)
y = np.eye(10, dtype=np.float32)[np.arange(128) % 10]
opt = flux.ADAM(0.01)
print("losses", flux.train(gpu, [(x, y)] * 20, loss=flux.logitcrossentropy, opt=opt, epochs=2))
for trainer, _ in gpu.optimiser_mirror(opt).trainers.values():
    print("captured:", trainer.graph_exec is not None, "| refused:", trainer.graph_error)
PY
  echo "== digits demo on the GPU"
  if "$PY" -c "import sklearn" 2>/dev/null; then
    timeout 120 "$PY" examples/digits.py --backend cupy --epochs 5 --out /tmp/digits_gpu.png
  else
    echo "scikit-learn is not installed here: demo skipped"
  fi
  echo "== the CNN digits example and the Transformer on the GPU (window kernels on CuPy)"
  if "$PY" -c "import sklearn" 2>/dev/null; then
    timeout 180 "$PY" examples/cnn_digits.py --backend cupy --epochs 6
  else
    echo "scikit-learn is not installed here: cnn_digits skipped"
  fi
  timeout 180 "$PY" examples/transformer.py --backend cupy --quick
  echo "== benchmarks"
  (cd bench && timeout 300 "$PY" gpu.py --repeats 5 --calls 100)
  echo "== done $(date -u)"
} 2>&1 | tee "$LOG"
