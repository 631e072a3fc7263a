"""Parameter and FLOP counts for any zoo model (the benchmarks and notebooks reuse this)."""
import math

import keras
import tensorflow as tf

from liverzoo._keras_internals import profile_flops
from liverzoo.errors import ConfigError


def count_flops(model, input_shape=None):
    """Floating-point operations of one inference pass on a batch of one.

    Counted by the TensorFlow profiler on the graph of the model's concrete function, so
    custom layers are covered by the TF ops they run. Convention: a multiply-add is 2 FLOPs
    (Conv2D/Conv3D/depthwise/transposed conv/MatMul count 2 * MACs); element-wise ops (bias
    add, normalization arithmetic, add, softmax) count one per output element; data movement
    with no arithmetic (resize, depth-to-space, concat, pad, reshape) counts 0.

    Args:
        model: a `keras.Model`.
        input_shape: input shape without the batch axis; default: the model's (must be
            fully defined).

    Returns:
        The FLOP count (int).

    Example:
        >>> inputs = keras.Input((8, 8, 1))
        >>> model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs))
        >>> count_flops(model)  # 8*8 outputs * 4 channels * 9 MACs * 2
        4608
    """
    shape = tuple(input_shape) if input_shape is not None else tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ConfigError(f"count_flops: input_shape must be fully defined, got {shape}")
    fn = tf.function(lambda x: model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec((1,) + shape, tf.float32)).graph
    return profile_flops(graph)


def summary(name_or_model, input_shape=None, **build_kwargs):
    """Parameters and GFLOPs of a zoo model (by name) or of any `keras.Model`.

    Args:
        name_or_model: a name in `liverzoo.models.MODELS`, or a built `keras.Model`.
        input_shape: input shape without batch axis. For a name the default is the paper's
            input size (`SPECS[name].paper_input_shape`); for a model, the model's own.
        **build_kwargs: builder options (only with a name).

    Returns:
        dict with `params` (all weights), `trainable_params` and `gflops` (see
        `count_flops` for the convention: a multiply-add is 2 FLOPs; batch of one).

    Raises:
        ConfigError: unknown name, or builder options given with a model.

    Example:
        >>> summary("ds_nnunet")["params"]  # doctest: +SKIP
        7750047
    """
    from liverzoo import models

    if isinstance(name_or_model, keras.Model):
        if build_kwargs:
            raise ConfigError(f"summary: builder options {sorted(build_kwargs)} need a model name, not a model")
        model = name_or_model
    else:
        if input_shape is None and name_or_model in models.SPECS:
            input_shape = models.SPECS[name_or_model].paper_input_shape
        model = models.build(name_or_model, input_shape=input_shape, **build_kwargs)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "gflops": count_flops(model, input_shape) / 1e9,
    }
