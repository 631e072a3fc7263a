"""liverzoo/layers/conv_norm_act.py against NumPy references, in 2D and 3D."""
import numpy as np
import pytest

from liverzoo.errors import ConfigError
from liverzoo.layers import conv_norm_act
from tests.layers.numpy_2d import RNG, functional, np_act, np_conv_layer, np_norm


def _conv_class(separable):
    import keras

    return keras.layers.SeparableConv2D if separable else keras.layers.Conv2D


# ---- conv + norm + activation -----------------------------------------------------------
CONV_CASES = [
    # separable, strides, dilation, kernel, norm, activation
    (True, 1, 1, 3, "batch", "relu"),
    (True, 2, 1, 3, "instance", "leaky_relu"),
    (True, 1, 2, 3, None, None),
    (False, 2, 1, 3, "instance", "leaky_relu"),
    (False, 1, 1, 1, "batch", "relu"),
]


@pytest.mark.parametrize("separable,strides,dilation,kernel,norm,activation", CONV_CASES)
def test_conv_norm_act_matches_numpy(separable, strides, dilation, kernel, norm, activation):
    c_in, c_out = 3, 5
    model = functional(conv_norm_act.apply_conv_norm_act, (8, 8, c_in), filters=c_out, kernel_size=kernel,
                       strides=strides, dilation_rate=dilation, conv=_conv_class(separable), norm=norm,
                       activation=activation, name="blk")
    x = RNG.normal(size=(2, 8, 8, c_in)).astype("float32")
    y = np_conv_layer(model.get_layer("blk_conv"), x, separable)
    if norm:
        y = np_norm(model.get_layer("blk_norm"), y, norm)
    y = np_act(y, activation)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), y, rtol=1e-4, atol=1e-4)
    # Parameter count of the paper (000_ebe0050d52f538d0.txt, Sec. III-B): 9c + c*c' vs 9c*c'.
    conv_params = (kernel**2 * c_in + c_in * c_out if separable else kernel**2 * c_in * c_out) + c_out
    assert model.get_layer("blk_conv").count_params() == conv_params


def test_instance_norm_is_per_sample_per_channel():
    layer = conv_norm_act.normalization("instance", name="n")
    x = RNG.normal(3.0, 2.0, size=(2, 6, 6, 4)).astype("float32")
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)
    assert [tuple(w.shape) for w in layer.weights] == [(4,), (4,)]


@pytest.mark.parametrize("fn,kwargs,match", [
    (conv_norm_act.normalization, dict(norm="layer", name="n"), "norm"),
    (conv_norm_act.activation_layer, dict(activation="gelu", name="a"), "activation"),
])
def test_unknown_norm_or_activation(fn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fn(**kwargs)


# ---- 3D: the same function on (B, D, H, W, C) -------------------------------------------
@pytest.mark.parametrize("conv_name,norm,activation,strides", [
    (None, "batch", "elu", 1),
    (None, "instance", "leaky_relu", 2),
    ("FoldedConv3D", "batch", None, 1),
    ("Conv3DTranspose", "batch", "elu", 2),
])
def test_conv_norm_act_3d_is_conv_then_norm_then_act(conv_name, norm, activation, strides):
    import keras

    from liverzoo.layers.conv3d import FoldedConv3D

    conv = {None: None, "FoldedConv3D": FoldedConv3D, "Conv3DTranspose": keras.layers.Conv3DTranspose}[conv_name]
    if conv is FoldedConv3D:
        strides = 1
    model = functional(conv_norm_act.apply_conv_norm_act, (4, 8, 8, 3), filters=5, strides=strides, conv=conv,
                       norm=norm, activation=activation, kernel_initializer="he_normal", name="blk")
    layer = model.get_layer("blk_conv")
    assert type(layer).__name__ == (conv_name or "Conv3D")
    assert layer.get_config()["kernel_initializer"]["class_name"] == "HeNormal"
    x = RNG.normal(size=(2, 4, 8, 8, 3)).astype("float32")
    y = np.asarray(layer(x))
    if norm == "batch":
        gamma, beta, mean, var = model.get_layer("blk_norm").get_weights()
        y = gamma * (y - mean) / np.sqrt(var + 1e-3) + beta
    elif norm == "instance":
        gamma, beta = model.get_layer("blk_norm").get_weights()
        y = gamma * (y - y.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(y.var(axis=(1, 2, 3), keepdims=True) + 1e-5) + beta
    if activation == "elu":
        y = np.where(y > 0, y, np.expm1(np.minimum(y, 0)))
    elif activation:
        y = np_act(y, activation)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), y, rtol=1e-4, atol=1e-4)
    assert [w.name for w in model.layers[1:]] == ["blk_conv"] + (["blk_norm"] if norm else []) + (
        ["blk_act"] if activation else [])


def test_conv_norm_act_rejects_other_ranks():
    import keras

    with pytest.raises(ConfigError, match="2D .* or 3D"):
        conv_norm_act.apply_conv_norm_act(keras.Input((8, 3)), 4, name="c")
