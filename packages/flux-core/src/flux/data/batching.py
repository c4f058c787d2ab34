"""Batch and Seq utilities (`batchone`, `batches`, `seqs`, `chunk`, `rpad`) and `unwrap`, which
model calls use to take Batches and Seqs and to give them back."""
from __future__ import annotations

import operator

import numpy as np

from flux.data.batch import (NUMERIC_KINDS, Batch, Seq, _checked_raw, _read_only, _stack,
                             _Stacked, _what, rawbatch)
from flux.errors import FluxTypeError, FluxValueError, ShapeError

__all__ = ["batchone", "batches", "Minibatches", "seqs", "chunk", "rpad", "unwrap"]


def batchone(x) -> Batch:
    """A `Batch` of the one point `x`.

    >>> batchone([1, 2, 3])
    1-element Batch of ndarray:
     [1, 2, 3]
    >>> rawbatch(batchone(np.zeros(3))).shape
    (1, 3)
    """
    return Batch([x])


def batches(xs, n: int, *, shuffle=None, drop_last: bool | None = None):
    """Batches of `n` consecutive items of `xs`: ``xs[0:n], xs[n:2n], ...``; a remainder of
    fewer than `n` items is dropped.

    `xs` is a list, an array (its first axis indexes the items) or a `Batch`/`Seq`
    (whose nesting the batches' items keep). It is stacked once, when `batches` is called;
    the batches are views of that array.

    >>> [b == bb for b, bb in zip(batches([[1], [2], [3], [4], [5]], 2), [[[1], [2]], [[3], [4]]])]
    [True, True]
    >>> len(list(batches(np.zeros((5, 3)), 2)))
    2

    **Minibatches for training.** Given a tuple of arrays of one length (``(X, Y)``), it is
    `Minibatches`: a re-iterable collection of ``(x, y)`` tuples of `n` rows, whose last one
    has the remaining rows (unless ``drop_last=True``), in a new random order at every
    iteration when `shuffle` is given (a `np.random.Generator`, or a seed). So
    ``flux.train(model, flux.batches((X, Y), 32, shuffle=rng), epochs=10)`` reshuffles every
    epoch.

    >>> X, Y = np.arange(10).reshape(5, 2), np.arange(5)
    >>> [y.tolist() for x, y in batches((X, Y), 2)]
    [[0, 1], [2, 3], [4]]
    >>> sorted(int(v) for _, y in batches((X, Y), 2, shuffle=0) for v in y)
    [0, 1, 2, 3, 4]
    """
    if isinstance(xs, tuple):
        return Minibatches(xs, n, shuffle, bool(drop_last))
    if shuffle is not None or drop_last is not None:
        raise FluxTypeError("batches: shuffle= and drop_last= are for minibatches of a tuple "
                            "of arrays, batches((X, Y), n, shuffle=rng)")
    return _runs(Batch, "batches", xs, n)


class Minibatches:
    """``(x, y, ...)`` minibatches of `n` rows of the arrays `arrays` (see `batches`)."""

    def __init__(self, arrays: tuple, n: int, shuffle=None, drop_last: bool = False):
        self.n = _positive("batches", n)
        self.arrays = tuple(rawbatch(a) if isinstance(a, _Stacked) else np.asarray(a)
                            for a in arrays)
        if not self.arrays:
            raise FluxValueError("batches: an empty tuple of arrays")
        lengths = {len(a) if a.ndim else None for a in self.arrays}
        if len(lengths) != 1 or None in lengths:
            shapes = ", ".join(str(a.shape) for a in self.arrays)
            raise ShapeError(f"batches: the arrays must have the same number of rows (their "
                             f"first axis), found shapes {shapes}")
        self.size = lengths.pop()
        self.drop_last = drop_last
        if shuffle is None or isinstance(shuffle, np.random.Generator):
            self.rng = shuffle
        elif isinstance(shuffle, (int, np.integer)) and not isinstance(shuffle, bool):
            self.rng = np.random.default_rng(int(shuffle))
        else:
            raise FluxTypeError(f"batches: shuffle= takes a np.random.Generator or a seed, "
                                f"found {type(shuffle).__name__}")

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.n)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        order = self.rng.permutation(self.size) if self.rng is not None else None
        stop = len(self) * self.n
        for start in range(0, min(stop, self.size), self.n):
            rows = slice(start, start + self.n) if order is None else order[start:start + self.n]
            yield tuple(a[rows] for a in self.arrays)

    def __repr__(self) -> str:
        shuffled = ", shuffled" if self.rng is not None else ""
        return f"<{len(self)} minibatches of {self.n} of {self.size} rows{shuffled}>"


