"""Dropping down to TensorFlow: a flux model built on `tf.Tensor`s, and as a Keras layer.

`tensor(model, x)` builds the model's graph on `x` (eagerly or inside the caller's
`tf.function`) reading one `tf.Variable` per Param (`variables(model)`), so a `tf.GradientTape`
sees them. `keras_layer(model)` is a Keras layer whose trainable weights start as the model's
Params; `write_back` copies values trained on the TF side back into the Params.

Keras saving: a `FluxLayer`'s config names the model's class and its parameters (paths,
shapes, dtypes), not the model itself (a flux model is Python code, which a saved file must
not carry). Loading takes the model from the caller, as Keras does for any custom object:
``keras.models.load_model(path, custom_objects=flux_tf.keras_objects(model))``, where `model`
has the same structure (a freshly built one will do); the saved weights are then loaded into
the layer and written into the model's Params.
"""
from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

import flux
from flux import FluxError
from flux.backends import (abstract_inputs, as_input_array, flatten_args, model_dtype, trace,
                           unflatten)
from flux.ir import Aval

from ._lower import build

__all__ = ["tensor", "variables", "keras_layer", "write_back", "keras_objects", "FluxLayer"]

_COMPILED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

STATEFUL = ("flux_tf.tensor: {model} carries hidden state between calls (a stateful unrolled "
            "model); build a stateless one (unroll(..., stateful=False)) to use it on tensors")
UNKNOWN_SHAPE = ("flux_tf.tensor: the input's shape {shape} is not fully known; flux graphs "
                 "have static shapes (give the batch size, or use keras_layer, which maps "
                 "the model over an unknown batch)")


def _compiled(model):
    """The model's TF-compiled twin, whose variables `tensor` reads (made on first use)."""
    found = _COMPILED.get(model)
    if found is None:
        found = _COMPILED[model] = flux.compile(model, "tf")
    return found


def _built(cache: dict, model, xs, carry_source) -> tuple:
    """``(graph, body)``: `model` traced on the tensors `xs` and built with TF ops, once per
    signature (kept in `cache`)."""
    leaves, tree = flatten_args(tuple(xs))
    for x in leaves:
        if not x.shape.is_fully_defined():
            raise FluxError(UNKNOWN_SHAPE.format(shape=tuple(x.shape)))
    avals = tuple(Aval(tuple(x.shape), x.dtype.as_numpy_dtype) for x in leaves)
    found = cache.get((tree, avals))
    if found is None:
        graph = trace(model, avals, tree, carry_source=carry_source)
        if graph.carry_in or graph.carry_out:
            raise FluxError(STATEFUL.format(model=type(model).__name__))
        found = cache[(tree, avals)] = (graph, build(graph))
    return found


def _as_tensors(xs, dtype) -> list:
    """The inputs as tensors (arrays converted), floating ones cast to the model's `dtype`."""
    xs = [x if isinstance(x, (tf.Tensor, tf.Variable))
          else tf.constant(as_input_array(x, None, "flux_tf.tensor")) for x in xs]
    return [tf.cast(x, dtype) if dtype is not None and x.dtype.is_floating
            and x.dtype != tf.as_dtype(dtype) else x for x in xs]


def tensor(model, *xs):
    """``model(*xs)`` built with TF ops on the tensors `xs`, returning tensors (the model's
    output structure). Works eagerly and inside `tf.function`; the Params are read through
    `variables(model)`, which a `tf.GradientTape` watches. Param values changed in flux are
    copied into the variables at each eager call (inside a `tf.function`, when it is traced)."""
    compiled = _compiled(model)
    xs = _as_tensors(xs, compiled.dtype)
    graph, body = _built(compiled.tensor_graphs, model, xs, compiled)
    records = compiled.variables.records(graph.param_objs)
    with tf.init_scope():                      # eagerly, even inside a tf.function's trace
        compiled.variables.sync(records)
    return unflatten(graph.out_tree, body(xs, [rec.array for rec in records]))


def variables(model) -> list:
    """The `tf.Variable`s `tensor(model, ...)` reads, in `flux.params(model)` order."""
    return [_compiled(model).variables.array(p) for p in flux.params(model).values()]


def write_back(model_or_layer) -> None:
    """Copy the values of the TF variables (trained by a GradientTape loop or Keras) into the
    model's Params."""
    if isinstance(model_or_layer, FluxLayer):
        model_or_layer.write_back()
        return
    compiled = _compiled(model_or_layer)
    compiled.variables.pull(list(flux.params(model_or_layer).values()))


def keras_layer(model, **kwargs):
    """A Keras layer computing `model`, whose trainable weights are the model's Params
    (initialised from their values; `layer.write_back()` or the `layer.write_back_callback()`
    copies trained values back). A batch of unknown size (Keras' symbolic batch) runs the
    model on single points, vectorised over the batch with `tf.vectorized_map`."""
    return FluxLayer(model, **kwargs)


# The name Keras files record for the class. FluxLayer is deliberately not registered with
# `keras.saving.register_keras_serializable`: a registered class would take precedence over
# the `custom_objects` that bring the model back (`keras_objects`).
REGISTERED = "FluxLayer"

NO_MODEL = ("keras_layer: this saved Keras model has a flux layer {name!r} computing a {cls} "
            "with the parameters {params}; a saved file holds no Python code, so give the model "
            "when loading: keras.models.load_model(path, custom_objects="
            "flux_tf.keras_objects(model)), with `model` built the same way")


