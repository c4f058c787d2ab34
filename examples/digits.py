"""Handwritten digits: train a two-layer perceptron on scikit-learn's 8×8 digits with flux.

    python examples/digits.py                      # NumPy backend, writes digits_loss.png
    python examples/digits.py --backend tf --epochs 5 --out /tmp/loss.png

The data (1797 images of 8×8 pixels, labels 0–9) ships inside scikit-learn; nothing is
downloaded. The model is ŷ = W₂ relu(x W₁ + b₁) + b₂ trained on the logits with
`logitcrossentropy` and ADAM. Prints one line per epoch, the test accuracy, and writes a
loss-curve PNG; exits with status 1 if the test accuracy is below 0.95.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import flux
from flux import Affine, Chain, relu

LABELS = range(10)
SPLIT_SEED = 0        # the train/test split is fixed, whatever --seed is
TEST_FRACTION = 0.2
BATCH_SIZE = 32
LEARNING_RATE = 0.01
TARGET_ACCURACY = 0.95


def load_data():
    """Pixels scaled to [0, 1] and one-hot labels, split 80/20 by a fixed permutation."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)            # (1797, 64), pixels were 0..16
    y = flux.onehot(list(digits.target), LABELS)            # (1797, 10)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(TEST_FRACTION * len(x)))
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def save_loss_curve(path, train_losses, test_losses):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(train_losses) + 1)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, train_losses, marker="o", label="train (mean over the epoch)")
    ax.plot(epochs, test_losses, marker="s", label="test (end of epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy loss")
    ax.set_yscale("log")
    ax.set_title("flux: 8×8 digits, Chain(Affine(64, 128), relu, Affine(128, 10))")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy",
                        help="flux backend to compile the model for (default: numpy)")
    parser.add_argument("--epochs", type=int, default=15, help="passes over the training set")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the initial weights and the batch order")
    parser.add_argument("--out", default="digits_loss.png", help="where to write the loss curve")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_data()
    print(f"digits: {len(x_train)} training and {len(x_test)} test images of 8×8 pixels")

    flux.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Chain(Affine(64, 128), relu, Affine(128, 10))
    try:
        compiled = flux.compile(model, backend=args.backend)
    except flux.BackendNotInstalled as error:
        print(f"digits: {error}", file=sys.stderr)
        return 2
    print(f"model: {model} on the {args.backend!r} backend")

    opt = flux.ADAM(LEARNING_RATE)
    test_data = [(x_test, y_test)]
    test_losses = []

    def report(state):
        """At the end of each epoch: the test loss and accuracy, one line."""
        if state.event != "epoch":
            return
        test_loss = float(flux.logitcrossentropy(compiled(x_test), y_test))
        test_losses.append(test_loss)
        print(f"epoch {state.epoch + 1:>3}/{args.epochs}  train loss {state.epoch_loss:.4f}  "
              f"test loss {test_loss:.4f}  test accuracy {flux.accuracy(compiled, test_data):.3f}",
              flush=True)

    # minibatches of the training set, in a new order every epoch
    data = flux.batches((x_train, y_train), BATCH_SIZE, shuffle=rng)
    train_losses = flux.train(compiled, data, loss=flux.logitcrossentropy, opt=opt,
                              epochs=args.epochs, cb=report)

    accuracy = flux.accuracy(compiled, test_data)
    save_loss_curve(args.out, train_losses, test_losses)
    print(f"test accuracy: {accuracy:.4f} ({time.perf_counter() - started:.1f} s); "
          f"loss curve written to {args.out}")
    if accuracy < TARGET_ACCURACY:
        print(f"digits: test accuracy {accuracy:.4f} is below the target {TARGET_ACCURACY}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
