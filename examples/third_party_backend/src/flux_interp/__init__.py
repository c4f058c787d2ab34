"""flux-interp: an example third-party flux backend that interprets graphs equation by
equation with each primitive's NumPy implementation. Slow, small and obviously correct."""
from __future__ import annotations

import numpy as np

import flux.hookspecs as hs
from flux.ir import Literal

__all__ = ["InterpBackend", "flux_backends"]


class InterpBackend(hs.Backend):
    """Runs a graph by walking its equations in order."""

    name = "interp"
    package = "flux-interp"

    def lower(self, graph, options):
        if options:
            raise TypeError(f"the interp backend takes no options, given {sorted(options)}")

        def run(*inputs):
            env = {}
            for var, value in zip(graph.inputs, inputs):
                env[id(var)] = value
            for var, p in zip(graph.param_vars, graph.param_objs):
                env[id(var)] = p.value           # read at every call: updates are seen
            for var, value in zip(graph.consts, graph.const_values):
                env[id(var)] = value

            def read(atom):
                return atom.value if isinstance(atom, Literal) else env[id(atom)]

            for eqn in graph.eqns:
                out = eqn.prim.impl(*(read(a) for a in eqn.inputs), **eqn.attrs)
                outs = out if eqn.prim.multiple_results else [out]
                for var, value in zip(eqn.outputs, outs):
                    env[id(var)] = np.asarray(value, dtype=var.aval.dtype)
            return [np.array(read(a), dtype=a.aval.dtype) for a in graph.outputs]
        return run


@hs.hookimpl
def flux_backends():
    return [InterpBackend()]
