"""Character-level language model: an LSTM learns to write like Python's own reference manual.

    python examples/char_rnn.py                    # full size, NumPy backend
    python examples/char_rnn.py --quick            # a shorter run, as the tests use
    python examples/char_rnn.py --backend tf --epochs 3

The text is the Python Language Reference as `help()` shows it: the topics in the standard
library's `pydoc_data.topics` (about 460,000 characters; nothing is downloaded). The last 5%
is held out. The model reads one-hot characters x_t and gives logits z_t for the next one,

    h_t = LSTM(x_t)  (reading h_{t-1} and its cell state)      z_t = h_t W + b

trained with `logitcrossentropy` and ADAM on `unroll(model, T)`: the text is cut into BATCH
streams read side by side, and the unrolled model is stateful, so each chunk of T characters
starts from the hidden state the previous chunk ended in (the gradient stops at chunk
boundaries: truncated backpropagation through time). After every epoch it prints the loss on the
held-out text, in nats and bits per character, and a sample written one character at a time
by `unroll1(model)` from a seed string. Exits with status 1 if the final held-out loss is not
below the target (1.6 nats per character at full size, 2.5 with --quick; a model that ignored
context entirely could reach the text's character entropy, about 3.25 nats).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter

import numpy as np

import flux
from flux import LSTM, Affine, Chain, softmax, unroll, unroll1

HELD_OUT = 0.05           # the last 5% of the text
T = 50                    # characters per chunk: the unrolled length
BATCH = 32                # streams read side by side
HIDDEN = 128              # LSTM size
LEARNING_RATE = 0.005
SEED_TEXT = "The "        # samples continue this
SAMPLE_LENGTH = 240
TEMPERATURE = 0.6

FULL = dict(epochs=8, target=1.6)
QUICK = dict(epochs=1, target=2.5)


# -- The text -----------------------------------------------------------------------------------

def load_text() -> str:
    """The Python Language Reference's topics as plain text, as `help("if")` shows them."""
    from pydoc_data.topics import topics
    return "".join(topics[name] for name in sorted(topics))


class Vocabulary:
    """The characters of a text, each with its position in the one-hot vectors."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.onehots = np.eye(len(self.chars), dtype=np.float32)   # row i: character i

    def __len__(self) -> int:
        return len(self.chars)

    def ids(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def onehot(self, ids) -> np.ndarray:
        """One-hot vectors for an array of ids: shape ``ids.shape + (len(self),)``."""
        return self.onehots[ids]


def entropy(ids) -> float:
    """The text's character entropy in nats: the loss of the best model that ignores context."""
    counts = np.array(list(Counter(ids.tolist()).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def streams(ids, n):
    """`ids` cut into `n` contiguous streams of equal length, as inputs and next-character
    targets: two (n, L) arrays (the few characters left over are dropped)."""
    length = (len(ids) - 1) // n
    x = ids[:n * length].reshape(n, length)
    y = ids[1:n * length + 1].reshape(n, length)
    return x, y


def chunks(x, y, vocab):
    """Consecutive (x, y) chunks of T characters of every stream, one-hot:
    ((n, T, V), (n, T, V)) each; chunk k+1 continues where chunk k ends."""
    for t in range(0, x.shape[1] - T + 1, T):
        yield vocab.onehot(x[:, t:t + T]), vocab.onehot(y[:, t:t + T])


# -- Evaluating and sampling --------------------------------------------------------------------

def held_out_loss(evaluate, x, y, vocab) -> float:
    """Mean loss per character over the held-out streams, carrying the hidden state along."""
    flux.reset(evaluate)
    losses = [float(flux.logitcrossentropy(evaluate(xs), ys)) for xs, ys in chunks(x, y, vocab)]
    return float(np.mean(losses))


def sample(step, vocab, rng, seed_text=SEED_TEXT, length=SAMPLE_LENGTH,
           temperature=TEMPERATURE) -> str:
    """Text written one character at a time: `step` (an unroll1 of the model) reads
    `seed_text`, then each character is drawn from softmax(logits / temperature) and fed back."""
    flux.reset(step)
    for c in seed_text:
        logits = step(vocab.onehot(vocab.index[c]))                   # (V,)
    written = []
    for _ in range(length):
        p = np.asarray(softmax(logits / temperature), dtype=np.float64)
        i = rng.choice(len(vocab), p=p / p.sum())
        written.append(vocab.chars[i])
        logits = step(vocab.onehot(i))
    return seed_text + "".join(written)


def show(text: str) -> str:
    """A sample indented under its heading, with its own line breaks kept."""
    return "\n".join("    | " + line for line in text.split("\n"))


# -- Training -----------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a shorter run for tests: {QUICK['epochs']} epoch, target held-out "
                             f"loss {QUICK['target']} nats")
    parser.add_argument("--backend", default="numpy",
                        help="flux backend to compile the model for (default: numpy)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"passes over the training text (default {FULL['epochs']}, "
                             f"{QUICK['epochs']} with --quick)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the initial weights and the sampling")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    epochs = settings["epochs"] if args.epochs is None else args.epochs
    started = time.perf_counter()

    text = load_text()
    vocab = Vocabulary(text)
    ids = vocab.ids(text)
    split = int(len(ids) * (1 - HELD_OUT))
    x_train, y_train = streams(ids[:split], BATCH)
    x_test, y_test = streams(ids[split:], BATCH // 2)
    print(f"char_rnn: {len(text)} characters of the Python Language Reference "
          f"(pydoc_data.topics), {len(vocab)} distinct; {split} for training, "
          f"{len(ids) - split} held out")
    print(f"loss per character of a model that ignores context: "
          f"{entropy(ids[:split]):.3f} nats (uniform over the vocabulary: "
          f"{math.log(len(vocab)):.3f})")

    flux.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    V = len(vocab)
    model = Chain(LSTM(V, HIDDEN), Affine(HIDDEN, V))      # one character in, logits out
    unrolled = unroll(model, T)                            # stateful: chunks continue
    try:
        train = flux.compile(unrolled, backend=args.backend)     # each compiled copy keeps its
        evaluate = flux.compile(unrolled, backend=args.backend)  # own hidden state
        step = flux.compile(unroll1(model), backend=args.backend)
    except flux.BackendNotInstalled as error:
        print(f"char_rnn: {error}", file=sys.stderr)
        return 2
    print(f"model: {unrolled} on the {args.backend!r} backend; {BATCH} streams of "
          f"{x_train.shape[1]} characters, in chunks of {T}")

    opt = flux.ADAM(LEARNING_RATE)
    loss = math.inf
    for epoch in range(1, epochs + 1):
        flux.reset(train)                  # back to the start of every stream
        [mean_loss] = flux.train(train, chunks(x_train, y_train, vocab),
                                 loss=flux.logitcrossentropy, opt=opt, epochs=1)
        loss = held_out_loss(evaluate, x_test, y_test, vocab)
        print(f"epoch {epoch:>3}/{epochs}  train loss {mean_loss:.4f}  held-out loss "
              f"{loss:.4f} nats = {loss / math.log(2):.3f} bits per character  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"  sample (temperature {TEMPERATURE}):")
        print(show(sample(step, vocab, rng)), flush=True)

    print(f"held-out loss: {loss:.4f} nats = {loss / math.log(2):.3f} bits per character "
          f"({time.perf_counter() - started:.1f} s)")
    if not loss < settings["target"]:
        print(f"char_rnn: held-out loss {loss:.4f} is not below the target "
              f"{settings['target']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
