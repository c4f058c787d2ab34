"""`@net`: models as functions with parameters, traced into graphs, and model calls.

A model is an object whose type was decorated with `@net` (or a function wrapped by `net`).
Calling it while a trace is active inlines its forward function into the trace, under a model
frame (type name and attribute path) so errors and `shapes` can point at it. Calling it on
concrete arrays traces it once per input signature and runs the graph on the built-in NumPy
executor, so a model's direct call and every backend run the very same graph.
"""
from __future__ import annotations

import inspect
import numbers
import sys

import numpy as np

from flux.errors import FluxError, FluxTypeError
from flux.ir.recording import CallEvent
from flux.ir.source import ModelCall, frames_from_traceback, user_facing
from flux.ir.trace import current_trace
from flux.model.param import Param, param, structure_version
from flux.model.state import State, StateField, check_unrolled
from flux.model.walk import is_model

_eager = None   # model -> callable on arrays: set by flux.backends (see set_eager_runner)


def set_eager_runner(runner) -> None:
    """How a model called on arrays runs: ``runner(model)`` returns a callable (the model's
    NumPy-compiled twin). flux.backends sets it when it is imported; it is the one place a
    lower layer calls up into a higher one, and flux's ``__init__`` always imports both."""
    global _eager
    _eager = runner

__all__ = ["net", "call_model", "FunctionModel", "set_eager_runner"]

# -- calling a model ----------------------------------------------------------------------------


def _run_eager(model, args):
    """`model` called on arrays outside any trace: its NumPy-compiled twin runs."""
    try:
        return _eager(model)(*args)
    except Exception as error:
        raise user_facing(error) from error.__cause__


def call_model(model, forward, args, kwargs, name: str):
    """Run `forward` (the model's bound forward function): inlined into the active trace under
    a model frame, or, outside any trace, compiled and run on NumPy.

    `forward` is called directly from this frame: `capture` relies on that to find the line
    the forward function is on.
    """
    trace = current_trace()
    if trace is None:
        if kwargs:
            raise user_facing(FluxTypeError(f"{name} takes its inputs positionally; keyword "
                                            f"arguments {sorted(kwargs)} cannot be traced"))
        return _run_eager(model, args)
    call = ModelCall(name, trace.paths.get(id(model), ""), sys._getframe())
    trace.calls.append(call)
    if trace.log is not None:
        return _logged(trace, call, model, forward, args, kwargs)
    try:
        return forward(*args, **kwargs)
    except Exception as error:
        _note_frames(error, trace)
        raise
    finally:
        trace.calls.pop()


def _note_frames(error: Exception, trace) -> None:
    """An exception of the user's own (not a FluxError) raised while tracing keeps its type;
    it gets the model frames as a note (and `.trace`), once, where it is first seen."""
    if isinstance(error, FluxError) or hasattr(error, "__flux_trace__"):
        return
    frames = frames_from_traceback(trace.calls, error.__traceback__)
    error.__flux_trace__ = list(frames)
    if hasattr(error, "add_note"):
        error.add_note("while tracing:\n" + "\n".join(f"  {frame}" for frame in frames))


def _logged(trace, call, model, forward, args, kwargs):
    """`call_model` while a trace records its calls (for `flux.shapes` and `flux.summary`)."""
    event = CallEvent(model, call, len(trace.calls), args, len(trace.eqns))
    trace.log.events.append(event)
    call.wrapper = sys._getframe()   # forward is called from here (see call_model)
    try:
        event.result = forward(*args, **kwargs)
        return event.result
    finally:
        event.end = len(trace.eqns)
        trace.calls.pop()


# -- @net ---------------------------------------------------------------------------------------


def net(obj):
    """Make a model: a class with fields and a forward `__call__`, or a function.

    Class form: annotated fields become the model's fields; unless the class defines its own
    ``__init__``, a field-wise constructor is generated in which arrays become Params and
    anything else (sub-models, numbers, functions) is kept as given. Function and anonymous
    forms: ``@net def f(x): ...`` and ``net(lambda W, b, x: ...)`` make parameterless models.

    >>> import numpy as np
    >>> @net
    ... class Scale:
    ...     s: Param
    ...     def __call__(self, x):
    ...         return x * self.s
    >>> Scale(np.array([2.0]))(np.array([1.0, 3.0]))
    array([2., 6.], dtype=float32)
    """
    if inspect.isclass(obj):
        return _net_class(obj)
    if callable(obj):
        return FunctionModel(obj)
    raise FluxTypeError(f"@net applies to a class or a function, found {type(obj).__name__}")


