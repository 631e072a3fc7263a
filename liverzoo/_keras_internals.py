"""Every use of Keras and TensorFlow internals in liverzoo, each with why, behind a version guard.

Private APIs change without notice, so they live here and nowhere else. Each function
checks that the installed Keras and TensorFlow are in the tested range (the same range as
the pins in setup.py) and raises a ConfigError naming the feature otherwise. When an
upstream fix lands, tests/test_keras_internals.py fails: re-check the workaround and
remove it.
"""
import contextlib
import dataclasses
import inspect

from liverzoo.errors import ConfigError

#: Versions these internals were tested with: `[low, high)` as (major, minor); setup.py pins the same.
TESTED_KERAS = ((3, 15), (3, 16))
TESTED_TENSORFLOW = ((2, 21), (2, 22))


def _minor(version):
    return tuple(int(part) for part in version.split(".")[:2])


def check_versions(feature):
    """Raises ConfigError unless Keras and TensorFlow are in the tested ranges."""
    import keras
    import tensorflow as tf

    for package, version, (low, high) in (("keras", keras.__version__, TESTED_KERAS),
                                          ("tensorflow", tf.__version__, TESTED_TENSORFLOW)):
        if not low <= _minor(version) < high:
            raise ConfigError(f"{feature} relies on {package} internals tested with "
                              f"{package}>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}; "
                              f"found {package} {version}")


# --- Functional graph nodes (RecomputeModel) ---------------------------------------------------
# Why: gradient checkpointing replays a functional model's layer calls segment by segment.
# Keras 3 keeps each call as a Node (operation, arguments, input and output tensors) but has
# no public API for it; `keras.RematScope` would be the public way, but it fails in graph mode
# on layers called with keyword arguments (BatchNormalization's `training`; see the canary test).


@dataclasses.dataclass(frozen=True)
class LayerCall:
    """One call of a layer in a functional graph.

    Attributes:
        layer: the layer called.
        inputs: the symbolic tensors it reads.
        outputs: the symbolic tensors it produces.
    """

    layer: object
    inputs: tuple
    outputs: tuple
    node: object

    def run(self, values, training):
        """Calls the layer on `values[id(symbolic input)]`, stores `values[id(output)]`."""
        import keras

        args, kwargs = self.node.arguments.fill_in(values)
        # Explicit: a recomputation in the backward pass runs outside Keras' call context.
        if "training" in inspect.signature(self.layer.call).parameters and kwargs.get("training") is None:
            kwargs["training"] = training
        outs = self.layer(*args, **kwargs)
        for t, v in zip(self.outputs, keras.tree.flatten(outs)):
            values[id(t)] = v


def layer_calls(model, feature="--recompute"):
    """The calls of a functional model's layers in topological order, one per layer.

    Raises:
        ConfigError: a layer is called more than once, or untested Keras/TensorFlow.
    """
    import keras

    check_versions(feature)
    calls = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise ConfigError(f"{feature}: layer {layer.name} of {model.name} is called more than once")
        node = layer._inbound_nodes[0]
        calls.append(LayerCall(layer, tuple(node.input_tensors), tuple(node.outputs), node))
    return calls


# --- Nested layers ----------------------------------------------------------------------------
# Why: `Model.layers` lists only the top level; layers held inside custom layers (e.g. a
# BatchNormalization inside a block layer) are only reachable through `_flatten_layers`.


def flatten_layers(model, include_self=True):
    """Every layer tracked by `model`, recursively (Keras' `_flatten_layers`)."""
    check_versions("walking nested layers")
    return list(model._flatten_layers(include_self=include_self, recursive=True))


# --- Keras 3 fit under MultiWorkerMirroredStrategy (keras-team/keras#20585) ------------------


def reduce_per_replica_is_broken():
    """True while Keras averages scalar step logs over workers with `axis=0` (the bug worked around).

    Keras' TensorFlow trainer reduces "auto"/"mean" values under a multi-worker collective
    strategy with `strategy.reduce("MEAN", v, axis=0)`, which is invalid for the scalar losses
    and metrics of a train step.
    """
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    return 'strategy.reduce("MEAN", v, axis=0)' in inspect.getsource(keras_tf_trainer.reduce_per_replica)


