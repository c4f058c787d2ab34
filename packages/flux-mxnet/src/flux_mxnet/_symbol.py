"""A flux graph as one `mx.sym.Symbol` (`to_symbol`): one rule per primitive, in one table.

Conventions on the MXNet side (legacy `mx.sym`, no NumPy-shape mode):
- a 0-d value is an array of shape ``(1,)`` (legacy MXNet has no 0-d arrays); executors
  reshape outputs back;
- booleans are float32 0/1 (legacy comparisons return their input's dtype);
- the graph's inputs are the Variables ``data`` (``data0``, ``data1``, ... for several), each
  Param one Variable named by its attribute path, the constants ``const<i>``;
- every operator of equation i is named ``e<i>_<primitive>`` (helpers add a suffix), so an
  MXNet error, which names its operator, maps back to the equation
  (`flux.backends.equation_named`); those of a loop body's equation j ``e<i>_scan_e<j>_...``,
  so names stay unique however loops nest (an error in a body maps to its loop).
"""
from __future__ import annotations

import mxnet as mx
import numpy as np

from flux import FluxTypeError
from flux.backends import affine_adds, op_name
from flux.ir import Literal

from ._rules import RULES, SCALAR, Rule, mx_dtype, mx_shape

__all__ = ["GraphSymbol", "to_symbol", "mx_shape", "mx_dtype", "nd_array", "copy_in", "RULES"]

S = mx.sym


def nd_array(value, ctx=None) -> mx.nd.NDArray:
    """An NDArray holding a copy of `value` (0-d as (1,), in `mx_dtype`); unlike `mx.nd.array`,
    it does not probe for SciPy sparse matrices (a DeprecationWarning per call with recent
    SciPy)."""
    value = np.asarray(value)
    array = mx.nd.empty(mx_shape(value.shape), ctx=ctx or mx.cpu(), dtype=mx_dtype(value.dtype))
    copy_in(array, value)
    return array


def copy_in(array: mx.nd.NDArray, value) -> None:
    """Copy a NumPy array of the same size into `array` (waiting for its pending writes).
    This is what ``array[:] = value`` ends in, without the indexing machinery in front of it
    (about 150 µs a call in MXNet 1.9.1, whose own method `_sync_copyfrom` this is)."""
    value = np.asarray(value)
    array._sync_copyfrom(value.reshape(mx_shape(value.shape)))


def input_names(n: int) -> list[str]:
    """``data`` for one input, else ``data0``, ``data1``, ..."""
    return ["data"] if n == 1 else [f"data{i}" for i in range(n)]


def param_names(graph) -> list[str]:
    """A Variable name per Param: its attribute path, made unique (``p<i>`` if it has none)."""
    names, taken = [], set()
    for i in range(len(graph.param_vars)):
        name = (graph.param_names[i] if i < len(graph.param_names) else "") or f"p{i}"
        while name in taken or name.startswith("data") or name.startswith("const"):
            name = f"param_{name}"
        taken.add(name)
        names.append(name)
    return names


