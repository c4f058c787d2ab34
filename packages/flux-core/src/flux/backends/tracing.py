"""Tracing a model for a backend: from a model and its (example) inputs to a shaped `Graph`.

`trace` traces a model on abstract inputs; `abstract_inputs` turns what users pass (arrays,
shapes as tuples, Batch/Seq) into those inputs, as `flux.infer`, `flux.shapes` and backends'
native entry points (`flux_mxnet.symbol`, `flux_tf.keras_layer`) all need.
"""
from __future__ import annotations

import inspect
import numbers
import warnings

import numpy as np

from flux.data.batching import unwrap
from flux.errors import FluxTypeError
from flux.ir.graph import Aval, Graph
from flux.ir.pytree import Tree, flatten, flatten_args, unflatten
from flux.ir.trace import Trace, global_draws
from flux.model.net import FunctionModel
from flux.model.walk import is_model, model_paths, params
from flux.transforms.carry import CarriedState

__all__ = ["trace", "abstract_inputs", "model_dtype"]


def trace(model, avals, in_tree: Tree, root=None, carry_source=None,
          training: bool = False, loops: bool | None = None) -> Graph:
    """Trace `model` called on abstract inputs of the given avals; returns the Graph.

    Model frames and parameter names use attribute paths from `root` (default: `model`);
    stateful unrolled models read their carried hidden state from `carry_source` (a Compiled);
    `training` is the mode layers in auto mode take (`flux.model.modes`). Unrolled models
    become loops (`scan`) when `loops` is True; None means: if the backend of `carry_source`
    takes loops (``Backend.loops``; True without one), and ``FLUX_LOOPS`` does not say
    ``unroll``.
    """
    if loops is None:
        backend = getattr(carry_source, "backend", None)
        loops = getattr(backend, "loops", True) if backend is not None else True
    drawn = global_draws()
    graph, _ = _traced(model, avals, in_tree, root, carry_source, training, loops=loops)
    if global_draws() != drawn:
        where = _first_draw(model, avals, in_tree, root, carry_source, training, loops)
        warnings.warn(FROZEN_RANDOMNESS.format(model=_name(root or model), where=where),
                      RuntimeWarning, stacklevel=2)
    return graph


def _traced(model, avals, in_tree, root, carry_source, training, watch_draws=None,
            loops=True):
    with Trace(model_paths(model if root is None else root)) as t:
        t.training = training
        t.loops = t.loops and loops
        t.watch_draws = watch_draws
        if carry_source is not None:
            t.carry = CarriedState(t, carry_source)
        tracers = [t.new_input(aval) for aval in avals]
        out = model(*unflatten(in_tree, tracers))
        leaves, out_tree = flatten(out)
        return t.graph([x.variable for x in tracers], leaves, in_tree, out_tree), t


FROZEN_RANDOMNESS = (
    "{model} drew random numbers from NumPy's global generator (np.random.rand, "
    "np.random.normal, ...) while it was traced{where}: they are drawn once, when the graph "
    "is made, and every call then uses the same values (a frozen mask, frozen noise). Draw "
    "them outside the model and pass them in as inputs")


def _first_draw(model, avals, in_tree, root, carry_source, training, loops) -> str:
    """" (at file:line)" of the first operation after a draw, found by tracing again while
    watching the generator (its state is put back after: the user's draws are unchanged)."""
    saved = np.random.get_state()
    try:
        _, t = _traced(model, avals, in_tree, root, carry_source, training,
                       watch_draws=global_draws(), loops=loops)
    except Exception:       # the first trace succeeded; without a line the warning still helps
        return ""
    finally:
        np.random.set_state(saved)
    source = t.first_draw
    if source is None:
        return ""
    where = source.frames[0] if source.frames else f"at {source.file}:{source.line}"
    return f" ({where}, the first operation after the draw)"


def _name(model) -> str:
    return model._name if isinstance(model, FunctionModel) else type(model).__name__


def model_dtype(model):
    """The one floating dtype of the model's Params (inputs are cast to it), else None."""
    dtypes = {p.dtype for p in params(model).values() if p.dtype.kind == "f"}
    return dtypes.pop() if len(dtypes) == 1 else None


# -- the inputs: shapes or arrays ---------------------------------------------------------------


def _check_model(model, what: str):
    if getattr(model, "__flux_compiled__", False):
        return model.model
    if is_model(model):
        return model
    raise FluxTypeError(f"{what} takes a flux model (an @net class instance, a layer, a Chain, "
                        f"an unrolled or compiled model), found {type(model).__name__}")


def _as_aval(value, dtype, i: int) -> Aval:
    array = value if isinstance(value, np.ndarray) else None
    if array is None and hasattr(value, "shape") and hasattr(value, "dtype"):
        array = value
    if array is None and isinstance(value, list):
        array = np.asarray(value)
    if array is None or np.dtype(array.dtype).kind not in "biuf":
        raise FluxTypeError(f"input {i}: expected a shape (a tuple of ints such as (5, 10)) or "
                            f"a numeric array, found {type(value).__name__}: {value!r:.60}")
    dt = dtype if dtype is not None and np.dtype(array.dtype).kind == "f" else array.dtype
    return Aval(np.shape(array), dt)


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value)


def _stand_in(value, dtype):
    """A shape becomes a zero-cost array of that shape (a broadcast 0-d array); tuples of
    shapes are handled inside; anything else is left for `_as_aval` to judge."""
    if _is_shape(value):
        if any(d < 0 for d in value):
            raise FluxTypeError(f"a shape has sizes ≥ 0, found {value}")
        return np.broadcast_to(np.zeros((), dtype or np.float32), value)
    if isinstance(value, (tuple, list)) and value and all(
            _is_shape(v) or isinstance(v, (tuple, list, np.ndarray)) for v in value) \
            and any(_is_shape(v) for v in value):
        return type(value)(_stand_in(v, dtype) for v in value)
    return value


def abstract_inputs(model, args, what: str):
    """``(model, avals, tree)``: the model (unwrapped from a compiled one), the flat avals of
    `args` (shapes as tuples, or arrays; Batch/Seq and nested tuples too) and their tree, with
    floating inputs in the model's dtype (integers, such as indices, keep theirs). `what`
    names the caller in errors."""
    model = _check_model(model, what)
    _check_arity(model, args, what)
    dtype = model_dtype(model)
    args, _ = unwrap(tuple(_stand_in(a, dtype) for a in args))
    leaves, tree = flatten_args(args)
    return model, [_as_aval(v, dtype, i) for i, v in enumerate(leaves)], tree


def _check_arity(model, args, what: str) -> None:
    forward = model.fn if isinstance(model, FunctionModel) else getattr(
        type(model), "__flux_forward__", None)
    if forward is None:
        return
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):
        return
    positional = list(signature.parameters.values())
    if not isinstance(model, FunctionModel):
        positional = positional[1:]   # self
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in positional):
        return
    needed = [p for p in positional if p.default is p.empty]
    if not len(needed) <= len(args) <= len(positional):
        count = (f"{len(needed)}" if len(needed) == len(positional)
                 else f"{len(needed)} to {len(positional)}")
        name = model._name if isinstance(model, FunctionModel) else type(model).__name__
        hint = (f": pass example inputs (arrays) or their shapes, e.g. flux.{what}(model, "
                f"(32, 10)) for a batch of 32 points of 10 features" if not args else "")
        raise FluxTypeError(f"{what}: {name} "
                            f"takes {count} input{'s' if len(positional) != 1 else ''} "
                            f"({', '.join(p.name for p in positional)}), given {len(args)}"
                            f"{hint}")
