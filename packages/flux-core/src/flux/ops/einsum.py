"""``np.einsum`` on traced values, composed from existing primitives.

The subscripts are parsed as NumPy does (implicit and explicit ``->`` output, ``...``
ellipsis, size-1 axes broadcast, and the interleaved form ``einsum(a, [0, 1], b, [1, 2])``).
Each operand is first brought to distinct labels: a label repeated within one operand (a
diagonal, ``'ii->i'``) is read with a constant integer index, a size-1 axis broadcast against
a longer one is dropped, and a label found in no other operand nor the output is summed
away. The operands are then contracted left to right, two at a time: batch labels (in both
and kept), contracted labels (in both, not kept) and free labels (in one only) become a
transpose, a reshape to ``(batch, M, K) @ (batch, K, N)``, one matmul and a reshape back (an
elementwise product when nothing is contracted). A final transpose orders the output.
"""
from __future__ import annotations

import string

import numpy as np

from flux.errors import FluxValueError, ShapeError
from flux.ir import primitives as P
from flux.ops.elementwise import multiply

__all__ = ["LETTERS", "contract", "subscripts_of"]

LETTERS = string.ascii_letters
"""The labels of subscripts (a-z, A-Z; sublists' ints 0-51 name them in this order)."""
_ELLIPSIS_BASE = 0x2460       # labels standing for the axes '...' covers (never typed)


def contract(subscripts: str, values: list):
    """The einsum `subscripts` over `values` (Tracers or arrays of one dtype)."""
    if not values:
        raise FluxValueError("np.einsum: no operands were given")
    labels, output = _parse(subscripts, [v.shape for v in values])
    sizes = _sizes(labels, [v.shape for v in values], subscripts)
    terms = [_distinct(v, ls, sizes) for v, ls in zip(values, labels)]
    terms = [_sum_lonely(terms, k, output) for k in range(len(terms))]
    value, have = terms[0]
    for k in range(1, len(terms)):
        later = set(output).union(*(ls for _, ls in terms[k + 1:]))
        value, have = _pair(value, have, *terms[k], later, sizes)
    value, have = _sum_away(value, have, set(output))
    return _transpose(value, [have.index(label) for label in output])


# -- parsing ------------------------------------------------------------------------------------


def subscripts_of(operands):
    """(subscripts string, operands) from either calling form of np.einsum."""
    if not operands:
        raise FluxValueError("np.einsum needs subscripts and operands")
    if isinstance(operands[0], str):
        return operands[0], list(operands[1:])
    values, subs = list(operands[0::2]), list(operands[1::2])
    out = None
    if len(values) > len(subs):           # a trailing output sublist
        out = values.pop()
    if len(values) != len(subs):
        raise FluxValueError("np.einsum: the interleaved form takes operand, sublist pairs "
                             "(and optionally an output sublist)")
    text = ",".join(_sublist(s) for s in subs)
    if out is not None:
        text += "->" + _sublist(out)
    return text, values


def _sublist(sub) -> str:
    chars = []
    for s in sub:
        if s is Ellipsis:
            chars.append("...")
        elif isinstance(s, (int, np.integer)) and 0 <= int(s) < len(LETTERS):
            chars.append(LETTERS[int(s)])
        else:
            raise FluxValueError(f"np.einsum: a sublist holds ints in [0, 52) or Ellipsis, "
                                 f"found {s!r}")
    return "".join(chars)


def _letters(text: str, subscripts: str, where: str) -> list:
    """`text` (without '...') as labels, checking every character is a letter."""
    for c in text:
        if c not in LETTERS:
            raise FluxValueError(f"np.einsum: subscripts {subscripts!r}: {c!r} in {where} is "
                                 f"not a letter (labels are a-z and A-Z, with '...')")
    return list(text)


def _split_ellipsis(text: str, subscripts: str, where: str):
    if text.count("...") > 1 or "." in text.replace("...", ""):
        raise FluxValueError(f"np.einsum: subscripts {subscripts!r}: {where} may hold one "
                             f"'...' at most")
    if "..." not in text:
        return _letters(text, subscripts, where), None
    before, after = text.split("...")
    return _letters(before, subscripts, where), _letters(after, subscripts, where)


def _parse(subscripts: str, shapes: list):
    """Labels per operand (ellipsis axes as reserved labels) and the output labels."""
    text = subscripts.replace(" ", "")
    if text.count("->") > 1:
        raise FluxValueError(f"np.einsum: subscripts {subscripts!r} hold '->' more than once")
    lhs, arrow, rhs = text.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(shapes):
        raise FluxValueError(f"np.einsum: subscripts {subscripts!r} name {len(inputs)} "
                             f"operands, but {len(shapes)} were given")
    parts = [_split_ellipsis(s, subscripts, f"operand {k}") for k, s in enumerate(inputs)]
    widths = []
    for k, ((before, after), shape) in enumerate(zip(parts, shapes)):
        named = len(before) + (len(after) if after is not None else 0)
        if (after is None and named != len(shape)) or named > len(shape):
            raise ShapeError(f"np.einsum: operand {k} has shape {shape} ({len(shape)} axes), "
                             f"but its subscripts {inputs[k]!r} name {named}")
        widths.append(len(shape) - named if after is not None else 0)
    width = max(widths, default=0)
    ellipsis = [chr(_ELLIPSIS_BASE + i) for i in range(width)]
    labels = [before + (ellipsis[width - w:] + after if after is not None else [])
              for (before, after), w in zip(parts, widths)]
    if not arrow:
        counts = {}
        for ls in labels:
            for label in ls:
                counts[label] = counts.get(label, 0) + 1
        output = ellipsis + sorted(c for c, n in counts.items() if n == 1 and c in LETTERS)
        return labels, output
    before, after = _split_ellipsis(rhs, subscripts, "the output")
    if after is None and width:
        raise FluxValueError(f"np.einsum: subscripts {subscripts!r}: the operands' '...' "
                             f"cover {width} axes, so the output must hold '...' too")
    output = before + (ellipsis + after if after is not None else [])
    seen = set().union(*labels)
    for label in output:
        if output.count(label) > 1:
            raise FluxValueError(f"np.einsum: subscripts {subscripts!r}: the output holds "
                                 f"{label!r} more than once")
        if label not in seen:
            raise FluxValueError(f"np.einsum: subscripts {subscripts!r}: the output label "
                                 f"{label!r} is in no operand")
    return labels, output