def seqs(xs, n: int):
    """Seqs of `n` consecutive items of `xs` (a remainder is dropped): `batches`, making Seqs.

    >>> [list(map(int, s)) for s in seqs([1, 2, 3, 4, 5, 6, 7], 3)]
    [[1, 2, 3], [4, 5, 6]]
    """
    return _runs(Seq, "seqs", xs, n)


def chunk(xs, n: int) -> list:
    """`xs` split into `n` contiguous chunks of ``len(xs) // n`` items each; the remainder of
    ``len(xs) % n`` items at the end is dropped (as `batches` drops it).

    Each chunk is a slice of `xs`, so of its type (list, string, array, Batch, Seq, ...); any
    other iterable is made a list first. Asking for more chunks than there are items is a
    `FluxValueError` (each chunk would be empty).

    >>> chunk([1, 2, 3, 4, 5, 6, 7], 3)
    [[1, 2], [3, 4], [5, 6]]
    >>> chunk("abcdefgh", 2)
    ['abcd', 'efgh']
    """
    n = _positive("chunk", n)
    if not (hasattr(xs, "__len__") and hasattr(xs, "__getitem__")):
        xs = list(xs)
    size = len(xs) // n
    if size == 0:
        raise FluxValueError(f"chunk: cannot split {len(xs)} items into {n} non-empty chunks")
    return [xs[i * size:(i + 1) * size] for i in range(n)]


def rpad(seq, n: int, value):
    """`seq` lengthened to `n` items by appending items equal to `value`.

    A scalar `value` fills an item of the items' shape; an array (or nested list) is the item
    itself and must have that shape. The dtype is that of ``np.concatenate`` of the two (a
    Python number keeps the sequence's dtype when it fits, as in NumPy 2). A `seq` that is
    already `n` items or longer is returned unchanged (not truncated). `seq` is a `Seq` (or a
    `Batch`, kept as one); a list or array is made a `Seq` first.

    >>> rpad(Seq([[1, 2], [3, 4]]), 4, 0)
    4-element Seq of ndarray:
     [1, 2]
     [3, 4]
     [0, 0]
     [0, 0]
    >>> rpad(Seq([[1, 2]]), 2, [9, 8])
    2-element Seq of ndarray:
     [1, 2]
     [9, 8]
    """
    n = _count("rpad", n, minimum=0)
    if not isinstance(seq, _Stacked):
        seq = Seq(seq)
    missing = n - len(seq)
    if missing <= 0:
        return seq
    item_shape = seq.shape[1:]
    pad_value = rawbatch(value)
    if pad_value.dtype.kind not in NUMERIC_KINDS:
        raise FluxTypeError(f"rpad: the padding value must be a number or an array of numbers, "
                            f"got {_what(value)}")
    if pad_value.ndim == 0:
        scalar = value if isinstance(value, (bool, int, float, complex)) else pad_value
        pad = np.full((missing, *item_shape), value, np.result_type(seq.dtype, scalar))
    elif pad_value.shape == item_shape:
        pad = np.broadcast_to(pad_value, (missing, *item_shape))
    else:
        raise ShapeError(f"rpad: the padding value has shape {pad_value.shape}, the items have "
                         f"shape {item_shape}; pass an item of that shape, or a scalar")
    raw = np.concatenate([seq._raw, pad])   # (n, *item_shape)
    return type(seq)._wrap(_read_only(raw), seq._inner)


