"""flux.onnx's speed targets (issue 17), measured side by side in one run:

- export of a 100-layer model, ``Chain(Affine(32, 32), relu, ...)`` (100 Affine layers), and
  import (`flux.onnx.load`) of the exported char-RNN (LSTM(V→128), Affine(128→V), unrolled
  over 50 characters, V = 96): each under 1 s;
- a model imported from ONNX against the same model written in flux, both compiled on the
  NumPy backend: forward calls of the digits MLP (batch 256), the digits CNN of
  examples/cnn_digits.py (batch 64, 8×8 images; inference mode) and the char-RNN (batch 32),
  ratio imported / written ≤ 1.1 (the models are exported by flux, then imported); and a
  CNN exported by PyTorch (channels first: Conv 3×3 (1→16) → ReLU → MaxPool 2 → Conv 3×3
  (16→32) → ReLU → Flatten → Linear, 28×28 images, batch 32) against the same network with
  the same weights written in flux (channels last, its own layout), when torch is installed.

    python bench/onnx_speed.py [--repeats 7] [--calls 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench/mlp_step.py

import numpy as np  # noqa: E402

import flux  # noqa: E402
from _timing import print_ratio, print_times, side_by_side  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import cnn_digits  # noqa: E402

VOCAB, HIDDEN, STEPS = 96, 128, 50


def timed(f, repeats: int) -> float:
    """The median wall time of `repeats` calls of ``f()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def deep_chain(n=100, width=32):
    flux.seed(0)
    layers = []
    for _ in range(n):
        layers += [flux.Affine(width, width), flux.relu]
    return flux.Chain(*layers)


def char_rnn():
    flux.seed(0)
    return flux.unroll(flux.Chain(flux.LSTM(VOCAB, HIDDEN), flux.Affine(HIDDEN, VOCAB)), STEPS,
                       stateful=False)


def mlp():
    flux.seed(0)
    return flux.Chain(flux.Affine(64, 128), flux.relu, flux.Affine(128, 10))


def cnn():
    flux.seed(0)
    return flux.testmode(cnn_digits.network())    # the example's network, as it builds it


def torch_cnn(folder: Path):
    """``(imported, written, x_nchw, x_nhwc)`` or None without torch."""
    try:
        import torch      # noqa: PLC0415  (optional: the PyTorch-made model)
    except ImportError:
        return None
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(32 * 14 * 14, 10)).eval()
    path = folder / "torch_cnn.onnx"
    torch.onnx.export(net, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False,
                      dynamic_axes={"input": {0: "batch"}}, input_names=["input"])
    w = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    conv1, conv2 = flux.Conv((3, 3), 1, 16, padding=1), flux.Conv((3, 3), 16, 32, padding=1)
    conv1.W.value, conv1.b.value = w["0.weight"].transpose(2, 3, 1, 0), w["0.bias"]
    conv2.W.value, conv2.b.value = w["3.weight"].transpose(2, 3, 1, 0), w["3.bias"]
    dense = flux.Affine(32 * 14 * 14, 10)    # rows in (h, w, c) order, as flux flattens
    dense.W.value = w["6.weight"].reshape(10, 32, 14, 14).transpose(2, 3, 1, 0).reshape(-1, 10)
    dense.b.value = w["6.bias"]
    written = flux.Chain(conv1, flux.relu, flux.MaxPool((2, 2)), conv2, flux.relu,
                         flux.flatten, dense)
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    return flux.onnx.load(path), written, x, np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="flux-onnx-bench-"))

    deep = deep_chain()
    deep_file = folder / "deep.onnx"
    t_export = timed(lambda: flux.onnx.export(deep, deep_file, (8, 32)), args.repeats)
    rnn = char_rnn()
    rnn_file = folder / "char_rnn.onnx"
    flux.onnx.export(rnn, rnn_file, (32, STEPS, VOCAB))
    t_import = timed(lambda: flux.onnx.load(rnn_file), args.repeats)
    print("export and import (median wall time; target < 1 s each)")
    print(f"  export, 100 Affine layers        {t_export:7.3f} s")
    print(f"  import, char-RNN ({STEPS} steps)     {t_import:7.3f} s")

    rng = np.random.default_rng(0)
    for name, model, shape in [("digits MLP", mlp(), (256, 64)),
                               ("digits CNN", cnn(), (64, 8, 8, 1)),
                               ("char-RNN", rnn, (32, STEPS, VOCAB))]:
        path = folder / f"{name.split()[0]}.onnx"
        flux.onnx.export(model, path, shape)
        imported = flux.onnx.load(path)
        x = rng.random(shape, dtype=np.float32)
        written_c, imported_c = flux.compile(model), flux.compile(imported)
        np.testing.assert_allclose(imported_c(x), written_c(x), rtol=1e-4, atol=1e-5)

        def calls(compiled, x=x):
            def run(n):
                for _ in range(n):
                    compiled(x)
            return run
        times = side_by_side({"written": calls(written_c), "imported": calls(imported_c)},
                             args.repeats, args.calls)
        print_times(f"{name}, input {shape}, forward on NumPy (median per call)", times)
        print_ratio(times, "imported", "written", "target ≤ 1.1")

    made = torch_cnn(folder)
    if made is not None:
        imported, written, x_nchw, x_nhwc = made
        imported_c, written_c = flux.compile(imported), flux.compile(written)
        np.testing.assert_allclose(imported_c(x_nchw), written_c(x_nhwc), rtol=1e-4, atol=1e-4)

        def run_on(compiled, x):
            def run(n):
                for _ in range(n):
                    compiled(x)
            return run
        times = side_by_side({"written": run_on(written_c, x_nhwc),
                              "imported": run_on(imported_c, x_nchw)}, args.repeats, args.calls)
        print_times("PyTorch-made CNN, batch 32, 28×28, forward on NumPy (median per call)",
                    times)
        print_ratio(times, "imported", "written", "target ≤ 1.1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
