"""Backends: the contract a backend implements and the machinery it shares, public for
backend authors (flux-tf, flux-mxnet, flux-cupy and third parties use nothing else).

- the contract: `Backend`, `hookimpl` (see `flux.hookspecs`), `Compiled` (a model compiled
  for a backend; subclass it to keep parameters or whole training steps on the backend's side)
  and `TrainingStep`;
- tracing: `trace` (a model on abstract inputs -> `flux.ir.Graph`), `abstract_inputs` (the
  avals of arrays or shapes as users pass them), `model_dtype`, `flatten_args`/`unflatten`;
  `vjp` (a graph's forward and gradients as one graph, as core's `flux.back` runs it);
  `merge_matmuls` (matmuls sharing an operand as one, for backends that gain from fewer,
  larger products); `lift_loops`/`lift_loop` (what a loop body computes without its carried
  values, moved before the loop); `sum_after_loops` (a loop's accumulated step sums, such as
  backpropagation through time's weight gradients, as one long product after the loop);
- mirrors: `ParamMirror` and `OptimiserMirror`, a backend's copies of Params and optimiser
  state, kept current by version, and `MirroredCompiled`, the `Compiled` of a backend that
  keeps them (training steps and updates run on the backend between sync and hand-back);
- errors: `backend_error`, `equation_error`, `op_name`/`equation_named` (a backend exception
  as a `flux.BackendError` at the user's line); `user_facing`;
- graphs for any batch size: `free_batch` (a `FreeBatch`: the graph with its batch axes
  marked, for MXNet's shape-generic Symbols and ONNX's dynamic batch) and `input_shape`;
- small helpers: `parse_device`, `flat_positions`, `is_basic_index`, `strided`,
  `affine_adds` (where a graph computes ``x @ W + b``, for backends that fuse it);
- data-parallel runs on one machine: `ProcessGroup` (start, wait for and stop a run's local
  processes together, as the backends' launchers do), `free_ports`, `exit_status`;
- the registry and the built-in NumPy backend (`NUMPY`).

This module is also callable: ``flux.backends()`` lists the installed backends' names.
"""
import sys
import types

from flux.backends.compiled import (Compiled, NonFiniteGradient, accumulate, all_finite,
                                    as_input_array)
from flux.backends.devices import Device, parse_device
from flux.backends.eager import compiled_of
from flux.backends.errors import (backend_error, equation_error, equation_named, first_line,
                                  op_name)
from flux.backends.free_batch import FreeBatch, free_batch
from flux.backends.indexing import flat_positions, is_basic_index, strided
from flux.backends.mirror import Mirrored, OptimiserMirror, ParamMirror
from flux.backends.mirrored import MirroredCompiled
from flux.backends.numpy import NUMPY
from flux.backends.patterns import affine_adds
from flux.backends.processes import ProcessGroup, exit_status, free_ports
from flux.backends.registry import (KNOWN_BACKENDS, REGISTRY, PluginError, PluginWarning,
                                    backends, compile, shorthand)
from flux.backends.tracing import abstract_inputs, model_dtype, trace
from flux.model.walk import input_shape
from flux.backends.training import TrainingStep
from flux.backends.contract import Backend, hookimpl
from flux.ir.pytree import flatten, flatten_args, unflatten
from flux.ir.source import user_facing
from flux.transforms.autodiff import vjp
from flux.transforms.loop_lift import lift_loop, lift_loops
from flux.transforms.loop_sums import sum_after_loops
from flux.transforms.matmuls import merge_matmuls

__all__ = [
    "Backend", "hookimpl", "Compiled", "MirroredCompiled", "TrainingStep", "trace",
    "abstract_inputs", "model_dtype", "flatten", "flatten_args", "unflatten", "ParamMirror",
    "Mirrored", "OptimiserMirror", "backend_error", "equation_error", "equation_named", "op_name",
    "first_line",
    "user_facing", "Device", "parse_device", "flat_positions", "is_basic_index", "strided",
    "NUMPY", "FreeBatch", "free_batch", "input_shape", "affine_adds",
    "backends", "compile", "shorthand", "compiled_of", "accumulate", "as_input_array",
    "KNOWN_BACKENDS", "REGISTRY", "PluginError", "PluginWarning", "vjp", "NonFiniteGradient",
    "all_finite", "merge_matmuls", "lift_loops", "lift_loop", "sum_after_loops", "ProcessGroup",
    "free_ports", "exit_status",
]


class _CallableModule(types.ModuleType):
    """`flux.backends` is both this module and the function the API fixes as
    ``flux.backends()``: calling the module lists the installed backends."""

    def __call__(self) -> list[str]:
        return backends()


sys.modules[__name__].__class__ = _CallableModule