def unwrap(args):
    """``(raw_args, wrap)``: `args` with every `Batch`/`Seq` replaced by its stacked array, and
    the function that wraps a model's outputs back.

    `args` may nest tuples (named tuples too), lists and dicts; they are rebuilt with the same
    structure. The first Batch/Seq met (depth first, in argument order) is the template: with
    ``L`` levels of nesting (a Batch of Seq has ``L = 2``) and ``N`` items, ``wrap(outputs)``
    wraps every NumPy array of numbers in `outputs` (through tuples, lists and dicts) whose
    first axis has length ``N``, as the template's outermost ``k = min(L, max(ndim - 1, 1))``
    levels: its items keep at least one axis, except that a 1-d output is a Batch of numbers.
    From a Batch of Seq template, a ``(batch, time, out)`` output becomes a Batch of Seq and a
    ``(batch, out)`` output a Batch. Other outputs are returned as they are. With no Batch/Seq
    in `args`, `wrap` is the identity.

    >>> bs = Batch([Seq(np.zeros((4, 3))), Seq(np.ones((4, 3)))])
    >>> (raw,), wrap = unwrap((bs,))
    >>> raw.shape
    (2, 4, 3)
    >>> y, z = wrap((np.zeros((2, 4, 5)), np.zeros((2, 5))))
    >>> y.shape, z.shape
    ((2, 4, 5), (2, 5))
    >>> type(y).__name__, type(y[0]).__name__, type(z).__name__, type(z[0]).__name__
    ('Batch', 'Seq', 'Batch', 'ndarray')
    """
    found = []

    def strip(x):
        if isinstance(x, _Stacked):
            if not found:
                found.append(x)
            return x._raw
        return _rebuild(x, strip)

    raw_args = strip(args)
    if not found:
        return raw_args, _identity
    template = found[0]
    levels, n = template._kinds(), len(template)

    def wrap(outputs):
        if isinstance(outputs, np.ndarray):
            if (outputs.ndim >= 1 and outputs.shape[0] == n
                    and outputs.dtype.kind in NUMERIC_KINDS):
                k = min(len(levels), max(outputs.ndim - 1, 1))
                return levels[0]._wrap(_read_only(outputs), levels[1:k])
            return outputs
        return _rebuild(outputs, wrap)

    return raw_args, wrap


def _runs(cls, name: str, xs, n):
    """The generator behind `batches` and `seqs` (arguments checked now, not at first use)."""
    n = _positive(name, n)
    if isinstance(xs, _Stacked):
        raw, inner = xs._raw, xs._inner
    elif isinstance(xs, np.ndarray):
        raw, inner = _read_only(_checked_raw(name, xs, (Batch,))), ()   # no copy
    else:
        xs = list(xs)
        if not xs:
            return iter(())
        raw, inner = _stack(name, xs, "Batch")
    return (cls._wrap(raw[i:i + n], inner) for i in range(0, len(raw) - n + 1, n))


def _positive(name: str, n) -> int:
    return _count(name, n, minimum=1)


def _count(name: str, n, minimum: int) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise FluxTypeError(f"{name}: the count must be an integer, got {_what(n)}") from None
    if n < minimum:
        raise FluxValueError(f"{name}: the count must be at least {minimum}, got {n}")
    return n


def _rebuild(x, f):
    """`x` with `f` applied to the children of its tuples (named ones too), lists and dicts."""
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return type(x)(*(f(a) for a in x))
    if isinstance(x, (tuple, list)):
        return type(x)(f(a) for a in x)
    if isinstance(x, dict):
        return type(x)((k, f(v)) for k, v in x.items())
    return x


def _identity(outputs):
    return outputs
