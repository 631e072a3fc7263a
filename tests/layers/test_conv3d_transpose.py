"""FoldedConv3DTranspose against stock keras.layers.Conv3DTranspose (copied weights) and in LiteRT."""
import numpy as np
import pytest

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d_transpose import FoldedConv3DTranspose
from tests.layer_test_utils import run_layer_test
from tests.layers.test_conv3d import (
    assert_litert_matches,
    litert_run,
    tflite_convert_builtins,
    tflite_op_counts,
    tflite_op_names,
)

# kernel_size, strides, padding, input shape: V-Net's 2/2, 3DYNet's 3/2 "same", overlapping
# and anisotropic kernels, a stride above the kernel, odd sizes.
CASES = [
    (2, 2, "same", (1, 3, 4, 5, 3)),
    (3, 2, "same", (2, 3, 4, 5, 3)),
    (3, 2, "valid", (1, 3, 4, 5, 2)),
    (4, 2, "same", (1, 3, 4, 4, 2)),
    (4, 2, "valid", (1, 2, 3, 4, 2)),
    ((1, 2, 2), (1, 2, 2), "same", (1, 3, 4, 5, 2)),
    ((2, 2, 3), (2, 1, 3), "valid", (1, 3, 4, 5, 2)),
    ((3, 3, 2), (2, 3, 2), "same", (1, 2, 3, 4, 2)),
    (3, 1, "same", (1, 3, 4, 5, 2)),
    (1, 2, "valid", (1, 3, 4, 5, 2)),
    (5, 3, "same", (1, 3, 4, 5, 2)),
]


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _stock_twin(layer, x):
    """keras.layers.Conv3DTranspose with the same arguments and `layer`'s weights."""
    stock = keras.layers.Conv3DTranspose(
        layer.filters, layer.kernel_size, strides=layer.strides, padding=layer.padding, use_bias=layer.use_bias
    )
    stock.build(x.shape)
    stock.set_weights(layer.get_weights())
    return stock


@pytest.mark.parametrize("kernel_size,strides,padding,shape", CASES)
def test_equals_stock_conv3d_transpose(kernel_size, strides, padding, shape):
    x = _random(shape)
    layer = FoldedConv3DTranspose(4, kernel_size, strides=strides, padding=padding, bias_initializer="random_normal")
    y = np.asarray(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape)
    assert tuple(layer.kernel.shape) == (*layer.kernel_size, 4, shape[-1])  # Conv3DTranspose's layout
    np.testing.assert_allclose(y, np.asarray(_stock_twin(layer, x)(x)), atol=1e-5)


def test_unknown_sizes_give_the_same_outputs():
    """Built on (None, None, None, C), it matches the stock layer at several sizes."""
    inputs = keras.Input((None, None, None, 2))
    layer = FoldedConv3DTranspose(3, 3, strides=2, padding="same", bias_initializer="random_normal")
    model = keras.Model(inputs, layer(inputs))
    assert model.output_shape == (None, None, None, None, 3)
    for shape in [(1, 3, 5, 4, 2), (2, 4, 4, 6, 2)]:
        x = _random(shape)
        np.testing.assert_allclose(np.asarray(model(x)), np.asarray(_stock_twin(layer, x)(x)), atol=1e-5)


@pytest.mark.parametrize(
    "init_kwargs,shape,expected",
    [
        (dict(filters=4, kernel_size=2, strides=2, padding="same"), (2, 2, 3, 3, 3), (2, 4, 6, 6, 4)),
        (dict(filters=3, kernel_size=(3, 3, 3), strides=(1, 2, 2), padding="valid", use_bias=False),
         (1, 2, 3, 4, 2), (1, 4, 7, 9, 3)),
    ],
)
def test_run_layer_test(init_kwargs, shape, expected, tmp_path):
    run_layer_test(FoldedConv3DTranspose, init_kwargs, _random(shape), expected, tmp_path=tmp_path)


@pytest.mark.parametrize(
    "init_kwargs",
    [
        dict(filters=0, kernel_size=2),
        dict(filters=4, kernel_size=(2, 2)),
        dict(filters=4, kernel_size=2, strides=0),
        dict(filters=4, kernel_size=2, padding="causal"),
        dict(filters=4, kernel_size=2, dilation_rate=2),
    ],
)
def test_bad_arguments_raise_config_error(init_kwargs):
    with pytest.raises(ConfigError):
        FoldedConv3DTranspose(**init_kwargs)


LITERT_CASES = [
    (dict(kernel_size=2, strides=2, padding="same"), (1, 3, 4, 4, 3)),
    (dict(kernel_size=3, strides=2, padding="same"), (1, 3, 4, 5, 3)),
    (dict(kernel_size=(2, 2, 3), strides=(2, 1, 3), padding="valid"), (1, 2, 3, 4, 2)),
]


@pytest.mark.parametrize("init_kwargs,shape", LITERT_CASES)
def test_litert_builtins_only(init_kwargs, shape):
    """Converts with TFLITE_BUILTINS only, no CONV_3D(_TRANSPOSE), runs in LiteRT within 1e-4 of Keras."""
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, FoldedConv3DTranspose(4, bias_initializer="random_normal", **init_kwargs)(inputs))
    ops = assert_litert_matches(model, _random(shape), forbidden=("CONV_3D", "CONV_3D_TRANSPOSE"))
    assert "CONV_2D" in ops


def test_one_conv2d_per_phase_and_no_add():
    """3x3x3 stride 2: 8 output phases, each one CONV_2D over its depth taps stacked along
    channels with the bias fused; no ADD, so an int8 file rounds once per phase."""
    inputs = keras.Input((3, 4, 4, 2))
    layer = FoldedConv3DTranspose(3, 3, strides=2, padding="same", bias_initializer="random_normal")
    counts = tflite_op_counts(tflite_convert_builtins(keras.Model(inputs, layer(inputs)), (1, 3, 4, 4, 2)))
    assert counts["CONV_2D"] == 8 and counts["ADD"] == 0, counts


def test_litert_unknown_sizes():
    """Converted with unknown D, H, W, it runs in LiteRT at two sizes."""
    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, FoldedConv3DTranspose(3, 3, strides=2, padding="same")(inputs))
    flatbuffer = tflite_convert_builtins(model, (1, None, None, None, 2))
    assert not any(op.startswith("CUSTOM") for op in tflite_op_names(flatbuffer))
    for shape in [(1, 3, 5, 4, 2), (1, 4, 4, 6, 2)]:
        x = _random(shape)
        np.testing.assert_allclose(litert_run(flatbuffer, x), np.asarray(model(x)), atol=1e-4)
