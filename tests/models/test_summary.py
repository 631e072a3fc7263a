"""`liverzoo.models.summary` / `count_flops` against hand-computed counts."""
import math

import numpy as np
import pytest

from liverzoo import models
from liverzoo.errors import ConfigError
from liverzoo.models.summary import count_flops

MODELS_2D = ["residual_unet", "ds_nnunet", "nnunet_2d", "deeplabv3plus"]


def _single_layer_model(layer, shape):
    import keras

    inputs = keras.Input(shape)
    return keras.Model(inputs, layer(inputs))


def _layer_cases():
    import keras

    L = keras.layers
    # (layer, input shape, FLOPs: 2 per multiply-add + 1 per bias add)
    return [
        (L.Conv2D(4, 3, padding="same"), (8, 8, 2), 2 * 8 * 8 * 4 * 9 * 2 + 8 * 8 * 4),
        (L.Conv2D(4, 3, strides=2, padding="same", use_bias=False), (8, 8, 2), 2 * 4 * 4 * 4 * 9 * 2),
        (L.SeparableConv2D(4, 3, padding="same"), (8, 8, 2), 2 * (8 * 8 * 2 * 9 + 8 * 8 * 2 * 4) + 8 * 8 * 4),
        (L.DepthwiseConv2D(3, padding="same", use_bias=False), (8, 8, 2), 2 * 8 * 8 * 2 * 9),
        (L.Conv2DTranspose(4, 2, strides=2, use_bias=False), (8, 8, 2), 2 * 8 * 8 * 2 * 4 * 4),
        (L.Conv3D(4, 3, padding="same", use_bias=False), (4, 8, 8, 2), 2 * 4 * 8 * 8 * 4 * 27 * 2),
        # TF registers no statistic for Conv3DBackpropInputV2: liverzoo.models.summary adds it.
        (L.Conv3DTranspose(4, 2, strides=2, use_bias=False), (4, 8, 8, 2), 2 * 4 * 8 * 8 * 2 * 4 * 8),
        (L.Conv3DTranspose(3, 3, strides=2, padding="same", use_bias=False), (2, 4, 4, 2), 2 * 2 * 4 * 4 * 2 * 3 * 27),
        (L.Dense(5), (7,), 2 * 7 * 5 + 5),
    ]


@pytest.mark.parametrize("case", range(len(_layer_cases())))
def test_count_flops_matches_hand_count(case):
    layer, shape, expected = _layer_cases()[case]
    assert count_flops(_single_layer_model(layer, shape)) == expected


def test_count_flops_covers_custom_layers():
    import keras

    class ConvViaOps(keras.layers.Layer):
        """A custom layer whose arithmetic is only visible as TF ops."""

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 8))

        def call(self, x):
            return keras.ops.conv(x, self.kernel, padding="same")

    from liverzoo.layers.conv2d import SubPixelUpsampling

    inputs = keras.Input((8, 8, 2))
    outputs = SubPixelUpsampling(2)(ConvViaOps()(keras.layers.Conv2D(4, 1, use_bias=False)(inputs)))
    model = keras.Model(inputs, outputs)
    # 1x1 conv 2->4, custom 3x3 conv 4->8; depth-to-space moves data only.
    assert count_flops(model) == 2 * 8 * 8 * 4 * 2 + 2 * 8 * 8 * 8 * 9 * 4


def _conv_flops(model):
    """2 * multiply-adds of every convolution, from layer shapes alone."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "SeparableConv2D", "Conv2DTranspose"):
            continue
        c_in = layer.input.shape[-1]
        k = math.prod(layer.kernel_size)
        if kind == "Conv2DTranspose":  # every input pixel scatters a k-window of outputs
            total += 2 * math.prod(layer.input.shape[1:3]) * c_in * layer.filters * k
            continue
        out_pixels = math.prod(layer.output.shape[1:3])
        if kind == "SeparableConv2D":
            total += 2 * out_pixels * c_in * (k + layer.filters)
        else:
            total += 2 * out_pixels * c_in * layer.filters * k
    return total


@pytest.mark.parametrize("name", MODELS_2D)
def test_summary_of_2d_models(name):
    model = models.build(name, input_shape=models.SPECS[name].tiny_input_shape)
    result = models.summary(model)
    assert result["params"] == model.count_params()
    bn_stats = sum(2 * layer.gamma.shape[0] for layer in model.layers if type(layer).__name__ == "BatchNormalization")
    assert result["trainable_params"] == result["params"] - bn_stats
    # Convolutions dominate: the profiler's total is their hand count plus a little element-wise work.
    conv = _conv_flops(model) / 1e9
    assert conv <= result["gflops"] <= 1.15 * conv, (conv, result["gflops"])


def test_summary_defaults_to_the_paper_input_size_and_accepts_models():
    import keras

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs))
    assert models.summary(model) == {"params": 4, "trainable_params": 4, "gflops": (2 * 16 * 2 + 16 * 2) / 1e9}
    small = models.summary("residual_unet", (32, 32, 1))
    paper = models.summary("residual_unet")  # 256 x 256: 64 times the pixels
    assert paper["params"] == small["params"]
    np.testing.assert_allclose(paper["gflops"] / small["gflops"], 64, rtol=0.01)


@pytest.mark.parametrize("call,match", [
    (lambda: models.summary("no_such_net"), "unknown model"),
    (lambda: count_flops(_single_layer_model(__import__("keras").layers.ReLU(), (None, None, 1))), "fully defined"),
])
def test_summary_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_summary_rejects_builder_options_with_a_model():
    model = _single_layer_model(__import__("keras").layers.ReLU(), (4, 4, 1))
    with pytest.raises(ConfigError, match="model name"):
        models.summary(model, separable=False)
