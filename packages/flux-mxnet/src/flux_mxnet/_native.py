"""Native integration: a flux model as an MXNet `Symbol` with its `arg_params`, or as a bound
`mx.mod.Module` ready for `fit` with MXNet's data iterators, optimisers and kvstores."""
from __future__ import annotations

import mxnet as mx

import flux
from flux import FluxValueError
from flux.backends import abstract_inputs, free_batch, input_shape, trace
from flux.backends.free_batch import TRIAL

from ._symbol import nd_array, to_symbol

__all__ = ["symbol", "module", "LOSSES"]


def _built(model, inputs, what):
    """The model's graph for example inputs (shapes as tuples of ints, or arrays), as a
    Symbol, and its arguments' values by name; with no inputs, for every batch size."""
    free = None
    if inputs:
        model, avals, tree = abstract_inputs(model, inputs, what)
        graph = trace(model, avals, tree)
    else:
        model, avals, tree = abstract_inputs(model, ((TRIAL[0],) + _point(model, what),), what)
        free = free_batch(model, avals, tree, f"flux_mxnet.{what}")
        graph = free.graph
    built = to_symbol(graph, free=free)
    arg_params = {name: nd_array(p.peek()) for name, p in zip(built.param_names, graph.param_objs)}
    arg_params.update((name, nd_array(v)) for name, v in built.consts.items())
    return graph, built, arg_params


def _point(model, what) -> tuple:
    point = input_shape(model)
    if point is None:
        model = getattr(model, "model", model) if getattr(model, "__flux_compiled__", 0) else model
        name = getattr(model, "_name", None) or type(model).__name__
        raise FluxValueError(f"flux_mxnet.{what}: {name} does not determine the shape of its "
                             f"input (Affine, the recurrent layers, Chains and unrolled models "
                             f"of them do, as does a model's own input_shape attribute); pass "
                             f"an example input or its shape, e.g. flux_mxnet.{what}(model, "
                             f"(32, 10)), for a Symbol of that batch size")
    return point


def symbol(model, *inputs):
    """``(sym, arg_params)``: `model` as one MXNet Symbol, for every batch size or, given
    example inputs (shapes as tuples, or arrays), for inputs of those shapes.

    The model's input is the Variable ``data`` (``data0``, ``data1``, ... for several inputs);
    each Param is one Variable named by its attribute path (``layers[0].W``) and carrying its
    shape; ``arg_params`` maps those names, and those of the constants the graph needs
    (``const0``, index arrays ``e<i>_..._c<j>``: keep them fixed when training), to
    `mx.nd.NDArray`s of the current values. Several outputs give a grouped Symbol.

    With no inputs the point shape comes from the model (`flux.backends.input_shape`: Affine,
    the recurrent layers, a Chain of them, unrolled models), ``data`` has an unknown (0) batch
    size and ``sym.infer_shape(data=(n, ...))`` works for any n; a model whose graph depends
    on its batch size otherwise (a mean over the batch) is refused, naming the line. Given
    inputs, the Symbol is specialised to their shapes, batch size included, and an unrolled
    model's steps are one ``foreach`` (unless ``FLUX_LOOPS=unroll``; the Symbol for every
    batch size has them unrolled). A stateful unrolled model starts from its initial state;
    its final state is the outputs after its own.
    """
    _, built, arg_params = _built(model, inputs, "symbol")
    if not built.symbols:
        raise FluxValueError("symbol: the model's outputs are all constants; nothing to build")
    return (built.symbols[0] if len(built.symbols) == 1 else built.symbol), arg_params


LOSSES = {
    "mse": lambda out, label: mx.sym.LinearRegressionOutput(out, label, name="output"),
    "softmax": lambda out, label: mx.sym.SoftmaxOutput(out, label, name="output"),
}
"""How `module` turns the model's output into something MXNet trains: ``"mse"`` (a regression
on labels of the output's shape) or ``"softmax"`` (softmax + cross-entropy on class-index
labels of shape ``(batch,)``: the model must output *logits*, so leave a final `softmax` out)."""


def module(model, *inputs, loss="mse", label_name="label", context=None, **options):
    """A bound `mx.mod.Module` running `model` (see `symbol`) with its current weights.

    `loss` picks the output layer MXNet trains through (`LOSSES`: ``"mse"`` or ``"softmax"``),
    or ``None`` when the model itself returns the loss (then `mx.sym.MakeLoss` is used and no
    label is bound). The graph's constants are ``fixed_param_names``. `context` defaults to
    ``mx.cpu()``; other keyword options go to `mx.mod.Module`. Then, with MXNet's own
    iterators and optimisers::

        mod = flux_mxnet.module(model, (32, 784), loss="softmax")
        mod.fit(mx.io.NDArrayIter(x, y, batch_size=32), num_epoch=1, optimizer="sgd")
        flux_mxnet.set_params(model, mod.get_params()[0])     # back into the flux model

    The module is bound for the given input shapes (the batch size of its iterators).
    """
    if not inputs:
        raise FluxValueError("module: a Module is bound for one batch size: pass example "
                             "inputs or their shapes, e.g. flux_mxnet.module(model, (32, 10))")
    graph, built, arg_params = _built(model, inputs, "module")
    if len(built.symbols) != 1 or len(graph.outputs) != 1:
        raise FluxValueError(f"module: the model must have one output (found "
                             f"{len(graph.outputs)}); use flux_mxnet.symbol for others")
    out = built.symbols[0]
    out_shape = out.infer_shape(**built.shapes)[1][0]
    if loss is None:
        sym, label_names, label_shapes = mx.sym.MakeLoss(out, name="output"), [], None
    elif loss in LOSSES:
        label = mx.sym.Variable(label_name)
        sym = LOSSES[loss](out, label)
        label_shape = out_shape if loss == "mse" else out_shape[:1]
        label_names, label_shapes = [label_name], [(label_name, label_shape)]
    else:
        raise FluxValueError(f"module: loss must be one of {sorted(LOSSES)} or None, "
                             f"found {loss!r}")
    data_names = list(built.input_names)
    mod = mx.mod.Module(sym, data_names=data_names, label_names=label_names,
                        context=context or mx.cpu(),
                        fixed_param_names=list(built.consts), **options)
    mod.bind(data_shapes=[(n, built.shapes[n]) for n in data_names],
             label_shapes=label_shapes)
    mod.init_params(arg_params=arg_params, aux_params={}, allow_missing=False)
    return mod


def set_params(model, arg_params) -> None:
    """Copy MXNet values (e.g. ``mod.get_params()[0]``) back into `model`'s Params, by path."""
    paths = flux.params(model)
    for name, value in arg_params.items():
        p = paths.get(name)
        if p is not None:
            p.value = value.asnumpy().reshape(p.shape).astype(p.dtype)
