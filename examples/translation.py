"""Translation with attention: the seed's encoder–decoder model learns to reverse phrases.

    python examples/translation.py                 # full size, NumPy backend
    python examples/translation.py --quick         # a smaller run, as the tests use
    python examples/translation.py --backend tf --epochs 5

This is the neural translation model with alignment from the seed's "Recurrence" section
(Bahdanau, Cho and Bengio 2015, "Neural Machine Translation by Jointly Learning to Align and
Translate"), written with the seed's names. The task is generated, so nothing is downloaded:
each phrase is 5 to 7 letters from "abcde", padded with "_" to Nphrase = 7 symbols, and its
translation is the phrase reversed (``"abcc___" -> "ccba___"``). The model is trained with
`crossentropy` (the decoder ends in softmax) and ADAM, and scored by per-symbol accuracy on
held-out phrases: the share of the translations' letters (not the padding) it gets right;
chance is 0.2. Prints one line per epoch and a few translations; exits with status 1 if the
final accuracy is below the target (0.97 at full size, 0.6 with --quick).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import flux
from flux import (LSTM, Affine, Chain, State, exp, flip, hcat, net, param, prev, seq, softmax,
                  unroll, unroll1)

# Note: the attention below sums Python lists of step values with Python's builtin `sum`;
# `flux.sum` has NumPy's semantics (a sum over an array's axes), so it is not imported here.

# -- The model, as in the seed ------------------------------------------------------------------

# A recurrent model which takes a token and returns a context-dependent annotation.


@net
class Encoder:
    """h_j = [→h_j ; ←h_j]: a forward and a backward LSTM read the phrase (paper §3.2)."""

    forward: object
    backward: object

    def __init__(self, n_in: int, n_out: int):
        self.forward = LSTM(n_in, n_out // 2)
        self.backward = flip(LSTM(n_in, n_out // 2))

    def __call__(self, token):
        return hcat(self.forward(token), self.backward(token))      # (N, n_out)


# A recurrent model which takes a sequence of annotations, attends, and returns a predicted
# output token.


@net
class Decoder:
    """One output step: attend over the annotations, then advance the decoder's LSTM.

        e_ij = a(s_{i-1}, h_j)                    alignment model, an Affine here (eq. 6)
        α_ij = exp(e_ij) / Σ_k exp(e_ik)          attention weights               (eq. 6)
        c_i  = Σ_j α_ij h_j                       context vector                  (eq. 5)
        s_i  = f(s_{i-1}, c_i)                    f is an LSTM                    (§3.1)

    As in the seed, the LSTM reads only the context (the paper's f also reads the previous
    output token y_{i-1}); `state` and `y` are the LSTM's cell state and output, both with
    trainable initial values.
    """

    attend: object
    recur: object
    state: State
    y: State
    N: int

    def __init__(self, n_in: int, n_out: int, N: int = 1):
        self.attend = Affine(n_in + n_out, 1)
        self.recur = unroll1(LSTM(n_in, n_out))
        self.state = param(np.zeros((1, n_out), np.float32))
        self.y = param(np.zeros((1, n_out), np.float32))
        self.N = N

    def __call__(self, anns):
        anns = seq(anns, self.N)                          # N annotations h_j, each (batch, n_in)
        energies = [exp(self.attend(hcat(prev(self.state), ann))[..., 0])   # exp(e_ij): (batch,)
                    for ann in anns]
        total = sum(energies)
        weights = [e / total for e in energies]           # α_ij
        ctx = sum(α[..., None] * ann for α, ann in zip(weights, anns))     # c_i: (batch, n_in)
        (_, self.state), self.y = self.recur.step((prev(self.y), prev(self.state)), ctx)
        return self.y                                     # (batch, n_out)


# The model

Nalpha = 6      # The size of the input token vector: 5 letters and the padding symbol
Nphrase = 7     # The length of (padded) phrases
Nhidden = 32    # The size of the hidden state (12 in the seed; 32 learns faster here)


def translation_model():
    """The seed's model: encode the phrase into annotations, then decode Nphrase tokens."""
    encode = Encoder(Nalpha, Nhidden)
    decode = Chain(Decoder(Nhidden, Nhidden, N=Nphrase), Affine(Nhidden, Nalpha), softmax)
    return Chain(
        unroll(encode, Nphrase, stateful=False),              # (batch, Nphrase, Nhidden)
        unroll(decode, Nphrase, stateful=False, seq=False))   # (batch, Nphrase, Nalpha)


# -- The task: reverse a phrase -----------------------------------------------------------------

LETTERS = "abcde"
PAD = "_"
SYMBOLS = LETTERS + PAD          # Nalpha of them; position k of a token vector is SYMBOLS[k]
LENGTHS = (5, 6, 7)              # phrase lengths, padded to Nphrase
TEST_SIZE = 1000
TEST_SEED = 12345                # the test phrases are the same whatever --seed is


