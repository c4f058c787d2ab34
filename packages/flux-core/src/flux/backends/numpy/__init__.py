"""The built-in NumPy backend: a graph is planned once per input signature and replayed.

Planning turns a graph into the source of one straight-line Python function of NumPy calls
(no interpreter loop, no per-equation dispatch), and decides where each result is written:

- elementwise results overwrite an input buffer that dies at that equation (``out=``), so
  chains like ``σ(x @ W + b)`` run in one buffer;
- other intermediate results of ufuncs and matmuls go to workspace buffers allocated once per
  plan and reused across calls and across values whose lifetimes do not overlap;
- results the caller receives are always fresh arrays (never a workspace buffer, never a view
  of an input or a parameter).

Parameters are read from their `Param` objects at every call, so assignments and in-place
writes to ``p.value`` are seen at the next call.
"""
from __future__ import annotations

import functools
from collections import defaultdict

import numpy as np

from flux.backends.contract import Backend, hookimpl
from flux.backends.errors import equation_error
from flux.errors import BackendError
from flux.ir import primitives as P
from flux.ir.graph import Graph, Literal, Var
from flux.backends.numpy.emitters import EMITTERS, WRITES_INTO, aliases, elided, logistic_into
from flux.transforms.loop_lift import lift_loops
from flux.transforms.loop_sums import sum_after_loops
from flux.transforms.matmuls import merge_matmuls

__all__ = ["NumpyBackend", "NUMPY", "plan", "plan_source"]

LIFT_LOOPS = True
"""Whether loops run with their loop-free work lifted out first (`lift_loops`: an LSTM's input
products as one product over the whole sequence)."""

MERGE_MATMULS = True
"""Whether graphs are planned after `merge_matmuls` (products sharing an operand as one
product: an LSTM's four gates). On: with a loop's sequences in the workspace, the merged LSTM
training step takes 0.90–0.97 of the unmerged one's time and the GRU's 0.94–1.03
(bench/RESULTS.md); before, the concatenations' copies ate the gain."""

SUM_AFTER_LOOPS = True
"""Whether a loop's accumulated step sums (backpropagation through time's weight and bias
gradients) are taken after the loop as one long product or sum (`sum_after_loops`)."""

SMALL = 1024
"""Results with fewer elements are fresh arrays: for them NumPy's allocation (its cache of
small blocks) costs less than passing ``out=`` (a compiled Affine(10, 20) on one point: 1.6×
a bare ``x @ W + b`` with buffers, 1.47× without: bench/overhead.py)."""

# -- planning -----------------------------------------------------------------------------------