def _net_class(cls):
    forward = cls.__dict__.get("__call__") or getattr(cls, "__call__", None)  # noqa: B004
    if forward is None or forward is object.__call__:
        raise FluxTypeError(f"@net class {cls.__name__} needs a forward function: define "
                        f"`def __call__(self, x): ...`")
    fields, states, param_fields = [], [], []
    for klass in reversed(cls.__mro__):
        for name, annotation in getattr(klass, "__annotations__", {}).items():
            if not name.startswith("_") and name not in fields:
                fields.append(name)
                if annotation is State or annotation == "State" or annotation == "flux.State":
                    states.append(name)
                if annotation is Param or annotation in ("Param", "flux.Param"):
                    param_fields.append(name)
    cls.__flux_model__ = True
    cls.__flux_fields__ = tuple(fields)
    cls.__flux_states__ = tuple(states)
    cls.__flux_param_fields__ = tuple(param_fields)
    cls.__flux_forward__ = forward
    for name in states:
        default = cls.__dict__.get(name)
        setattr(cls, name, StateField(name))
        if default is not None:
            cls.__flux_state_defaults__ = {**getattr(cls, "__flux_state_defaults__", {}),
                                           name: default}
    if "__init__" not in cls.__dict__:
        cls.__init__ = _fieldwise_init(cls, fields)
    if "__repr__" not in cls.__dict__:
        cls.__repr__ = _model_repr
    cls.__setattr__ = _model_setattr
    name = cls.__name__

    if states:
        def __call__(self, *args, **kwargs):
            check_unrolled(self)    # a recurrent model runs only inside an unrolled one
            return call_model(self, forward.__get__(self, cls), args, kwargs, name)
    else:
        def __call__(self, *args, **kwargs):
            if not kwargs and current_trace() is None:    # the common case, without the
                return _run_eager(self, args)              # bound forward call_model needs
            return call_model(self, forward.__get__(self, cls), args, kwargs, name)

    __call__.__doc__ = forward.__doc__
    __call__.__wrapped__ = forward
    cls.__call__ = __call__
    return cls


SIZE_FOR_PARAM = (
    "{cls}: the field {field} is a Param, but the generated field-wise constructor was given "
    "the number {value}; it takes the arrays themselves ({cls}(W_array, b_array, ...)). To "
    "build a {cls} from sizes, write an __init__ that makes the Params (as flux.Affine does: "
    "self.{field} = flux.param(flux.initn(...)))")


def _fieldwise_init(cls, fields):
    defaults = {f: cls.__dict__[f] for f in fields if f in cls.__dict__}
    defaults.update(getattr(cls, "__flux_state_defaults__", {}))
    states = set(cls.__flux_states__)
    param_fields = set(cls.__flux_param_fields__)

    def __init__(self, *args, **kwargs):
        if len(args) > len(fields):
            raise FluxTypeError(f"{cls.__name__} takes at most {len(fields)} fields "
                            f"({', '.join(fields)}), given {len(args)}")
        values = dict(zip(fields, args))
        for key, value in kwargs.items():
            if key not in fields:
                raise FluxTypeError(f"{cls.__name__} has no field {key!r}; its fields are "
                                f"{', '.join(fields)}")
            if key in values:
                raise FluxTypeError(f"{cls.__name__} got field {key!r} twice")
            values[key] = value
        for f in fields:
            if f not in values:
                if f not in defaults:
                    raise FluxTypeError(f"{cls.__name__} is missing field {f!r}")
                values[f] = defaults[f]
            value = values[f]
            if f in param_fields and isinstance(value, numbers.Integral):
                raise FluxTypeError(SIZE_FOR_PARAM.format(cls=cls.__name__, field=f,
                                                          value=value))
            if f in states:   # an initial state: kept as given (a Param makes it trainable)
                setattr(self, f, np.asarray(value) if isinstance(value, list) else value)
            else:
                setattr(self, f, _field_value(value))

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _field_value(value):
    """Arrays given to a generated constructor become Params; all else is kept as given."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return param(value)
    return value


def _model_setattr(self, name, value):
    object.__setattr__(self, name, value)
    if not name.startswith("_") and name not in type(self).__flux_states__:
        structure_version.bump()   # (State fields bump it themselves, except in a time step)


def _model_repr(self) -> str:
    parts = [_short_repr(getattr(self, f, None)) for f in type(self).__flux_fields__]
    return f"{type(self).__name__}({', '.join(parts)})"


def _short_repr(value) -> str:
    """A field's repr; functions (Python, builtin, NumPy ufuncs and dispatchers) by name."""
    if not is_model(value) and not isinstance(value, type) and callable(value) \
            and isinstance(getattr(value, "__name__", None), str) and not isinstance(value, Param):
        return value.__name__
    return repr(value)


class FunctionModel:
    """A parameterless model made from a function by `net` (``@net def f(x): ...``)."""

    __flux_model__ = True
    __flux_fields__ = ()

    def __init__(self, fn):
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "__name__", getattr(fn, "__name__", "function"))
        object.__setattr__(self, "__doc__", getattr(fn, "__doc__", None))
        name = self.__name__
        object.__setattr__(self, "_name", "net" if name == "<lambda>" else name)

    def __call__(self, *args, **kwargs):
        return call_model(self, self.fn, args, kwargs, self._name)

    def __repr__(self) -> str:
        return f"net({self.__name__})"
