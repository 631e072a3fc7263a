"""Convolution + normalization + activation, for 2D and 3D tensors alike.

The one conv-norm-act block of the zoo: every 2D, 2.5D and 3D builder uses it, with plain
`norm=` and `activation=` arguments and the convolution class as `conv=` (standard by the
input's rank, or depthwise-separable, transposed, `FoldedConv3D`, ...). Layer names are
`name + "_conv"`, `"_norm"`, `"_act"`, the names every `.keras` file of the zoo stores.

Normalization: instance norm is `liverzoo.layers.normalization.InstanceNormalization`
(statistics over the spatial axes per sample and channel, with a per-channel affine: nnU-Net's
`InstanceNorm2d(affine=True)`). It computes what `keras.layers.GroupNormalization(groups=-1)`
computes, with the same weights, but its statistics stay accurate in TFLite (see that
module); `LayerNormalization(axis=(1, 2))` would learn an (H, W)-shaped affine, so it
cannot serve.
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.normalization import InstanceNormalization

NORMS = ("batch", "instance", None)
ACTIVATIONS = ("relu", "leaky_relu", "elu", None)
# Standard convolution per tensor rank (batch and channel axes included).
_CONV_BY_RANK = {4: keras.layers.Conv2D, 5: keras.layers.Conv3D}


def normalization(norm, *, name):
    """Returns the normalization layer for `norm` ("batch", "instance") or None.

    Args:
        norm: "batch" (BatchNormalization), "instance" (InstanceNormalization, epsilon
            1e-5 as in nnU-Net) or None.
        name: layer name.

    Returns:
        A Keras layer, or None for `norm=None`.

    Example:
        >>> normalization("instance", name="stage1_norm").epsilon
        1e-05
    """
    if norm == "batch":
        return keras.layers.BatchNormalization(name=name)
    if norm == "instance":
        return InstanceNormalization(epsilon=1e-5, name=name)
    if norm is None:
        return None
    raise ConfigError(f"norm must be one of {NORMS}, got {norm!r}")


def activation_layer(activation, *, name):
    """Returns the activation layer for "relu", "leaky_relu" (slope 0.01, nnU-Net), "elu" or None.

    Args:
        activation: "relu", "leaky_relu", "elu" (V-Net, LV-Net) or None.
        name: layer name.

    Returns:
        A Keras layer, or None for `activation=None`.

    Example:
        >>> activation_layer("leaky_relu", name="act").negative_slope
        0.01
    """
    if activation == "relu":
        return keras.layers.ReLU(name=name)
    if activation == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=0.01, name=name)
    if activation == "elu":
        return keras.layers.ELU(name=name)
    if activation is None:
        return None
    raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def apply_norm_act(x, *, norm="batch", activation="relu", name):
    """Normalization then activation (either may be None) after a convolution's output.

    Args:
        x: a convolution's output tensor.
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu", "elu" or None.
        name: prefix of the layer names (`name + "_norm"`, `"_act"`).

    Returns:
        A tensor shaped like `x`.

    Example:
        >>> inputs = keras.Input((4, 8, 8, 16))
        >>> tuple(apply_norm_act(inputs, norm="instance", activation="elu", name="b").shape)
        (None, 4, 8, 8, 16)
    """
    for layer in (normalization(norm, name=f"{name}_norm"), activation_layer(activation, name=f"{name}_act")):
        if layer is not None:
            x = layer(x)
    return x


def apply_conv_norm_act(
    x,
    filters,
    *,
    kernel_size=3,
    strides=1,
    dilation_rate=1,
    conv=None,
    norm="batch",
    activation="relu",
    use_bias=True,
    kernel_initializer=None,
    name,
):
    """Convolution ("same" padding) + normalization + activation, for 2D or 3D inputs.

    A depthwise-separable convolution (`conv=keras.layers.SeparableConv2D`) is a per-channel
    `k x k` depthwise convolution followed by a `1 x 1` pointwise convolution: `k*k*C_in +
    C_in*C_out` weights instead of `k*k*C_in*C_out` (../shared/papers/000_ebe0050d52f538d0.txt,
    Eqs. 2-4).

    Args:
        x: input tensor `(B, H, W, C_in)` or `(B, D, H, W, C_in)`.
        filters: output channels.
        kernel_size: int or per-axis tuple.
        strides: int or per-axis tuple (strided-conv downsampling, or upsampling for a
            transposed `conv`).
        dilation_rate: atrous rate (strides must be 1 when it is > 1).
        conv: convolution class taking `(filters, kernel_size, strides=, padding=, use_bias=,
            name=)`; default `keras.layers.Conv2D` or `Conv3D` by the rank of `x` (TFLite
            CONV_2D / CONV_3D). E.g. `SeparableConv2D`, `Conv3DTranspose`, or
            `liverzoo.layers.conv3d.FoldedConv3D` (a 3D conv from 2D builtins).
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu" (slope 0.01), "elu" or None.
        use_bias: whether the convolution has a bias.
        kernel_initializer: initializer of the convolution kernel (None: the class default).
        name: prefix of every layer name (`name + "_conv"`, `"_norm"`, `"_act"`).

    Returns:
        The output tensor, `filters` channels, spatial sizes divided by `strides`.

    Example:
        >>> inputs = keras.Input((64, 64, 7))
        >>> y = apply_conv_norm_act(inputs, 32, conv=keras.layers.SeparableConv2D, norm="instance",
        ...                         activation="leaky_relu", name="s1")
        >>> tuple(y.shape)
        (None, 64, 64, 32)
        >>> tuple(apply_conv_norm_act(keras.Input((8, 32, 32, 1)), 16, strides=2, name="down").shape)
        (None, 4, 16, 16, 16)
    """
    if conv is None:
        if len(x.shape) not in _CONV_BY_RANK:
            raise ConfigError(f"{name}: expected a 2D (B, H, W, C) or 3D (B, D, H, W, C) input, got {x.shape}")
        conv = _CONV_BY_RANK[len(x.shape)]
    # Only non-defaults are passed: not every convolution class takes every option.
    options = {} if dilation_rate == 1 else dict(dilation_rate=dilation_rate)
    if kernel_initializer is not None:
        options.update(kernel_initializer=kernel_initializer)
    x = conv(filters, kernel_size, strides=strides, padding="same", use_bias=use_bias, name=f"{name}_conv",
             **options)(x)
    return apply_norm_act(x, norm=norm, activation=activation, name=name)
