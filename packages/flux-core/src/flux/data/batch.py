"""`Batch` and `Seq`: lists of data points stored as one stacked array, and `rawbatch`, the
array itself (their other utilities are in `flux.data.batching`).

A ``Batch([x1, x2, x3])`` behaves like the list ``[x1, x2, x3]`` (length, indexing, slicing,
iteration, comparison with nested lists), but holds ``np.stack([x1, x2, x3])``: the first axis
indexes the items. `Seq` is the same structure for the steps of a sequence. They nest: a
Batch of Seqs of vectors is one array of shape ``(batch, time, features)``.

Both are read-only: the stacked array is kept as a non-writeable view, and items are views
into it.
"""
from __future__ import annotations

import operator
import warnings
from collections.abc import Sequence

import numpy as np

from flux.errors import FluxTypeError, FluxValueError, ShapeError

__all__ = ["Batch", "Seq", "rawbatch"]

NUMERIC_KINDS = "biufc"   # bool, int, uint, float, complex
REPR_ITEMS = 10           # a longer Batch shows its first and last REPR_ITEMS // 2 items

MISMATCHED_SHAPES = ("{name}: item {i} has shape {shape}, item 0 has shape {first}; the items "
                     "are stacked into one array, so they must all have the same shape")
MISMATCHED_KINDS = ("{name}: item {i} is {kind}, item 0 is {first}; the items must all be "
                    "nested the same way")
RAGGED_ITEM = ("{name}: item {i} is a ragged nested list (its lists at one depth have "
               "different lengths); an item must be a rectangular array")
NOT_NUMBERS = ("{name}: item {i} is {what}, not numbers; items are arrays, nested lists of "
               "numbers, numbers, or Batch/Seq")
EMPTY = ("{name}: no items to take an item shape from; make an empty one from a stacked array "
         "with an explicit item shape: {cls}.from_raw(np.zeros((0, *item_shape)))")
NOT_A_SEQUENCE = "{name}: expected a sequence of items, got {what}"
BAD_INDEX = ("{cls} indices are integers or slices, not {what}; "
             "index the stacked array for anything else: rawbatch(xs)[...]")
RAW_TOO_LOW = ("{name}: {kind} needs an array of rank at least {need} (the first axis "
               "indexes the items, one more per level of nesting), got shape {shape}")