class _Plan:
    """Where each equation writes: ``("fresh",)``, ``("inplace", var)`` or ``("slot", k)``."""

    def __init__(self, graph: Graph, elided: set[int], owned=frozenset()):
        eqns = graph.eqns
        never = len(eqns) + 1
        mine = [v for i, v in enumerate(graph.inputs) if i in owned]
        external = {id(v) for v in graph.inputs + graph.param_vars + graph.consts} - {
            id(v) for v in mine}
        last: dict[int, int] = defaultdict(lambda: -1)
        for i, eqn in enumerate(eqns):
            for atom in eqn.inputs:
                if isinstance(atom, Var):
                    last[id(atom)] = i
        for atom in graph.outputs:
            if isinstance(atom, Var):
                last[id(atom)] = never
        # the last use of a value or of any view derived from it
        reach = defaultdict(lambda: -1, last)
        for eqn in reversed(eqns):
            if aliases(eqn, elided) and isinstance(eqn.inputs[0], Var):
                u, o = id(eqn.inputs[0]), id(eqn.outputs[0])
                reach[u] = max(reach[u], reach[o])

        root: dict[int, int | None] = {}      # value -> the buffer it lives in (None: not ours)
        group_last: dict[int, int] = {}       # buffer -> last use of anything living in it
        slot_of: dict[int, int] = {}          # buffer -> workspace slot
        ending = defaultdict(list)            # eqn index -> buffers that may die there
        free = defaultdict(list)              # (shape, dtype) -> free slots
        self.slots: list[tuple] = []
        self.targets: list[tuple] = []
        for var in mine:              # inputs the caller gives away: buffers like our own
            root[id(var)] = id(var)
            group_last[id(var)] = reach[id(var)]
            ending[reach[id(var)]].append(id(var))

        for i, eqn in enumerate(eqns):
            for buf in ending.pop(i - 1, ()):
                if group_last.get(buf) == i - 1 and buf in slot_of:
                    free[self.slots[slot_of[buf]]].append(slot_of[buf])
            out = eqn.outputs[0]
            o = id(out)
            if aliases(eqn, elided):
                src = eqn.inputs[0]
                ours = isinstance(src, Var) and id(src) not in external
                root[o] = root.get(id(src)) if ours else None
                self.targets.append(("fresh",))
                continue
            if eqn.prim is P.scan_p:
                self.targets.append(self._loop_outputs(eqn, graph, reach, never, root,
                                                       group_last, slot_of, ending, free))
                continue
            target = ("fresh",)
            if eqn.prim in WRITES_INTO and out.aval.size >= SMALL \
                    and not eqn.prim.multiple_results:
                target = self._inplace(eqn, out, i, root, group_last, slot_of, reach, never,
                                       ending)
                if target is None and reach[o] < never:
                    key = (out.aval.shape, out.aval.dtype)
                    slot = free[key].pop() if free[key] else self._new_slot(key)
                    target = ("slot", slot)
                    slot_of[o] = slot
                target = target or ("fresh",)
            if target[0] != "inplace":
                root[o] = o
                group_last[o] = reach[o]
                ending[reach[o]].append(o)
            self.targets.append(target)

    def _inplace(self, eqn, out, i, root, group_last, slot_of, reach, never, ending):
        if eqn.prim is P.matmul_p:
            return None
        for atom in eqn.inputs:
            if not isinstance(atom, Var) or atom.aval != out.aval:
                continue
            v = id(atom)
            if root.get(v) != v or group_last.get(v) != i:
                continue
            if v in slot_of and reach[id(out)] >= never:
                continue   # a workspace buffer must never reach the caller
            root[id(out)] = v
            group_last[v] = reach[id(out)]
            ending[group_last[v]].append(v)
            return ("inplace", atom)
        return None

    def _loop_outputs(self, eqn, graph, reach, never, root, group_last, slot_of, ending,
                      free) -> tuple:
        """``("ys", slots)``: a workspace slot (or None) for each stacked y of the loop `eqn`:
        those the caller never receives get one, so a loop's sequences are not fresh memory
        at every call (the first writes to fresh pages of a few MiB cost more than the
        loop's own work on them)."""
        lists = _step_lists(graph, eqn)
        m, slots = eqn.attrs["n_carry"], []
        for j, var in enumerate(eqn.outputs):
            o = id(var)
            root[o] = o
            group_last[o] = reach[o]
            ending[reach[o]].append(o)
            if j < m or j - m in lists or reach[o] >= never or var.aval.size < SMALL:
                slots.append(None)
                continue
            key = (var.aval.shape, var.aval.dtype)
            slot = free[key].pop() if free[key] else self._new_slot(key)
            slot_of[o] = slot
            slots.append(slot)
        return ("ys", slots)

    def _new_slot(self, key) -> int:
        self.slots.append(key)
        return len(self.slots) - 1



# -- code generation ----------------------------------------------------------------------------


