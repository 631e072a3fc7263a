"""InstanceNormalization against GroupNormalization(groups=-1), a float64 NumPy reference, and in LiteRT."""
import numpy as np
import pytest

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.normalization import InstanceNormalization
from tests.layer_test_utils import run_layer_test
from tests.layers.test_conv3d import litert_run, tflite_convert_builtins


def _reference(x, gamma, beta, eps=1e-5):
    x = x.astype(np.float64)
    axes = tuple(range(1, x.ndim - 1))
    mean = x.mean(axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _affine(channels, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 1.5, channels).astype(np.float32), rng.normal(0, 0.5, channels).astype(np.float32)


@pytest.mark.parametrize("shape", [(2, 6, 7, 3), (1, 3, 5, 4, 2)])
def test_equals_group_normalization_and_numpy(shape):
    x = (np.random.default_rng(0).standard_normal(shape) * 3 + 5).astype(np.float32)
    layer, stock = InstanceNormalization(), keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)
    layer.build(shape)
    stock.build(shape)
    gamma, beta = _affine(shape[-1])
    layer.set_weights([gamma, beta])
    stock.set_weights(layer.get_weights())  # same weight layout
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y, np.asarray(stock(x)), atol=2e-5)
    np.testing.assert_allclose(y, _reference(x, gamma, beta), atol=2e-6)


def test_run_layer_test(tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 5, 6, 3)).astype(np.float32)
    out = run_layer_test(InstanceNormalization, dict(epsilon=1e-3, center=False), x, (2, 5, 6, 3), tmp_path=tmp_path)
    np.testing.assert_allclose(out, _reference(x, 1.0, 0.0, eps=1e-3), atol=1e-5)


def test_rejects_unknown_channels():
    with pytest.raises(ConfigError, match="InstanceNormalization"):
        InstanceNormalization().build((None, 4, 4, None))


def test_litert_statistics_stay_accurate_on_large_planes():
    """At 256x256 TFLite's single-pass MEAN drifts ~1e-4; axis by axis it stays near float64."""
    shape = (1, 256, 256, 8)
    x = (np.random.default_rng(2).standard_normal(shape) * 3 + 5).astype(np.float32)
    inputs = keras.Input(shape[1:])
    layer = InstanceNormalization()
    model = keras.Model(inputs, layer(inputs))
    gamma, beta = _affine(shape[-1])
    layer.set_weights([gamma, beta])
    flatbuffer = tflite_convert_builtins(model, shape)
    np.testing.assert_allclose(litert_run(flatbuffer, x), _reference(x, gamma, beta), atol=1e-5)


def test_mixed_precision_computes_statistics_in_float32():
    x = (np.random.default_rng(3).standard_normal((1, 16, 16, 2)) * 50 + 300).astype(np.float16)
    layer = InstanceNormalization(dtype="mixed_float16")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_allclose(np.asarray(y, np.float32), _reference(x, 1.0, 0.0), atol=5e-3)