class _Stacked(Sequence):
    """What `Batch` and `Seq` share: a read-only sequence over one stacked array.

    ``_raw`` is the stacked array (a non-writeable view); ``_inner`` is the kinds of the
    nested levels below this one, outermost first: ``()`` when items are arrays, ``(Seq,)``
    when they are Seqs of arrays.
    """

    __slots__ = ("_raw", "_inner")
    # No elementwise arithmetic: a Batch is a list of points, not an array (use `rawbatch`, or
    # `.map`). This also makes NumPy hand `array == xs` to our `__eq__`.
    __array_ufunc__ = None
    __hash__ = None

    def __init__(self, items):
        raw, inner = _stack(type(self).__name__, items)
        self._raw = _read_only(raw)
        self._inner = inner

    @classmethod
    def from_raw(cls, array, inner=()):
        """Wrap an already stacked array, without copying: its first axis indexes the items.

        `inner` states the nesting of the items: ``Seq`` (or ``(Seq,)``) for items that are
        Seqs, ``(Seq, Batch)`` for Seqs of Batches, ``()`` for plain array items.

        >>> Batch.from_raw(np.arange(12.0).reshape(2, 3, 2), inner=Seq)
        2-element Batch of Seq of ndarray:
         [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
         [[6.0, 7.0], [8.0, 9.0], [10.0, 11.0]]
        >>> len(Batch.from_raw(np.zeros((0, 3))))     # an empty Batch with items of shape (3,)
        0
        """
        inner = _as_inner(inner)
        array = _checked_raw(f"{cls.__name__}.from_raw", np.asarray(array), (cls,) + inner)
        return cls._wrap(_read_only(array), inner)

    @classmethod
    def _wrap(cls, raw, inner):
        """A `cls` over `raw` (already checked and read-only), with no checks and no copy."""
        self = cls.__new__(cls)
        self._raw = raw
        self._inner = inner
        return self

    # -- the sequence --------------------------------------------------------------------

    def __len__(self) -> int:
        return self._raw.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)._wrap(self._raw[index], self._inner)
        try:
            i = operator.index(index)
        except TypeError:
            raise FluxTypeError(BAD_INDEX.format(cls=type(self).__name__,
                                                 what=type(index).__name__)) from None
        item = self._raw[i, ...]            # IndexError past the end, as for lists
        if not self._inner:
            return item                     # always an ndarray (0-d for a Batch of numbers)
        return self._inner[0]._wrap(item, self._inner[1:])

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __contains__(self, value) -> bool:
        return any(_item_equal(item, value) for item in self)

    def index(self, value, start=0, stop=None) -> int:
        """The index of the first item equal to `value` (ValueError if there is none)."""
        stop = len(self) if stop is None else stop
        for i in range(*slice(start, stop).indices(len(self))):
            if _item_equal(self[i], value):
                return i
        raise ValueError(f"{type(self).__name__}.index: value is not an item")

    def count(self, value) -> int:
        """How many items equal `value`."""
        return sum(_item_equal(item, value) for item in self)

    # -- the stacked array -----------------------------------------------------------------

    @property
    def shape(self) -> tuple:
        """The shape of the stacked array: ``(len(xs), *item_shape)``."""
        return self._raw.shape

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the stacked array."""
        return self._raw.dtype

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self._raw.dtype:
            if copy is False:
                raise ValueError(f"{type(self).__name__}: converting {self._raw.dtype} to "
                                 f"{np.dtype(dtype)} needs a copy")
            return self._raw.astype(dtype)
        return self._raw.copy() if copy else self._raw

    # -- values ----------------------------------------------------------------------------

    def __eq__(self, other) -> bool:
        if isinstance(other, _Stacked):
            return (self._kinds() == other._kinds()
                    and _array_equal(self._raw, other._raw))
        if isinstance(other, np.ndarray):
            return _array_equal(self._raw, other)
        if isinstance(other, (list, tuple)):
            return (len(other) == len(self)
                    and all(_item_equal(item, o) for item, o in zip(self, other)))
        return NotImplemented

    def map(self, f):
        """``f`` applied to each item, stacked again as the same kind (a Batch gives a Batch).

        >>> Batch([np.ones((2, 2)), np.zeros((2, 2))]).map(np.ravel)
        2-element Batch of ndarray:
         [1.0, 1.0, 1.0, 1.0]
         [0.0, 0.0, 0.0, 0.0]
        """
        cls = type(self)
        raw, inner = _stack(f"{cls.__name__}.map", [f(item) for item in self], cls.__name__)
        return cls._wrap(_read_only(raw), inner)

    def __repr__(self) -> str:
        head = f"{len(self)}-element {_describe(type(self), self._inner)}"
        if len(self) == 0:
            return head
        half = REPR_ITEMS // 2
        if len(self) <= REPR_ITEMS:
            shown = [_one_line(self._raw[i]) for i in range(len(self))]
        else:
            shown = ([_one_line(self._raw[i]) for i in range(half)] + ["..."]
                     + [_one_line(self._raw[i]) for i in range(len(self) - half, len(self))])
        return "\n ".join([head + ":"] + shown)

    def _kinds(self) -> tuple:
        return (type(self),) + self._inner


class Batch(_Stacked):
    """A batch of data points: behaves like the list of points, stored as their stack.

    ``Batch(items)`` stacks the items (arrays, nested lists of numbers, numbers, or Batch/Seq)
    with ``np.stack``, so ``rawbatch(Batch(items)) == np.stack(items)``; items of different
    shapes raise a `ShapeError` naming the first mismatching item. ``Batch.from_raw(array,
    inner=...)`` wraps an already stacked array without copying.

    >>> xs = Batch([[1, 2, 3], [4, 5, 6]])
    >>> xs
    2-element Batch of ndarray:
     [1, 2, 3]
     [4, 5, 6]
    >>> xs == [[1, 2, 3], [4, 5, 6]]
    True
    >>> len(xs), xs[0]
    (2, array([1, 2, 3]))
    >>> rawbatch(xs)
    array([[1, 2, 3],
           [4, 5, 6]])

    Batches nest with `Seq`: a Batch of Seqs of vectors is one ``(batch, time, features)``
    array.

    >>> bs = Batch([Seq([[1, 2, 3], [4, 5, 6]]), Seq([[7, 8, 9], [10, 11, 12]])])
    >>> bs
    2-element Batch of Seq of ndarray:
     [[1, 2, 3], [4, 5, 6]]
     [[7, 8, 9], [10, 11, 12]]
    >>> rawbatch(bs).shape, int(rawbatch(bs)[1, 1, 0])
    ((2, 2, 3), 10)
    >>> bs[1]
    2-element Seq of ndarray:
     [7, 8, 9]
     [10, 11, 12]
    """

    __slots__ = ()


class Seq(_Stacked):
    """A sequence of steps (in time, along a string, ...): a `Batch` with another meaning.

    It has the same behaviour and construction as `Batch`; the two nest.
    One-hot DNA (columns A, T, C, G):

    >>> x1 = Seq([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    >>> x2 = Seq([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]])
    >>> rawbatch(x1)
    array([[0, 1, 0, 0],
           [1, 0, 0, 0],
           [0, 0, 0, 1]])
    >>> xs = Batch([x1, x2])
    >>> xs
    2-element Batch of Seq of ndarray:
     [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
     [[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    >>> rawbatch(xs).shape
    (2, 3, 4)
    """

    __slots__ = ()


def _stack(name: str, items, cls_name: str | None = None):
    """``(stacked array, inner kinds)`` of `items`, checking they are numbers of one shape
    and one nesting; errors are prefixed with `name`."""
    cls_name = cls_name or name
    if isinstance(items, _Stacked):       # the items of a Batch/Seq are one level down
        return items._raw, items._inner
    if isinstance(items, np.ndarray):
        if items.ndim == 0:
            raise FluxTypeError(NOT_A_SEQUENCE.format(name=name, what="a 0-d array"))
        if items.dtype.kind not in NUMERIC_KINDS:
            raise FluxTypeError(f"{name}: expected an array of numbers, got dtype {items.dtype}")
        return items.copy(), ()
    if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
        raise FluxTypeError(NOT_A_SEQUENCE.format(name=name, what=_what(items)))
    items = list(items)
    if not items:
        raise FluxValueError(EMPTY.format(name=name, cls=cls_name))
    arrays, kinds = [], []
    for i, item in enumerate(items):
        if isinstance(item, _Stacked):
            array, kind = item._raw, item._kinds()
        else:
            try:
                array = _asarray(item)
            except ValueError:
                raise ShapeError(RAGGED_ITEM.format(name=name, i=i)) from None
            kind = ()
        if array.dtype.kind not in NUMERIC_KINDS:
            raise FluxTypeError(NOT_NUMBERS.format(name=name, i=i, what=_what(item)))
        if i > 0 and kind != kinds[0]:
            raise FluxTypeError(MISMATCHED_KINDS.format(
                name=name, i=i, kind=_a(_describe_kinds(kind)),
                first=_a(_describe_kinds(kinds[0]))))
        if i > 0 and array.shape != arrays[0].shape:
            raise ShapeError(MISMATCHED_SHAPES.format(name=name, i=i, shape=array.shape,
                                                      first=arrays[0].shape))
        arrays.append(array)
        kinds.append(kind)
    return np.stack(arrays), kinds[0]   # (len(items), *item_shape)


def _checked_raw(name: str, array: np.ndarray, kinds: tuple) -> np.ndarray:
    """`array`, checked to be numbers with an axis for each of the nesting levels `kinds`."""
    if array.ndim < len(kinds):
        raise ShapeError(RAW_TOO_LOW.format(name=name, kind=_a(_describe_kinds(kinds)),
                                            need=len(kinds), shape=array.shape))
    if array.dtype.kind not in NUMERIC_KINDS:
        raise FluxTypeError(f"{name}: expected an array of numbers, got dtype {array.dtype}")
    return array


def _read_only(array: np.ndarray) -> np.ndarray:
    """A non-writeable view of `array` (the caller's array itself stays writeable)."""
    view = array.view()
    view.flags.writeable = False
    return view


def _as_inner(inner) -> tuple:
    if inner is None:
        return ()
    if isinstance(inner, type):
        inner = (inner,)
    inner = tuple(inner)
    for kind in inner:
        if not (isinstance(kind, type) and issubclass(kind, _Stacked)):
            raise FluxTypeError(f"from_raw: inner must be Batch, Seq or a tuple of them, "
                                f"got {kind!r}")
    return inner


def _describe(cls, inner) -> str:
    return _describe_kinds((cls,) + tuple(inner))


def _describe_kinds(kinds) -> str:
    return " of ".join([kind.__name__ for kind in kinds] + ["ndarray"])


def _a(description: str) -> str:
    vowel_sound = description[0] in "aeiou" or description.startswith("nd")   # an ndarray
    return ("an " if vowel_sound else "a ") + description


def _what(x) -> str:
    text = repr(x)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"a {type(x).__name__} ({text})"


def _one_line(array: np.ndarray) -> str:
    """An item's values on one line, floats to 6 significant digits: ``[[1, 2], [3, 4]]``,
    ``[0.5, 1.0]``."""
    text = np.array2string(np.asarray(array), separator=", ",
                           formatter={"float_kind": _float_text})
    text = " ".join(text.split())
    return text.replace("[ ", "[").replace(" ,", ",").replace(" ]", "]")   # no column padding


def _float_text(v) -> str:
    text = f"{v:.6g}"
    return text if any(c in text for c in ".ein") else text + ".0"   # 1.0, not 1


def _array_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool(np.all(a == b))


_RAGGED_WARNING = getattr(getattr(np, "exceptions", np), "VisibleDeprecationWarning", Warning)


def _asarray(value) -> np.ndarray:
    """`np.asarray`, raising ValueError for ragged nested lists on every NumPy version (1.23
    only warns and makes an object array)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", _RAGGED_WARNING)
        try:
            return np.asarray(value)
        except _RAGGED_WARNING as warning:
            raise ValueError(str(warning)) from None


def _item_equal(item, value) -> bool:
    """Whether one item (an ndarray, or a Batch/Seq) equals `value` (nested lists, arrays,
    numbers, or Batch/Seq of the same nesting)."""
    if isinstance(item, _Stacked):
        equal = item.__eq__(value)
        return equal is True
    if isinstance(value, _Stacked):
        return False
    try:
        value = _asarray(value)
    except ValueError:                   # ragged nested lists
        return False
    if value.dtype.kind not in NUMERIC_KINDS:
        return False
    return _array_equal(item, value)


def rawbatch(x) -> np.ndarray:
    """The one array behind a `Batch` or `Seq` (read-only; items along the first axis); a
    plain array is returned as it is, other values go through ``np.asarray``.

    >>> rawbatch(Batch([[1, 2], [3, 4]]))
    array([[1, 2],
           [3, 4]])
    """
    if isinstance(x, _Stacked):
        return x._raw
    return np.asarray(x)
