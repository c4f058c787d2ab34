"""Trainable parameters (`Param`), their initialisation (`initn`, `seed`), the structure version."""
from __future__ import annotations

import numpy as np

from flux.errors import FluxTypeError, ShapeError
from flux.ops.elementwise import lift
from flux.ops.methods import NUMERIC_METHODS

__all__ = ["Param", "param", "initn", "seed"]

DEFAULT_DTYPE = np.dtype(np.float32)


class structure_version:
    """A counter bumped whenever a model's structure changes (a field is reassigned, a Param
    changes shape), so cached traces know to re-trace. Param VALUES are not structure."""

    value = 0

    @classmethod
    def bump(cls) -> None:
        cls.value += 1


def _as_param_array(value, dtype=None) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise FluxTypeError(f"a Param holds a numeric array; found {array.dtype} "
                        f"({type(value).__name__})")
    if dtype is None:
        keep = array.dtype.kind == "f" and array.dtype != np.float64
        dtype = array.dtype if keep else DEFAULT_DTYPE
    return np.array(array, dtype=dtype, copy=True)


class Param:
    """A trainable array with a gradient buffer.

    ``p.value`` is the array (assigning to it, or writing into it in place, changes the
    parameter everywhere it is used); ``p.grad`` accumulates gradients (zeros until some
    arrive). A Param acts like its array in models and in NumPy calls.

    >>> p = Param(np.ones((2, 3)))
    >>> p.shape, p.dtype, float(p.grad.sum())
    ((2, 3), dtype('float32'), 0.0)

    Backends that keep parameters on their side (TensorFlow variables, MXNet arrays) use three
    more members: `version` changes whenever the value may have changed (so an unchanged
    Param need not be copied again), `peek()` reads the array without lending it out, and
    `defer(source)` records that the newest value now lives in the backend; it is fetched
    (``source.fetch(p)``) the next time anyone reads the Param. So after training on a backend
    the model's Params hold the new values as soon as they are looked at, and a training loop
    that does not look pays no copy per step.

    >>> p.version == p.version, p.peek() is p.value, p.version > 0
    (True, True, True)
    """

    __flux_param__ = True
    __array_priority__ = 1000
    __hash__ = object.__hash__

    def __init__(self, value, dtype=None):
        self._array = _as_param_array(value, dtype)
        self._grad = None
        self._version = 0
        self._source = None

    # -- the value, and who holds its newest copy ----------------------------------------------

    @property
    def _value(self) -> np.ndarray:
        """The current array (fetched first if a backend holds a newer one). flux's own code
        reads through this; code that writes into it calls `_changed()` afterwards."""
        if self._source is not None:
            self._fetch()
        return self._array

    def _fetch(self) -> None:
        source, self._source = self._source, None
        new = np.asarray(source.fetch(self))
        if new.shape != self._array.shape:
            new = new.reshape(self._array.shape)
        np.copyto(self._array, new, casting="unsafe")

    def _changed(self) -> None:
        self._version += 1

    @property
    def version(self) -> int:
        """A number that changes whenever the value may have changed: assigned, written by an
        optimiser or a loader, handed out by `value` (it may be written in place), deferred."""
        return self._version

    def peek(self) -> np.ndarray:
        """The current array, for reading only (unlike `value`, this does not count as handing
        it out, so `version` stays the same). Writing into it is not seen by backends."""
        return self._value

    def defer(self, source) -> int:
        """The newest value now lives in `source` (a backend's copy): the next read of this
        Param calls ``source.fetch(self)`` (an array of the Param's shape) and keeps the
        result. Returns the new `version`, which the backend records as its own."""
        self._source = source
        self._version += 1
        return self._version

    def __getstate__(self) -> dict:
        """For copy and pickle: the current value, without the backend that holds it."""
        state = dict(self.__dict__)
        state["_array"], state["_source"] = self._value, None    # fetched if deferred
        return state

    @property
    def value(self) -> np.ndarray:
        """The array. Assigning a new one keeps the Param's dtype (the new array is converted
        to it, as PyTorch's ``param.data.copy_()`` does): a model computes in its Params'
        dtype, which its compiled graphs depend on; change it with `cast` (or
        ``flux.cast(model, dtype)``)."""
        array = self._value
        self._version += 1          # handed out: the caller may write into it in place
        return array

    def cast(self, dtype) -> "Param":
        """Give the Param the floating `dtype` (its value converted; its gradient cleared);
        models compute in their Params' dtype, so their graphs are traced again. Returns it.

        >>> p = Param(np.ones(2)); p.cast(np.float64).dtype
        dtype('float64')
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise FluxTypeError(f"Param.cast takes a floating dtype, found {dtype}")
        if dtype != self._array.dtype:
            self._array = self._value.astype(dtype)
            self._source, self._grad = None, None
            self._version += 1
            structure_version.bump()
        return self

    @value.setter
    def value(self, new) -> None:
        new = np.asarray(new)
        dtype = self._array.dtype
        if new.shape != self._array.shape:
            structure_version.bump()
            self._grad = None
        self._source = None
        self._array = _as_param_array(new, dtype)
        self._version += 1

    @property
    def grad(self) -> np.ndarray:
        if self._grad is None:
            self._grad = np.zeros_like(self._array)
        return self._grad

    @grad.setter
    def grad(self, new) -> None:
        new = np.array(new, dtype=self._array.dtype)   # a copy: optimisers may consume it
        if new.shape != self._array.shape:
            raise ShapeError(f"a gradient for a Param of shape {self.shape} must have that "
                            f"shape, found {new.shape}")
        self._grad = new

    def zero_grad(self) -> None:
        self._grad = None

    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)

    def __len__(self) -> int:
        return len(self._array)

    def __array__(self, dtype=None, copy=None):
        """The array itself (``np.asarray(p)``: writing into it changes the Param), or a copy
        when NumPy asks for one (``np.array(p)``, ``copy=True``: a snapshot) or for another
        dtype."""
        if dtype is not None and np.dtype(dtype) != self._array.dtype:
            return self._value.astype(dtype)
        if copy:
            return self._value.copy()
        return self.value

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(lift(x) for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        return func(*(_lift_nested(x) for x in args), **kwargs)

    def __repr__(self) -> str:
        return f"Param({self._array.dtype} {self._array.shape})"


def _lift_nested(value):
    """`lift`, also inside the lists and tuples NumPy functions take (np.concatenate([p, q]))."""
    if isinstance(value, (list, tuple)):
        return type(value)(lift(v) for v in value)
    return lift(value)


def _delegate(name, method):
    if isinstance(method, property):
        return property(lambda self: method.fget(lift(self)))

    def call(self, *args, **kwargs):
        return method(lift(self), *args, **kwargs)
    call.__name__ = name
    return call


for _name, _method in NUMERIC_METHODS.items():
    if _name not in ("__array_ufunc__", "__array_function__", "__eq__", "__ne__"):
        setattr(Param, _name, _delegate(_name, _method))


def param(x, dtype=None) -> Param:
    """Make a `Param` from an array-like (float32 unless another float dtype is given or held).

    >>> param([1, 2]).value
    array([1., 2.], dtype=float32)
    """
    return x if isinstance(x, Param) else Param(x, dtype)


_rng = np.random.default_rng()


def seed(n: int) -> None:
    """Make initialisation reproducible: `initn` draws from a generator seeded with `n`."""
    global _rng
    _rng = np.random.default_rng(n)


class Buffer:
    """A non-trainable array a layer keeps (BatchNorm's running statistics): not a Param, so
    `flux.params`, gradients and optimisers skip it, but saved and loaded with the Params by
    `flux.save`/`flux.load` and checkpoints (`flux.model.walk.buffers` lists them). Compiled
    models read it at every call and the training steps that update it write it back.

    >>> Buffer(np.zeros(3)).shape
    (3,)
    """

    __slots__ = ("value",)

    def __init__(self, value, dtype=None):
        self.value = np.array(value, dtype=dtype)

    shape = property(lambda self: self.value.shape)
    dtype = property(lambda self: self.value.dtype)
    size = property(lambda self: self.value.size)

    def peek(self) -> np.ndarray:
        return self.value

    def __array__(self, dtype=None, copy=None):
        return np.array(self.value, dtype=dtype, copy=True if copy is None else copy)

    def __repr__(self) -> str:
        return f"Buffer({self.value!r})"


def rng() -> np.random.Generator:
    """The generator `initn` draws from (reseeded by `seed`)."""
    return _rng


def initn(*shape) -> np.ndarray:
    """Standard normal samples divided by 100, float32: the seed's default initialisation.

    >>> seed(0); initn(2, 3).shape
    (2, 3)
    """
    return (_rng.standard_normal(shape, dtype=np.float32) / np.float32(100))
