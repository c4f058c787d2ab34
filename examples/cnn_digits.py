"""Handwritten digits with a small convolutional network (LeNet-style) in flux.

    python examples/cnn_digits.py                       # NumPy backend
    python examples/cnn_digits.py --backend tf --epochs 10

scikit-learn's 8×8 digits (shipped with it; nothing is downloaded) as images of shape
(8, 8, 1), channels last. The network is two 3×3 convolutions with batch normalisation and
ReLU, a 2×2 max pool, dropout, and two affine layers; it is trained on the logits with
`logitcrossentropy` and ADAM, its learning rate decaying along a cosine. It prints
`flux.shapes` of the network (the shapes each line of the model computes), one line per
epoch and the test accuracy, and exits with status 1 when that is below 0.98.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import flux
from flux import Affine, BatchNorm, Chain, Conv, Dropout, MaxPool, Reshape, relu

LABELS = range(10)
SPLIT_SEED = 0        # the train/test split is fixed, whatever --seed is
TEST_FRACTION = 0.2
BATCH_SIZE = 32
LEARNING_RATE = 0.003
TARGET_ACCURACY = 0.98


def load_images():
    """Pixels scaled to [0, 1] as (N, 8, 8, 1) images and one-hot labels, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]     # (1797, 8, 8, 1)
    y = flux.onehot(list(digits.target), LABELS)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(TEST_FRACTION * len(x)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def network():
    """conv 3×3 (16) → BN → relu → conv 3×3 (32) → BN → relu → max pool 2×2 → dropout →
    affine 512 → 64 → relu → dropout → affine 64 → 10 (logits)."""
    return Chain(
        Conv((3, 3), 1, 16, padding="same"), BatchNorm(16), relu,
        Conv((3, 3), 16, 32, padding="same"), BatchNorm(32), relu,
        MaxPool((2, 2)), Dropout(0.25),
        Reshape(-1), Affine(4 * 4 * 32, 64), relu, Dropout(0.25),
        Affine(64, 10))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy",
                        help="flux backend to compile the model for (default: numpy)")
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the initial weights, dropout and the batch order")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_images()
    print(f"cnn_digits: {len(x_train)} training and {len(x_test)} test images of 8×8 pixels")

    flux.seed(args.seed)
    model = network()
    print(flux.shapes(model, x_test[:BATCH_SIZE]))
    try:
        compiled = flux.compile(model, backend=args.backend)
    except flux.BackendNotInstalled as error:
        print(f"cnn_digits: {error}", file=sys.stderr)
        return 2
    print(f"on the {args.backend!r} backend")
    test_data = [(x_test, y_test)]

    def report(state):
        if state.event == "epoch":
            print(f"epoch {state.epoch + 1:>3}/{args.epochs}  train loss "
                  f"{state.epoch_loss:.4f}  test accuracy "
                  f"{flux.accuracy(compiled, test_data):.4f}", flush=True)

    data = flux.batches((x_train, y_train), BATCH_SIZE, shuffle=np.random.default_rng(args.seed))
    schedule = flux.lr_schedule(flux.cosine_decay(LEARNING_RATE, args.epochs * len(data)))
    flux.train(compiled, data, loss=flux.logitcrossentropy, opt=flux.ADAM(LEARNING_RATE),
               epochs=args.epochs, cb=[schedule, report])
    accuracy = flux.accuracy(compiled, test_data)          # test mode: no dropout, running BN
    print(f"test accuracy: {accuracy:.4f} ({time.perf_counter() - started:.1f} s)")
    if accuracy < TARGET_ACCURACY:
        print(f"cnn_digits: test accuracy {accuracy:.4f} is below the target "
              f"{TARGET_ACCURACY}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