def plan_source(graph: Graph, owned=frozenset()) -> tuple[str, dict]:
    """The Python source of the planned function and the globals it needs; the inputs at the
    positions in `owned` are the caller's to give away: results may be written into them."""
    skipped = elided(graph)
    plan = _Plan(graph, skipped, owned)
    names: dict[int, str] = {}
    env: dict = {"np": np, "_logistic": logistic_into}
    counter = [0]

    def fresh(prefix):
        counter[0] += 1
        return f"{prefix}{counter[0]}"

    def name(atom) -> str:
        if isinstance(atom, Literal):
            key = fresh("l")
            env[key] = atom.value
            return key
        return names[id(atom)]

    for i, var in enumerate(graph.inputs):
        names[id(var)] = f"x{i}"
    args = [names[id(v)] for v in graph.inputs]
    body = []
    lines: dict[int, object] = {}   # line of the generated source -> its equation
    for i, (var, p) in enumerate(zip(graph.param_vars, graph.param_objs)):
        env[f"_P{i}"] = p
        names[id(var)] = f"p{i}"
        body.append(f"p{i} = _P{i}._value")
    for i, (var, value) in enumerate(zip(graph.consts, graph.const_values)):
        env[f"c{i}"] = value
        names[id(var)] = f"c{i}"
    if plan.slots:
        args.append("_W")

    for eqn, target in zip(graph.eqns, plan.targets):
        out = eqn.outputs[0]
        ins = [name(a) for a in eqn.inputs]
        names[id(out)] = out_name = f"t{out.id}"
        out_expr = None
        if target[0] == "inplace":
            out_expr = names[id(target[1])]
        elif target[0] == "slot":
            out_expr = f"_W[{target[1]}]"
        emitter = EMITTERS.get(eqn.prim)
        if eqn.prim is P.scan_p:
            key = fresh("_loop")
            env[key] = loop(**eqn.attrs, lists=_step_lists(graph, eqn))
            lines[len(body) + 2] = eqn
            outs = ", ".join(names.setdefault(id(v), f"t{v.id}") for v in eqn.outputs)
            m = eqn.attrs["n_carry"]
            into = ", ".join("None" if k is None else f"_W[{k}]" for k in target[1][m:])
            body.append(f"{outs}, = {key}({', '.join(ins)}, into=[{into}])")
            continue
        expr = None                  # (an emitter may decline: the primitive's impl, then)
        if id(eqn) in skipped:
            expr = ins[0]
        elif emitter is not None and not eqn.prim.multiple_results:
            expr = emitter(ins, eqn.attrs, out_expr)
        if expr is None:
            key = fresh("_f")
            env[key] = functools.partial(eqn.prim.impl, **eqn.attrs)
            expr = f"{key}({', '.join(ins)})"
        lines[len(body) + 2] = eqn   # +1 for 1-based numbering, +1 for the def line
        body.append(f"{out_name} = {expr}")

    results = []
    returned: set[int] = set()
    fresh_ids = {id(v) for eqn in graph.eqns if not aliases(eqn, skipped)
                 for v in eqn.outputs}
    for atom in graph.outputs:
        if isinstance(atom, Literal):
            results.append(f"np.asarray({name(atom)})")
        elif id(atom) not in fresh_ids or id(atom) in returned:
            results.append(f"np.array({name(atom)})")
        elif atom.aval.ndim == 0:
            results.append(f"np.asarray({name(atom)})")
        else:
            results.append(name(atom))
        if isinstance(atom, Var):
            returned.add(id(atom))
    body.append(f"return [{', '.join(results)}]")
    # errors are turned into BackendErrors at their equation here, in the plan (a try costs
    # nothing until something raises), so that a plan needs no Python wrapper around it
    source = (f"def run({', '.join(args)}):\n    try:\n"
              + "\n".join("        " + line for line in body)
              + "\n    except _BackendError:\n        raise"
              + "\n    except Exception as error:\n        raise _error(error) from error\n")
    lines = {line + 1: eqn for line, eqn in lines.items()}       # (the try line)
    env["_BackendError"] = BackendError
    env["_error"] = functools.partial(execution_error, lines=lines)
    env["__plan_slots__"] = plan.slots
    env["__plan_lines__"] = lines
    return source, env


def plan(graph: Graph, owned=frozenset()):
    """Plan `graph` for NumPy; the result maps flat input arrays to a list of output arrays.

    Each concurrent call takes its own workspace (a spare one, or a new one), so planned
    functions are safe to call from several threads. Inputs at the positions in `owned` may be
    overwritten (a loop gives its carried values away at every step).
    """
    source, env = plan_source(graph, owned)
    exec(compile(source, PLAN_FILE, "exec"), env)
    run, slots = env["run"], env["__plan_slots__"]
    run.source = source
    if not slots:
        return run
    spare: list = []

    def run_planned(*xs):
        workspace = spare.pop() if spare else [np.empty(s, d) for s, d in slots]
        outs = run(*xs, workspace)     # (raising, the workspace is dropped: a later call
        spare.append(workspace)        # makes one)
        return outs

    run_planned.source = source
    return run_planned