def describe(model) -> dict:
    """What a FluxLayer's config records of its model: class and parameters."""
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "params": {name: [list(p.shape), p.dtype.str]
                       for name, p in flux.params(model).items()}}


def keras_objects(*models, **by_layer_name) -> dict:
    """``custom_objects`` for `keras.models.load_model` of a Keras model with flux layers.

    Each flux layer in the file is matched to a model given here: by its Keras layer name
    (``keras_objects(dense_flux=model)``), else to the one positional model whose class and
    parameters (paths, shapes, dtypes) match what was saved. The models' Params then receive
    the saved weights."""
    candidates = [(describe(m), m) for m in models]

    class BoundFluxLayer(FluxLayer):
        @classmethod
        def from_config(cls, config):
            config = dict(config)
            saved = config.pop("flux_model")
            name = config.get("name")
            model = by_layer_name.get(name)
            if model is None:
                matching = [m for d, m in candidates if d == saved]
                if len(matching) > 1:
                    raise FluxError(f"keras_objects: several of the given models match the "
                                    f"flux layer {name!r}; pass it by layer name "
                                    f"(keras_objects({name}=model))")
                if not matching:
                    raise FluxError(
                        NO_MODEL.format(name=name, cls=saved["class"],
                                        params=_shapes(saved["params"])) +
                        "\n  (no model given matches: " +
                        "; ".join(f"{d['class']} {_shapes(d['params'])}" for d, _ in candidates)
                        + ")")
                model = matching[0]
            elif describe(model) != saved:
                raise FluxError(f"keras_objects: the model given for the flux layer {name!r} "
                                f"is a {type(model).__name__} with parameters "
                                f"{_shapes(describe(model)['params'])}; the file has a "
                                f"{saved['class']} with {_shapes(saved['params'])}")
            return FluxLayer(model, **config)

    return {REGISTERED: BoundFluxLayer}


def _shapes(params: dict) -> str:
    return "{" + ", ".join(f"{n}: {tuple(s)}" for n, (s, _) in params.items()) + "}"


class FluxLayer(keras.layers.Layer):
    """A flux model as a Keras layer (see `keras_layer`)."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.flux_model = model
        self._flux_params = list(flux.params(model).items())
        self._flux_weights = []
        for name, p in self._flux_params:
            w = self.add_weight(shape=p.shape, dtype=str(p.dtype), initializer="zeros",
                                trainable=True, name=name.replace(".", "_"))
            w.assign(p.value)
            self._flux_weights.append(w)
        self._graphs: dict = {}
        self._dtype_in = model_dtype(model)

    def _outputs(self, xs):
        """The model on the tensors `xs`, reading the layer's weights."""
        graph, body = _built(self._graphs, self.flux_model, xs, None)
        weights = {id(p): w for (_, p), w in zip(self._flux_params, self._flux_weights)}
        if any(id(p) not in weights for p in graph.param_objs):
            raise FluxError("keras_layer: the model reaches Params that flux.params(model) "
                            "does not list (closures); give them to the model as attributes")
        return unflatten(graph.out_tree,
                         body(xs, [weights[id(p)].value for p in graph.param_objs]))

    def call(self, inputs):
        """`inputs`: the model's input tensor, or a list of them for a model of several."""
        xs = _as_tensors(inputs if isinstance(inputs, (list, tuple)) else [inputs],
                         self._dtype_in)
        if all(x.shape.is_fully_defined() for x in xs):
            return self._outputs(xs)
        return tf.vectorized_map(     # an unknown batch: the model on each point
            lambda point: self._outputs(point if isinstance(point, tuple) else (point,)),
            xs[0] if len(xs) == 1 else tuple(xs))

    def compute_output_shape(self, input_shape):
        """Shapes from flux's own inference; an unknown batch axis stays unknown."""
        several = isinstance(input_shape, list) or (
            isinstance(input_shape, tuple) and input_shape and
            isinstance(input_shape[0], (tuple, list)))
        shapes = list(input_shape) if several else [input_shape]
        unknown = any(d is None for s in shapes for d in s)
        graph = trace(*abstract_inputs(self.flux_model, tuple(
            tuple(s[1:]) if unknown else tuple(s) for s in shapes), "keras_layer"))
        outs = [tuple(o.aval.shape) for o in graph.outputs]
        if unknown:
            outs = [(None, *s) for s in outs]
        return unflatten(graph.out_tree, outs)

    def get_config(self) -> dict:
        """Keras' config: the layer's own settings and a description of the model (see the
        module: the model itself is given again when loading)."""
        return {**super().get_config(), "flux_model": describe(self.flux_model)}

    @classmethod
    def from_config(cls, config):
        saved = config.get("flux_model", {})
        raise FluxError(NO_MODEL.format(name=config.get("name"), cls=saved.get("class"),
                                        params=_shapes(saved.get("params", {}))))

    def load_own_variables(self, store) -> None:
        """Keras loading the saved weights: they go into the model's Params as well."""
        super().load_own_variables(store)
        self.write_back()

    def write_back(self) -> None:
        """Copy the layer's trained weights into the model's Params."""
        for (_, p), w in zip(self._flux_params, self._flux_weights):
            np.copyto(p.value, np.asarray(w.numpy(), p.dtype))

    def write_back_callback(self):
        """A Keras callback that writes the weights back after every batch of `fit`."""
        return keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs=None: self.write_back(),
            on_train_end=lambda logs=None: self.write_back())
