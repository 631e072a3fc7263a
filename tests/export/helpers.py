"""Small hand-made models and inputs shared by the export tests."""
import numpy as np


def _two_head_model():
    """2D model with dropout and a deep-supervision head: the export keeps outputs[0] only."""
    import keras

    keras.utils.set_random_seed(1)
    x = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.Dropout(0.5)(h)
    main = keras.layers.Conv2D(3, 1, activation="softmax", name="main")(h)
    aux = keras.layers.Conv2D(3, 1, activation="softmax", name="aux")(keras.layers.MaxPooling2D()(h))
    return keras.Model(x, [main, keras.layers.UpSampling2D()(aux)], name="two_heads")


def _random_stacks(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)
