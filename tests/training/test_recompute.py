"""liverzoo.training.recompute: gradient checkpointing replays the functional graph."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo.errors import ConfigError  # noqa: E402
from liverzoo.training.recompute import RecomputeModel  # noqa: E402


def _small_functional_model():
    """Conv + BN + skip + two outputs: what RecomputeModel must replay."""
    inputs = keras.Input((4, 8, 8, 1))
    a = keras.layers.Conv3D(4, 3, padding="same")(inputs)
    a = keras.layers.BatchNormalization()(a)
    a = keras.layers.ReLU()(a)
    b = keras.layers.Conv3D(4, 3, padding="same")(a)
    b = keras.layers.BatchNormalization()(b, training=None)
    c = keras.layers.Concatenate()([a, b])
    main = keras.layers.Conv3D(3, 1, activation="softmax", name="main")(c)
    aux = keras.layers.Conv3D(3, 1, activation="softmax", name="aux")(b)
    return keras.Model(inputs, [main, aux])


def test_recompute_gives_the_same_gradients_and_recomputes_the_forward_pass(tmp_path):
    import collections

    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inner = _small_functional_model()
    wrapped = RecomputeModel(inner, num_segments=3)
    x = np.random.default_rng(0).normal(size=(2, 4, 8, 8, 1)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, size=(2, 4, 8, 8))
    for a, b in zip(wrapped(x), inner(x)):
        np.testing.assert_allclose(a, b, atol=1e-6)

    @tf.function
    def grads(model):
        with tf.GradientTape() as tape:
            outs = model(x, training=True)
            loss = sum(tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, o)) for o in outs)
        return tape.gradient(loss, inner.trainable_variables)

    for a, b in zip(grads(inner), grads(wrapped)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    conv_ops = [collections.Counter(op.type for op in grads.get_concrete_function(m).graph.get_operations())["Conv3D"]
                for m in (inner, wrapped)]
    assert conv_ops[1] > conv_ops[0]  # forward convolutions run again inside the backward pass
    inner.save(tmp_path / "inner.keras")  # the wrapper leaves the functional graph intact
    keras.models.load_model(tmp_path / "inner.keras", safe_mode=True)


def test_recompute_rejects_shared_layers():
    inputs = keras.Input((8,))
    dense = keras.layers.Dense(8)
    shared = keras.Model(inputs, dense(dense(inputs)))
    with pytest.raises(ConfigError, match="called more than once"):
        RecomputeModel(shared)
