"""Nested Python values (tuples, lists, dicts of arrays) flattened to leaf lists and rebuilt.

A model takes and returns such values (`pair((x1, x2))` gives a tuple); graphs see only the
flat list of leaves, and the tree structure (`Tree`) rebuilds the value around the results.
"""
from __future__ import annotations

import numbers
from typing import Any

LEAF = None


class Tree:
    """The structure of a nested value: a container kind and its children, or a leaf."""

    __slots__ = ("kind", "keys", "children", "_hash")

    def __init__(self, kind, keys=(), children=()):
        self.kind = kind
        self.keys = tuple(keys)
        self.children = tuple(children)
        self._hash = hash((kind, self.keys, self.children))

    def __eq__(self, other) -> bool:
        return (isinstance(other, Tree) and self.kind == other.kind and self.keys == other.keys
                and self.children == other.children)

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        if self.kind is LEAF:
            return "*"
        return f"{self.kind.__name__}({', '.join(map(repr, self.children))})"

    @property
    def num_leaves(self) -> int:
        if self.kind is LEAF:
            return 1
        return sum(child.num_leaves for child in self.children)


LEAF_TREE = Tree(LEAF)


def is_container(value) -> bool:
    """Tuples, lists and dicts whose items are not all plain numbers (those are array data)."""
    if isinstance(value, dict):
        return True
    if isinstance(value, (tuple, list)):
        return not _is_number_list(value)
    return False


def _is_number_list(value) -> bool:
    item = value
    while isinstance(item, (tuple, list)):
        if not item:
            return True
        item = item[0]
    return isinstance(item, numbers.Number)


def flatten(value) -> tuple[list, Tree]:
    leaves: list = []
    tree = _flatten(value, leaves)
    return leaves, tree


def flatten_args(args: tuple) -> tuple[list, Tree]:
    """`flatten` for a call's positional arguments: the argument tuple itself is always a
    container, even when its items are plain numbers or number lists (each is one input)."""
    leaves: list = []
    tree = Tree(tuple, (), [_flatten(a, leaves) for a in args])
    return leaves, tree


def _flatten(value, leaves: list) -> Tree:
    if isinstance(value, dict):
        keys = list(value)
        return Tree(dict, keys, [_flatten(value[k], leaves) for k in keys])
    if isinstance(value, (tuple, list)) and not _is_number_list(value):
        return Tree(type(value), (), [_flatten(v, leaves) for v in value])
    leaves.append(value)
    return LEAF_TREE


def unflatten(tree: Tree, leaves) -> Any:
    it = iter(leaves)
    return _unflatten(tree, it)


def _unflatten(tree: Tree, it) -> Any:
    if tree.kind is LEAF:
        return next(it)
    children = [_unflatten(child, it) for child in tree.children]
    if tree.kind is dict:
        return dict(zip(tree.keys, children))
    return tree.kind(children)