PLAN_FILE = "<flux plan>"


def _step_lists(graph: Graph, eqn) -> frozenset:
    """The ys of the loop `eqn` that only other loops read, one step at a time (the residuals
    a gradient's forward loop keeps for its backward loop): they stay lists of the steps'
    arrays, never copied into one stacked array."""
    outputs = {id(a) for a in graph.outputs}
    m = eqn.attrs["n_carry"]
    reads: dict[int, bool] = {}
    for user in graph.eqns:
        first_x = user.attrs["n_consts"] + user.attrs["n_carry"] if user.prim is P.scan_p \
            else len(user.inputs)
        for i, atom in enumerate(user.inputs):
            if isinstance(atom, Var):
                reads[id(atom)] = reads.get(id(atom), True) and i >= first_x
    return frozenset(j for j, var in enumerate(eqn.outputs[m:])
                     if id(var) not in outputs and reads.get(id(var), False))


def loop(*, body, length, n_consts, n_carry, x_axes, y_axes, reverse, lists=frozenset()):
    """A `scan` as a Python loop over the planned body (planned once, with its own
    workspace reused at every step); the ys are written into the buffers the call passes
    (``into=``, one per y, None where the loop allocates one at the first step), except those
    in `lists`, which stay Python lists of each step's array (only other
    loops read them, step by step). The carried values belong to the loop (copies of the
    initial ones), so the body updates them in place where it can (a gradient's running sum,
    ``acc += g``)."""
    k, m = n_consts, n_carry
    run = plan(body, owned=frozenset(range(k, k + m)))
    order = range(length - 1, -1, -1) if reverse else range(length)
    x_index = [[P.step_index(a, t) for t in range(length)] for a in x_axes]
    y_index = [[P.step_index(a, t) for t in range(length)] for a in y_axes]

    def run_loop(*args, into=None):
        consts, xs = list(args[:k]), args[k + m:]
        carry = [np.array(c) for c in args[k:k + m]]
        ys = None
        for t in order:
            outs = run(*consts, *carry, *[x[t] if type(x) is list else x[ix[t]]
                                          for x, ix in zip(xs, x_index)])
            carry = outs[:m]
            if len({id(c) for c in carry}) < m:      # one array for two carried values
                carry = [np.array(c) if any(c is d for d in carry[:j]) else c
                         for j, c in enumerate(carry)]
            if ys is None:
                ys = [[None] * length if j in lists else
                      into[j] if into and into[j] is not None else
                      np.empty(o.shape[:a] + (length,) + o.shape[a:], o.dtype)
                      for j, (o, a) in enumerate(zip(outs[m:], y_axes))]
            for j, (y, o, iy) in enumerate(zip(ys, outs[m:], y_index)):
                if j in lists:
                    y[t] = o
                else:
                    y[iy[t]] = o
        return carry + ys

    return run_loop


def execution_error(error: Exception, lines: dict) -> BackendError:
    """A NumPy error inside a plan, as a BackendError at the equation (and model line) that
    raised it; the NumPy exception is its ``__cause__``."""
    eqn, tb = None, error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PLAN_FILE:
            eqn = lines.get(tb.tb_lineno, eqn)
        tb = tb.tb_next
    if eqn is None:
        return BackendError(f"numpy backend: {type(error).__name__}: {error}", trace=[])
    return equation_error("numpy", error, eqn, message=str(error))


class NumpyBackend(Backend):
    """flux's built-in backend: planned NumPy execution (see the module docstring)."""

    name = "numpy"
    package = "flux-core"
    loops = True

    def lower(self, graph: Graph, options: dict):
        if options:
            raise TypeError(f"the numpy backend takes no options, given {sorted(options)}")
        if LIFT_LOOPS:
            graph = lift_loops(graph)
        if MERGE_MATMULS:
            graph = merge_matmuls(graph)
        if SUM_AFTER_LOOPS:        # (after merging: one long product for the merged gates)
            graph = sum_after_loops(graph)
        return plan(graph)


NUMPY = NumpyBackend()


@hookimpl
def flux_backends():
    """The NumPy backend registers through the same hook as every other backend."""
    return [NUMPY]
