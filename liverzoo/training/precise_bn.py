"""Precise BN: BatchNorm moving statistics recomputed as an average over training batches.

Keras keeps exponential running averages (momentum 0.99, a window of ~100 steps), which lag
behind the weights early in training or at a high learning rate; validation in inference
mode then sees statistics of older weights (Wu & Johnson, "Rethinking Batch in BatchNorm",
2021).

Example:
    >>> recompute_batchnorm_statistics(model, dataset.take(8), batchnorm_step(model))  # doctest: +SKIP
"""
import contextlib

import keras


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        stack += getattr(layer, "layers", [])
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


@contextlib.contextmanager
def _zero_momentum(layers):
    """Momentum 0 inside the block (a training-mode call sets the moving statistics to the batch's)."""
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


def recompute_batchnorm_statistics(model, batches, step=None):
    """Precise BN: sets BatchNorm moving statistics to their average over `batches`.

    The model runs in training mode on each batch with momentum 0 (so each layer's moving
    statistics become that batch's), and the per-batch means and variances are averaged.
    Momenta are restored afterwards.

    Args:
        model: a Keras model.
        batches: iterable of input batches (or `(x, y)` pairs).
        step: optional `step(x)` running `model(x, training=True)` that was traced while the
            momenta were 0 (from `batchnorm_step`); default: eager calls.

    Returns:
        The number of batches used.

    Example:
        >>> recompute_batchnorm_statistics(model, dataset.take(8))  # doctest: +SKIP
    """
    layers = batchnorm_layers(model)
    sums = [[0.0, 0.0] for _ in layers]
    count = 0
    with _zero_momentum(layers):
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if step is None:
                model(x, training=True)
            else:
                step(x)
            for total, layer in zip(sums, layers):
                total[0] += layer.moving_mean.numpy()
                total[1] += layer.moving_variance.numpy()
            count += 1
        if count:
            for (mean, variance), layer in zip(sums, layers):
                layer.moving_mean.assign(mean / count)
                layer.moving_variance.assign(variance / count)
    return count


def batchnorm_step(model):
    """A traced `model(x, training=True)` with BatchNorm momenta 0, for Precise BN.

    Keras reads the momentum when the function is traced, so the graph keeps momentum 0
    whatever the layers' attribute is later; one trace serves the whole run.
    """
    import tensorflow as tf

    layers = batchnorm_layers(model)

    @tf.function(reduce_retracing=True)
    def step(x):
        model(x, training=True)

    def traced(x):
        with _zero_momentum(layers):
            step(x)

    return traced