def _sizes(labels, shapes, subscripts) -> dict:
    """The size of every label (size-1 axes broadcast against longer ones)."""
    sizes = {}
    for ls, shape in zip(labels, shapes):
        for label, n in zip(ls, shape):
            sizes[label] = max(sizes.get(label, 1), n)
    for k, (ls, shape) in enumerate(zip(labels, shapes)):
        for label, n in zip(ls, shape):
            if n not in (1, sizes[label]):
                name = repr(label) if label in LETTERS else "'...'"
                raise ShapeError(f"np.einsum({subscripts!r}): label {name} has size {n} in "
                                 f"operand {k} (shape {shape}) but {sizes[label]} elsewhere")
    return sizes


# -- contraction --------------------------------------------------------------------------------


def _distinct(value, labels: list, sizes: dict):
    """The operand with each label once: diagonals taken, broadcast size-1 axes dropped."""
    labels = list(labels)
    for label in dict.fromkeys(labels):
        at = [i for i, other in enumerate(labels) if other == label]
        if len(at) > 1:
            lengths = {value.shape[i] for i in at}
            if len(lengths) > 1:
                raise ShapeError(f"np.einsum: the repeated label {label!r} (a diagonal) spans "
                                 f"axes of different sizes {sorted(lengths)}")
            rest = [i for i in range(len(labels)) if i not in at]
            value = _transpose(value, at + rest)
            diagonal = np.arange(value.shape[0])
            value = P.getitem_p(value, index=(diagonal,) * len(at))
            labels = [label] + [labels[i] for i in rest]
    keep = [i for i, label in enumerate(labels) if not (value.shape[i] == 1
                                                        and sizes[label] != 1)]
    if len(keep) < len(labels):
        value = _reshape(value, tuple(value.shape[i] for i in keep))
        labels = [labels[i] for i in keep]
    return value, labels


def _sum_lonely(terms, k: int, output) -> tuple:
    """Operand k with the labels no other operand nor the output has summed away."""
    others = set(output).union(*(ls for j, (_, ls) in enumerate(terms) if j != k))
    return _sum_away(*terms[k], others)


def _sum_away(value, labels: list, kept: set):
    axes = tuple(i for i, label in enumerate(labels) if label not in kept)
    if not axes:
        return value, labels
    return (P.reduce_sum_p(value, axes=axes, keepdims=False),
            [label for label in labels if label in kept])


def _pair(a, la: list, b, lb: list, kept: set, sizes: dict):
    """a (labels la) and b (labels lb) contracted: the labels of `kept` survive."""
    a, la = _sum_away(a, la, kept | set(lb))
    b, lb = _sum_away(b, lb, kept | set(la))
    batch = [label for label in la if label in lb and label in kept]
    summed = [label for label in la if label in lb and label not in kept]
    free_a = [label for label in la if label not in lb]
    free_b = [label for label in lb if label not in la]

    def shape(ls):
        return tuple(sizes[label] for label in ls)

    def size(ls):
        return int(np.prod(shape(ls), dtype=np.int64))

    def arranged(value, have, order, target):
        value = _transpose(value, [have.index(label) for label in order])
        return _reshape(value, target)

    out = batch + free_a + free_b
    if not summed or np.dtype(a.dtype).kind not in "fc":
        # nothing contracted: an elementwise (outer) product; integers: a product summed
        # (exact, and integer matmuls are not on every backend)
        a = arranged(a, la, batch + free_a + summed,
                     shape(batch + free_a) + (1,) * len(free_b) + shape(summed))
        b = arranged(b, lb, batch + free_b + summed,
                     shape(batch) + (1,) * len(free_a) + shape(free_b + summed))
        return _sum_away(multiply(a, b), out + summed, set(out))
    lead = (size(batch),) if batch else ()
    a = arranged(a, la, batch + free_a + summed, lead + (size(free_a), size(summed)))
    b = arranged(b, lb, batch + summed + free_b, lead + (size(summed), size(free_b)))
    return _reshape(P.matmul_p(a, b), shape(out)), out


def _transpose(x, perm: list):
    perm = tuple(perm)
    return x if perm == tuple(range(len(perm))) else P.transpose_p(x, perm=perm)


def _reshape(x, shape: tuple):
    return x if tuple(x.shape) == tuple(shape) else P.reshape_p(x, shape=tuple(shape))
