"""A small Transformer encoder in flux, trained to reverse sequences of digits.

    python examples/transformer.py                 # NumPy backend, about half a minute
    python examples/transformer.py --quick         # fewer steps (the test suite's form)

The task is generated (nothing is downloaded): a sequence of 8 digits in, the same digits in
reverse order out, one prediction per position. Reversal is pure routing by position, so it
needs attention and the positional encoding: each output position must find the input
position mirrored to it. The model is an Embedding plus sinusoidal positional encoding, two
encoder blocks (multi-head self-attention written with `np.einsum` and `flux.softmax`,
residual connections, LayerNorm, a ReLU feed-forward layer, Dropout), and an Affine layer to
the ten digit logits, trained with `logitcrossentropy` on class indices and ADAM. It prints
the per-digit and whole-sequence accuracy on fresh sequences and exits with status 1 when
the whole-sequence accuracy is below the target (0.99; 0.9 with --quick). Measured on the
NumPy backend, seed 0: 1.000 per sequence after 600 steps.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import flux
from flux import Affine, Dropout, Embedding, LayerNorm, Param, net, relu

LENGTH, DIGITS = 8, 10


def sequences(rng, n):
    """`n` random digit sequences and their reversals (class indices)."""
    x = rng.integers(0, DIGITS, (n, LENGTH))
    return x, x[:, ::-1].copy()


def positional_encoding(length, d):
    """PE[t, 2i] = sin(t / 10000^(2i/d)), PE[t, 2i+1] = cos(...) (Vaswani et al. 2017)."""
    t = np.arange(length)[:, None]
    rates = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    pe = np.zeros((length, d), np.float32)
    pe[:, 0::2], pe[:, 1::2] = np.sin(t * rates), np.cos(t * rates)
    return pe


@net
class SelfAttention:
    """Multi-head scaled dot-product self-attention over the sequence axis:

        qᵢ, kᵢ, vᵢ = x Wq, x Wk, x Wv split into heads
        headᵢ = softmax(qᵢ kᵢᵀ / √dₖ) vᵢ,     y = concat(heads) Wo
    """

    Wq: Param
    Wk: Param
    Wv: Param
    Wo: Param

    def __init__(self, d, heads):
        scale = 1 / np.sqrt(d)
        for name in ("Wq", "Wk", "Wv", "Wo"):
            setattr(self, name, flux.param(flux.initn(d, d) * 100 * scale))
        self.heads = heads

    def __call__(self, x):                                   # x: (batch, time, d)
        b, t, d = x.shape
        h, k = self.heads, d // self.heads
        q = np.reshape(x @ self.Wq, (b, t, h, k))
        key = np.reshape(x @ self.Wk, (b, t, h, k))
        v = np.reshape(x @ self.Wv, (b, t, h, k))
        scores = np.einsum("bqhk,bshk->bhqs", q, key) / np.sqrt(k)
        attention = flux.softmax(scores, axis=-1)             # over the positions s
        heads = np.einsum("bhqs,bshk->bqhk", attention, v)
        return np.reshape(heads, (b, t, d)) @ self.Wo


@net
class EncoderBlock:
    """x ← LayerNorm(x + Dropout(attention(x))); x ← LayerNorm(x + Dropout(FF(x)))."""

    attention: SelfAttention
    norm1: LayerNorm
    hidden: Affine
    back: Affine
    norm2: LayerNorm
    drop: Dropout

    def __init__(self, d, heads, width, p):
        self.attention = SelfAttention(d, heads)
        self.norm1, self.norm2 = LayerNorm(d), LayerNorm(d)
        self.hidden = Affine(d, width, init=lambda *s: flux.initn(*s) * 100 / np.sqrt(s[0]))
        self.back = Affine(width, d, init=lambda *s: flux.initn(*s) * 100 / np.sqrt(s[0]))
        self.drop = Dropout(p)

    def __call__(self, x):
        x = self.norm1(x + self.drop(self.attention(x)))
        return self.norm2(x + self.drop(self.back(relu(self.hidden(x)))))


@net
class Transformer:
    """tokens → Embedding + positional encoding → encoder blocks → Affine → logits."""

    embed: Embedding
    blocks: tuple
    out: Affine

    def __init__(self, d=32, heads=4, width=64, depth=2, p=0.1):
        self.embed = Embedding(DIGITS, d, init=lambda *s: flux.initn(*s) * 100)
        self.position = positional_encoding(LENGTH, d)
        self.blocks = tuple(EncoderBlock(d, heads, width, p) for _ in range(depth))
        self.out = Affine(d, DIGITS)

    def __call__(self, tokens):                              # (batch, time) digits
        x = self.embed(tokens) + self.position
        for block in self.blocks:
            x = block(x)
        return self.out(x)                                   # (batch, time, 10)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--steps", type=int, default=600, help="training steps (batches)")
    parser.add_argument("--quick", action="store_true", help="250 steps, lower target")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    steps = 250 if args.quick else args.steps
    target = 0.9 if args.quick else 0.99
    started = time.perf_counter()
    flux.seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Transformer()
    try:
        compiled = flux.compile(model, backend=args.backend)
    except flux.BackendNotInstalled as error:
        print(f"transformer: {error}", file=sys.stderr)
        return 2
    data = [sequences(rng, 64) for _ in range(steps)]
    schedule = flux.lr_schedule(flux.warmup(flux.cosine_decay(0.003, steps), 50))

    def report(state):
        if state.event == "step" and state.step % 100 == 0:
            print(f"step {state.step:>5}/{steps}  loss {state.loss:.4f}", flush=True)

    flux.train(compiled, data, loss=flux.logitcrossentropy, opt=flux.ADAM(0.003),
               cb=[schedule, report], verbose=False)
    x, y = sequences(np.random.default_rng(10_000 + args.seed), 1000)
    predicted = np.argmax(compiled(x), axis=-1)                # test mode: no dropout
    digit, whole = np.mean(predicted == y), np.mean(np.all(predicted == y, axis=1))
    print(f"reversal accuracy on 1000 new sequences: {digit:.4f} per digit, {whole:.4f} per "
          f"sequence ({time.perf_counter() - started:.1f} s)")
    if whole < target:
        print(f"transformer: sequence accuracy {whole:.4f} is below the target {target}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
