"""flux-tf: the TensorFlow backend of flux.

    import flux, flux_tf
    tfmodel = flux.tf(model)               # or flux.compile(model, "tf", jit_compile=True)
    tfmodel = flux.tf(model, strategy=flux_tf.multi_worker())   # data-parallel, from TF_CONFIG
    tfmodel(x)                             # NumPy in, NumPy out; trains with flux.train
    y = flux_tf.tensor(model, x)           # the model built on a tf.Tensor, with tf.Variables
    layer = flux_tf.keras_layer(model)     # a Keras layer whose weights are the model's Params
    keras.models.load_model(path, custom_objects=flux_tf.keras_objects(model))   # reload one

flux-core finds this backend through the ``flux`` entry-point group; it never imports it.
"""
from __future__ import annotations

try:
    import tensorflow  # noqa: F401
except ImportError as error:             # flux-tf installed without one of its TF extras
    raise ImportError("flux-tf needs TensorFlow 2.16 or newer, and none is installed: pip "
                      "install 'flux-tf[cpu]' (tensorflow-cpu), 'flux-tf[gpu]' "
                      "(tensorflow[and-cuda]), or the TensorFlow of your choice") from error

from flux.backends import Backend, hookimpl

from ._distributed import multi_worker
from ._compiled import TFCompiled, Variables, check_options, graph_function
from ._native import FluxLayer, keras_layer, keras_objects, tensor, variables, write_back

__all__ = ["TFBackend", "TFCompiled", "tensor", "keras_layer", "keras_objects", "FluxLayer",
           "variables", "write_back", "multi_worker", "flux_backends"]


class TFBackend(Backend):
    """Runs flux graphs as `tf.function`s. Options: ``jit_compile`` (XLA, default False),
    ``check_numerics`` (every floating result checked for NaN/Inf, naming the equation) and
    ``device`` (``"cpu"``, ``"gpu"``, ``"gpu:1"``, ``"/GPU:0"``: where the variables live and
    the functions run; default TensorFlow's placement), ``strategy`` (a `tf.distribute`
    strategy: data-parallel training, `flux_tf._distributed`) with ``timeout`` (the seconds
    its collectives may wait, default 60). Unrolled models arrive as loops
    (`scan`), each one `tf.while_loop` (`flux_tf._loop`)."""

    name = "tf"
    package = "flux-tf"
    loops = True

    def lower(self, graph, options: dict):
        options = check_options(options)
        return graph_function(graph, Variables(options.get("device"), options.get("strategy")),
                              options)

    def compile(self, model, options: dict):
        return TFCompiled(model, self, options)


@hookimpl
def flux_backends():
    return [TFBackend()]