class GraphSymbol:
    """A graph as one MXNet Symbol (`symbol`, or `symbols` per Symbol output), and how to read
    the graph's outputs from it: ``outputs[i]`` is the index of output i in `symbols`, or the
    array of a Literal output.

    Arguments: `input_names` for ``graph.inputs``, `param_names` for ``graph.param_vars`` (one
    Variable per Param, however often it is used), and `consts` (name -> array: the graph's
    constants and the rules' index arrays, all fixed); `shapes` and `dtypes` of each by name.

    `fuse_affine` builds ``x @ W + b`` as FullyConnected (`flux.backends.affine_adds`). Only
    training executors (run with ``is_train=True``) use it: MXNet's MKL-DNN subgraph backend
    caches FullyConnected weights in inference executors, which then miss changed weights.
    """

    def __init__(self, graph, fuse_affine=False, free=None):
        self.free = free
        self.input_names = input_names(len(graph.inputs))
        self.param_names = param_names(graph)
        self.consts: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, np.dtype] = {}
        env = {}
        for var, name in zip(graph.inputs + graph.param_vars,
                             self.input_names + self.param_names):
            batch = free.axes(var) if free is not None else ()
            shape = tuple(0 if a in batch else d for a, d in enumerate(var.aval.shape))
            env[var] = self._variable(name, shape, var.aval.dtype)   # 0: MXNet's unknown size
            if batch and not hasattr(self, "batch_source"):
                self.batch_source = env[var], batch[0]
        for i, (var, value) in enumerate(zip(graph.consts, graph.const_values)):
            env[var] = self.add_const(f"const{i}", np.asarray(value))
        self.fuse_affine = fuse_affine
        self._transposed: dict[int, tuple] = {}     # id(W) -> (W, W transposed)
        self.steps = 0          # how many loop steps deep the symbols being built are
        self._lower(graph, env)
        self.outputs: list = []
        self.symbols: list = []
        for i, atom in enumerate(graph.outputs):
            if isinstance(atom, Literal):
                self.outputs.append(np.asarray(atom.value))
                continue
            sym = env[atom]
            if sym.name in self.shapes or any(sym is s for s in self.symbols):
                sym = S.identity(sym, name=f"out{i}")   # an argument or a repeat
            self.outputs.append(len(self.symbols))
            self.symbols.append(sym)
        self.symbol = S.Group(self.symbols) if self.symbols else None

    def _variable(self, name, shape, dtype):
        self.shapes[name] = mx_shape(shape)
        self.dtypes[name] = mx_dtype(dtype)
        return S.Variable(name, shape=self.shapes[name], dtype=self.dtypes[name])

    def add_const(self, name, array):
        array = np.asarray(array)
        dtype = mx_dtype(array.dtype)
        self.consts[name] = array.astype(dtype).reshape(mx_shape(array.shape))
        return self._variable(name, array.shape, dtype)

    def _lower(self, graph, env, prefix=""):
        """Add the symbols of `graph`'s equations to `env` (Var -> symbol), the operators
        of equation i named ``<prefix>e<i>_...``."""
        fused = affine_adds(graph) if self.fuse_affine else {}
        products = {m for m, _ in fused.values()}
        for index, eqn in enumerate(graph.eqns):
            if index in products:
                continue                     # built with the add that uses it
            if index in fused:
                m, bias = fused[index]
                name = f"{prefix}{op_name(index)}_affine"
                env[eqn.outputs[0]] = self._affine(name, graph.eqns[m], bias, env)
            elif eqn.prim.multiple_results:
                env.update(zip(eqn.outputs, self._apply_rule(index, eqn, env, prefix)))
            else:
                env[eqn.outputs[0]] = self._apply_rule(index, eqn, env, prefix)

    def _affine(self, name, matmul, bias, env):
        """``x @ W + b`` as FullyConnected (its weight is W transposed: (outputs, inputs),
        made once per W by `transposed`)."""
        x, w = matmul.inputs
        return S.FullyConnected(env[x], weight=self.transposed(env[w], f"{name}_wT"),
                                bias=env[bias], num_hidden=bias.aval.shape[-1], flatten=False,
                                name=name)

    def transposed(self, sym, name):
        """`sym` (a matrix) transposed, made once: the first call makes it, named `name`. (A
        loop makes its FullyConnected weights before it, so no step transposes them.)"""
        if id(sym) not in self._transposed:
            self._transposed[id(sym)] = sym, S.transpose(sym, name=name)
        return self._transposed[id(sym)][1]

    def lower_body(self, graph, inputs, consts, prefix) -> list:
        """The symbols of the outputs of `graph` (a loop body) given symbols for its `inputs`
        and its `consts`; its operators named ``<prefix>e<i>_...``."""
        env = dict(zip(graph.inputs, inputs))
        env.update(zip(graph.consts, consts))
        self._lower(graph, env, prefix)
        return [S.full(shape=mx_shape(atom.aval.shape), val=float(atom.value),
                       dtype=mx_dtype(atom.aval.dtype), name=f"{prefix}lit{i}")
                if isinstance(atom, Literal) else env[atom]
                for i, atom in enumerate(graph.outputs)]

    def _apply_rule(self, index, eqn, env, prefix=""):
        rule = RULES.get(eqn.prim)
        if rule is None:
            raise FluxTypeError(f"the mxnet backend cannot lower primitive {eqn.prim.name!r}")
        r = Rule(self, index, eqn, prefix)
        scalar = SCALAR.get(eqn.prim)
        if scalar is not None and len(eqn.inputs) == 2:
            x, y = eqn.inputs
            if isinstance(y, Literal) and not isinstance(x, Literal):
                return scalar[0](env[x], scalar=float(y.value), name=r.name)
            if isinstance(x, Literal) and not isinstance(y, Literal):
                return scalar[1](env[y], scalar=float(x.value), name=r.name)
        ins = [r.full(a.value, (), a.dtype) if isinstance(a, Literal) else env[a]
               for a in eqn.inputs]
        return rule(r, *ins, **eqn.attrs)


def to_symbol(graph, fuse_affine=False, free=None) -> GraphSymbol:
    """`graph` as one MXNet Symbol (see `GraphSymbol`); for every batch size when `free` (a
    `flux.backends.FreeBatch` of `graph`) is given."""
    return GraphSymbol(graph, fuse_affine, free)