@contextlib.contextmanager
def multi_worker_fit(trainable, strategy):
    """Lets Keras 3 `fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two steps of Keras 3.15's TensorFlow trainer fail with this strategy:
    1. `_maybe_symbolic_build` reduces the first distributed batch with `strategy.reduce`,
       which cannot take an `(x, y)` nest here. It is skipped when the model holds no
       strategy of its own (the private `_distribute_strategy`); `fit` then takes the
       strategy from the surrounding `strategy.scope()`, and what the symbolic build would
       create (the optimizer variables) is created here, in cross-replica context.
    2. Each step's logs (scalars) are averaged over workers with
       `strategy.reduce("MEAN", v, axis=0)`, invalid for scalars. While training runs,
       Keras' private `reduce_per_replica` gets that case with `axis=None` (the mean over
       replicas); every other case goes to Keras' own function. Restored on exit.

    Raises:
        ConfigError: untested Keras/TensorFlow versions.
    """
    import keras
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    check_versions("--strategy=multi_worker")
    with strategy.scope():
        trainable.optimizer.build(trainable.trainable_variables)
    trainable._distribute_strategy = None
    keras_reduce = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction="auto"):
        if reduction != "auto" or strategy_ is not strategy:
            return keras_reduce(values, strategy_, reduction)
        return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)

    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        keras_tf_trainer.reduce_per_replica = keras_reduce


# --- TensorBoard without the tensorboard package -----------------------------------------------
# Why: `tf.summary.scalar`/`image` live in the `tensorboard` package; core TensorFlow's
# `tf.summary.write` needs the plugin name in a SummaryMetadata proto, which TensorFlow
# exposes only as the generated module `tensorflow.core.framework.summary_pb2`.


def summary_metadata(plugin):
    """A SummaryMetadata proto naming a TensorBoard plugin ("scalars", "images")."""
    from tensorflow.core.framework import summary_pb2

    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


# --- Functional graph calls of one layer (the TFLite Conv3D rewrite) --------------------------
# Why: the rewrite swaps a Conv3D only when it is called once (a shared layer would need every
# call rewritten); Keras 3 has no public count of a layer's calls.


def inbound_node_count(layer):
    """How many times `layer` is called in functional graphs (Keras' `_inbound_nodes`)."""
    check_versions("rewriting Conv3D layers for TFLite")
    return len(layer._inbound_nodes)


def graph_consumers(model):
    """`{id(layer): [layers that read its output]}` in this functional model's own graph.

    Why: Keras has no public consumer lookup; the graph's nodes (`_nodes_by_depth`) and each
    input tensor's producer (`_keras_history`) give it, ignoring calls of a shared layer in
    other graphs.
    """
    check_versions("rewriting concatenation + batch norm for TFLite")
    consumers = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                consumers.setdefault(id(producer), []).append(node.operation)
    return consumers


# --- FLOP counts (the TensorFlow profiler) -----------------------------------------------------
# Why: TF 2 has no public FLOP counter; `tensorflow.python.profiler` counts a concrete function's
# graph. TF registers FLOP statistics for Conv2DBackpropInput but not for its 3D twin, so
# Conv3DTranspose layers counted 0: registered below with TF's 2D rule (every input element of the
# transposed conv meets kd*kh*kw*out_channels weights).
_flop_rules_registered = False


def _register_flop_rules():
    global _flop_rules_registered
    if _flop_rules_registered:
        return
    import math

    from tensorflow.python.framework import graph_util, ops

    @ops.RegisterStatistics("Conv3DBackpropInputV2", "flops")
    def _conv3d_transpose_flops(graph, node):
        filter_shape = graph_util.tensor_shape_from_node_def_name(graph, node.input[1])
        grad_shape = graph_util.tensor_shape_from_node_def_name(graph, node.input[2])
        filter_shape.assert_is_fully_defined()
        grad_shape.assert_is_fully_defined()
        kd, kh, kw, out_channels, _ = filter_shape.as_list()
        return ops.OpStats("flops", 2 * math.prod(grad_shape.as_list()) * kd * kh * kw * out_channels)

    _flop_rules_registered = True


def profile_flops(graph):
    """Floating-point operations of a TF graph, by the TensorFlow profiler."""
    check_versions("counting FLOPs")
    from tensorflow.python.profiler import model_analyzer, option_builder
    from tensorflow.python.util import deprecation

    _register_flop_rules()
    options = option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
    options = options.with_empty_output().build()
    # The profiler's shape helpers log a TF1 deprecation notice on first use: not for users.
    with deprecation.silence():
        return int(model_analyzer.profile(graph, options=options).total_float_ops)