def random_phrases(n, rng, exclude=frozenset()):
    """`n` distinct random phrases of LENGTHS letters, none of them in `exclude`."""
    found: dict[str, None] = {}
    while len(found) < n:
        length = rng.choice(LENGTHS)
        phrase = "".join(rng.choice(list(LETTERS), length))
        if phrase not in exclude:
            found[phrase] = None
    return list(found)


def onehot_phrases(phrases):
    """Phrases padded to Nphrase and one-hot encoded: (len(phrases), Nphrase, Nalpha)."""
    return np.stack([flux.onehot(list(p.ljust(Nphrase, PAD)), SYMBOLS) for p in phrases])


def reverse(phrase: str) -> str:
    return phrase[::-1]


def dataset(phrases):
    """(x, y): the phrases and their translations, one-hot."""
    return onehot_phrases(phrases), onehot_phrases([reverse(p) for p in phrases])


def batches(x, y, size, rng):
    """A shuffled list of (x, y) minibatches of `size` phrases (the last one may be smaller)."""
    order = rng.permutation(len(x))
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(x), size)]


def letter_accuracy(ŷ, y) -> float:
    """The share of the target's letters (not its padding) predicted right."""
    predicted, wanted = flux.onecold(ŷ), flux.onecold(y)     # (batch, Nphrase) indices
    letters = wanted != SYMBOLS.index(PAD)
    return float(np.mean(predicted[letters] == wanted[letters]))


def phrase_accuracy(ŷ, y) -> float:
    """The share of phrases translated exactly (every symbol, padding included)."""
    return float(np.mean(np.all(flux.onecold(ŷ) == flux.onecold(y), axis=-1)))


def decode_phrase(vectors) -> str:
    """One (Nphrase, Nalpha) phrase as text: the most likely symbol at each position (a
    one-hot phrase reads back as itself)."""
    return "".join(flux.onecold(vectors, SYMBOLS))


# -- Training -----------------------------------------------------------------------------------

FULL = dict(train_size=4000, epochs=30, batch_size=32, learning_rate=0.01, target=0.97)
QUICK = dict(train_size=4000, epochs=8, batch_size=32, learning_rate=0.01, target=0.6)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"a smaller run for tests: {QUICK['train_size']} phrases, "
                             f"{QUICK['epochs']} epochs, target accuracy {QUICK['target']}")
    parser.add_argument("--backend", default="numpy",
                        help="flux backend to compile the model for (default: numpy)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"passes over the training set (default {FULL['epochs']}, "
                             f"{QUICK['epochs']} with --quick)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the initial weights, the training phrases and the "
                             "batch order")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = QUICK if args.quick else FULL
    epochs = settings["epochs"] if args.epochs is None else args.epochs
    started = time.perf_counter()

    test_phrases = random_phrases(TEST_SIZE, np.random.default_rng(TEST_SEED))
    rng = np.random.default_rng(args.seed)
    train_phrases = random_phrases(settings["train_size"], rng, exclude=set(test_phrases))
    x_train, y_train = dataset(train_phrases)
    x_test, y_test = dataset(test_phrases)
    print(f"translation: reverse phrases of {min(LENGTHS)}–{max(LENGTHS)} letters from "
          f"{LETTERS!r}, padded with {PAD!r} to {Nphrase}; {len(x_train)} training and "
          f"{len(x_test)} held-out test phrases")

    flux.seed(args.seed)
    model = translation_model()
    try:
        compiled = flux.compile(model, backend=args.backend)
    except flux.BackendNotInstalled as error:
        print(f"translation: {error}", file=sys.stderr)
        return 2
    print(f"model: {model} on the {args.backend!r} backend")

    opt = flux.ADAM(settings["learning_rate"])
    for epoch in range(1, epochs + 1):
        # One call per epoch, so the batches are reshuffled and each epoch gets its line.
        [mean_loss] = flux.train(compiled, batches(x_train, y_train, settings["batch_size"], rng),
                                 loss=flux.crossentropy, opt=opt, epochs=1)
        ŷ = compiled(x_test)                                 # (TEST_SIZE, Nphrase, Nalpha)
        print(f"epoch {epoch:>3}/{epochs}  train loss {mean_loss:.4f}  "
              f"test loss {float(flux.crossentropy(ŷ, y_test)):.4f}  "
              f"test accuracy {letter_accuracy(ŷ, y_test):.3f}  "
              f"({time.perf_counter() - started:.0f} s)", flush=True)

    ŷ = compiled(x_test)
    accuracy = letter_accuracy(ŷ, y_test)
    for k in range(5):
        print(f"  {decode_phrase(x_test[k])} -> {decode_phrase(ŷ[k])}   "
              f"(right: {decode_phrase(y_test[k])})")
    print(f"test accuracy: {accuracy:.4f} per letter, {phrase_accuracy(ŷ, y_test):.4f} of "
          f"phrases exactly ({time.perf_counter() - started:.1f} s)")
    if accuracy < settings["target"]:
        print(f"translation: test accuracy {accuracy:.4f} is below the target "
              f"{settings['target']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
