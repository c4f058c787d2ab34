"""CNN training step on 28×28×1 images: flux's NumPy backend vs PyTorch on the CPU, and flux.tf
vs a hand-written `tf.function`, side by side in one run (each pair where it is installed).

    .envs/core/bin/python bench/cnn.py [--steps 5] [--repeats 7] [--batch 64]   # flux vs torch
    .envs/tf/bin/python bench/cnn.py [--steps 5] [--repeats 7]       # flux.tf vs tf.function

The network, batch 64 of synthetic images (float32, channels last for flux and TensorFlow):
Conv((3, 3), 1, 32) → relu → Conv((3, 3), 32, 64) → relu → MaxPool((2, 2)) → Reshape(-1) →
Affine(12·12·64, 128) → relu → Affine(128, 10); softmax cross-entropy on one-hot labels,
averaged over the batch; SGD(0.01). flux's step is the public `flux.train` (on the model for
the NumPy backend, on `flux.tf(model)` for TensorFlow). PyTorch runs the same network
(NCHW, `nn.Conv2d`, `nn.MaxPool2d`, `nn.Linear`, `CrossEntropyLoss` on the one-hot targets,
`optim.SGD`) with `torch.set_num_threads(os.cpu_count())`; the hand-written TensorFlow step
is `tf.nn.conv2d` / `tf.nn.max_pool2d` / matmuls under a `GradientTape` in a `tf.function`
with an input signature, the loss read back each step as flux.train does; "concrete fn" is
the same step called through ``step.get_concrete_function()``, which skips `tf.function`'s
per-call argument matching as flux.tf does (see bench/tf_mlp.py). Every contender
starts from flux's initial weights (transposed to its layouts), and the script checks that
their first losses agree. Timings are medians of repeats of `--steps` steps, interleaved in a
different order each repeat (bench/_timing.py). Targets: flux / torch ≤ 1.25 (aim < 1),
flux.tf / tf.function ≤ 1.05.

Run it on an idle machine: with another process busy on one of two cores, OpenBLAS's two
threads (which split every product evenly and spin between products) make flux's NumPy step
erratic, up to several times slower; PyTorch suffers much less. ``OPENBLAS_NUM_THREADS=1``
shows the single-threaded figure.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench/mlp_step.py
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import flux  # noqa: E402
from _timing import print_ratio, print_times, side_by_side  # noqa: E402

LR, N_CLASSES = 0.01, 10


def model_and_weights():
    """flux's network (seeded) and a copy of its initial weights, in flux's layouts."""
    flux.seed(0)
    model = flux.Chain(flux.Conv((3, 3), 1, 32), flux.relu, flux.Conv((3, 3), 32, 64),
                       flux.relu, flux.MaxPool((2, 2)), flux.Reshape(-1),
                       flux.Affine(12 * 12 * 64, 128), flux.relu, flux.Affine(128, 10))
    weights = [np.array(p.value) for p in flux.params(model).values()]
    return model, weights


def flux_contender(x, y, backend=None):
    model, _ = model_and_weights()
    target = model if backend is None else flux.compile(model, backend)
    opt = flux.SGD(LR)
    data = [(x, y)]

    def run(steps):
        return flux.train(target, data * steps, loss=flux.logitcrossentropy, opt=opt,
                          verbose=False)
    return run


def torch_contender(x, y, weights, device="cpu"):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12 * 12 * 64, 128),
                          nn.ReLU(), nn.Linear(128, 10))
    cw1, cb1, cw2, cb2, aw1, ab1, aw2, ab2 = weights
    # flux flattens (h, w, c), torch (c, h, w): permute the first Affine's rows to match
    aw1 = aw1.reshape(12, 12, 64, 128).transpose(2, 0, 1, 3).reshape(-1, 128)
    with torch.no_grad():
        for layer, w, b in ((model[0], cw1.transpose(3, 2, 0, 1), cb1),
                            (model[2], cw2.transpose(3, 2, 0, 1), cb2),
                            (model[6], aw1.T, ab1), (model[8], aw2.T, ab2)):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(b))
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)
    ty = torch.from_numpy(y).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def run(steps):
        losses = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx), ty)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses
    return run


def tf_function_contender(x, y, weights, concrete=False):
    import tensorflow as tf
    variables = [tf.Variable(w) for w in weights]
    cw1, cb1, cw2, cb2, aw1, ab1, aw2, ab2 = variables

    @tf.function(input_signature=[tf.TensorSpec(x.shape), tf.TensorSpec(y.shape)])
    def step(x, y):
        with tf.GradientTape() as tape:
            h = tf.nn.relu(tf.nn.conv2d(x, cw1, 1, "VALID") + cb1)
            h = tf.nn.relu(tf.nn.conv2d(h, cw2, 1, "VALID") + cb2)
            h = tf.nn.max_pool2d(h, 2, 2, "VALID")
            h = tf.reshape(h, (-1, 12 * 12 * 64))
            h = tf.nn.relu(h @ aw1 + ab1)
            z = h @ aw2 + ab2
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(y, z))
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(LR * g)
        return loss

    call = step.get_concrete_function() if concrete else step

    def run(steps):
        return [float(call(x, y)) for _ in range(steps)]      # the loss back in Python
    return run


def check_first_losses(runs: dict, reference: float) -> None:
    for name, run in runs.items():
        loss = float(np.mean(run(1)))
        if not np.isclose(loss, reference, rtol=1e-3):
            raise SystemExit(f"{name}'s first loss {loss:.6f} differs from flux's "
                             f"{reference:.6f}: not the same network")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, 28, 28, 1), dtype=np.float32)
    y = np.eye(N_CLASSES, dtype=np.float32)[rng.integers(0, N_CLASSES, args.batch)]
    _, weights = model_and_weights()

    reference = float(np.mean(flux_contender(x, y)(1)))     # flux's first loss, NumPy
    contenders = {}
    torch_run = torch_contender(x, y, weights)
    if torch_run is not None:                       # each pair only where it can be compared
        contenders["flux"] = flux_contender(x, y)
        contenders["torch"] = torch_run
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        pass
    else:
        contenders["flux.tf"] = flux_contender(x, y, "tf")
        contenders["tf.function"] = tf_function_contender(x, y, weights)
        contenders["concrete fn"] = tf_function_contender(x, y, weights, concrete=True)
    if not contenders:
        raise SystemExit("neither PyTorch nor TensorFlow is installed: nothing to compare")
    check_first_losses(contenders, reference)           # first steps: trace, plan, run
    for run in contenders.values():
        run(2)                                            # warm up: buffers, caches
    times = side_by_side(contenders, args.repeats, args.steps)
    print_times(f"CNN training step, batch {args.batch} of 28×28×1, float32 (median of "
                f"{args.repeats} × {args.steps} steps):", times, "ms", 1e3)
    if "torch" in times:
        print_ratio(times, "flux", "torch", "target ≤ 1.25, aim < 1")
    if "tf.function" in times:
        print_ratio(times, "flux.tf", "tf.function", "target ≤ 1.05")
        print_ratio(times, "flux.tf", "concrete fn")


if __name__ == "__main__":
    main()
