"""2D building blocks shared by the 2D / 2.5D models (and the 2D part of LW-HCN).

Blocks are plain functions over Keras tensors (keras-hub style `apply_*`); the one
operation with no stock Keras layer, sub-pixel upsampling (`depth_to_space`), is a
serializable layer so that every model reloads with `safe_mode=True`.

Normalization: instance norm is `liverzoo.layers.normalization.InstanceNormalization`
(statistics over H, W per sample and channel, with a per-channel affine: nnU-Net's
`InstanceNorm2d(affine=True)`). It computes what `keras.layers.GroupNormalization(groups=-1)`
computes, with the same weights, but its statistics stay accurate in TFLite (see that
module); `LayerNormalization(axis=(1, 2))` would learn an (H, W)-shaped affine, so it
cannot serve.

Papers: depthwise-separable convolution and residual blocks as in
../shared/papers/002_7138868b57b69ed8.txt (Sec. V-A) and 000_ebe0050d52f538d0.txt (Sec. III-B).
"""
import keras
import tensorflow as tf

from liverzoo.errors import ConfigError
from liverzoo.layers.normalization import InstanceNormalization

NORMS = ("batch", "instance", None)
ACTIVATIONS = ("relu", "leaky_relu", None)


@keras.saving.register_keras_serializable(package="liverzoo")
class SubPixelUpsampling(keras.layers.Layer):
    """Sub-pixel upsampling (Shi et al. 2016): rearranges channels into space.

    `(B, H, W, C * scale**2) -> (B, H * scale, W * scale, C)` with `tf.nn.depth_to_space`,
    which has no weights and maps to the TFLite builtin DEPTH_TO_SPACE. Used for the last
    decoder upsampling of the residual U-Net (../shared/papers/002_7138868b57b69ed8.txt,
    Sec. V-A: "simply rearranges the pixel values while increasing the spatial resolution
    and reducing the depth").

    Args:
        scale: integer upsampling factor (>= 2); the input channels must be divisible by
            `scale**2`.
        **kwargs: standard `keras.layers.Layer` arguments (name, dtype, ...).

    Example:
        >>> import numpy as np
        >>> SubPixelUpsampling(2)(np.zeros((1, 4, 4, 8), "float32")).shape
        TensorShape([1, 8, 8, 2])
    """

    def __init__(self, scale=2, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(scale, int) or scale < 2:
            raise ConfigError(f"SubPixelUpsampling: scale must be an integer >= 2, got {scale!r}")
        self.scale = scale

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels % (self.scale**2):
            raise ConfigError(
                f"SubPixelUpsampling: input channels ({channels}) must be divisible by scale**2 ({self.scale**2})"
            )
        super().build(input_shape)

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, self.scale)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        h, w = (None if d is None else d * self.scale for d in (h, w))
        return (b, h, w, None if c is None else c // (self.scale**2))

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale)
        return config


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
    """Returns the activation layer for "relu", "leaky_relu" (slope 0.01, nnU-Net) or None.

    Args:
        activation: "relu", "leaky_relu" or None.
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
    if activation is None:
        return None
    raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def apply_conv_norm_act(
    x,
    filters,
    *,
    kernel_size=3,
    strides=1,
    dilation_rate=1,
    separable=True,
    norm="batch",
    activation="relu",
    use_bias=True,
    name,
):
    """Convolution (depthwise-separable by default) + normalization + activation.

    A depthwise-separable convolution is a per-channel `k x k` depthwise convolution
    followed by a `1 x 1` pointwise convolution: `k*k*C_in + C_in*C_out` weights instead of
    `k*k*C_in*C_out` (../shared/papers/000_ebe0050d52f538d0.txt, Eqs. 2-4). With
    `separable=False` the same block uses a standard convolution (the baselines).

    Args:
        x: input tensor `(B, H, W, C_in)`.
        filters: output channels.
        kernel_size: spatial kernel size.
        strides: convolution stride (strided-conv downsampling).
        dilation_rate: atrous rate (strides must be 1 when it is > 1).
        separable: depthwise-separable (True) or standard (False) convolution.
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu" or None.
        use_bias: whether the convolution has a bias.
        name: prefix of every layer name (`name + "_conv"`, `"_norm"`, `"_act"`).

    Returns:
        The output tensor `(B, H / strides, W / strides, filters)`.

    Example:
        >>> inputs = keras.Input((64, 64, 7))
        >>> y = apply_conv_norm_act(inputs, 32, norm="instance", activation="leaky_relu", name="s1")
        >>> tuple(y.shape)
        (None, 64, 64, 32)
    """
    conv_cls = keras.layers.SeparableConv2D if separable else keras.layers.Conv2D
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding="same",
        use_bias=use_bias,
        name=f"{name}_conv",
    )(x)
    for layer in (normalization(norm, name=f"{name}_norm"), activation_layer(activation, name=f"{name}_act")):
        if layer is not None:
            x = layer(x)
    return x


def apply_residual_block(
    x,
    filters,
    *,
    kernel_size=3,
    separable=True,
    pre_norm=True,
    activation="relu",
    dropout=0.0,
    name,
):
    """Residual block: two convolutions, identity or 1x1-projection shortcut.

    Follows ../shared/papers/002_7138868b57b69ed8.txt (Sec. V-A/B): batch norm before the
    block, two depthwise-separable convolutions (the first sets the depth, the second keeps
    it), a 1x1 "bottleneck" convolution on the shortcut when the depth changes, activation
    after the addition, then dropout.

    Args:
        x: input tensor `(B, H, W, C_in)`.
        filters: output channels.
        kernel_size: spatial kernel size of both convolutions.
        separable: depthwise-separable (True) or standard (False) convolutions.
        pre_norm: batch-normalise the block input (the paper: "before every ResNet block").
        activation: "relu", "leaky_relu" or None.
        dropout: dropout rate after the block (0 disables it).
        name: prefix of every layer name.

    Returns:
        The output tensor `(B, H, W, filters)`.

    Example:
        >>> inputs = keras.Input((32, 32, 64))
        >>> tuple(apply_residual_block(inputs, 128, name="enc2").shape)
        (None, 32, 32, 128)
    """
    if pre_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_prenorm")(x)
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, name=f"{name}_proj")(x)
    y = apply_conv_norm_act(
        x, filters, kernel_size=kernel_size, separable=separable, norm=None, activation=activation, name=f"{name}_c1"
    )
    y = apply_conv_norm_act(
        y, filters, kernel_size=kernel_size, separable=separable, norm=None, activation=None, name=f"{name}_c2"
    )
    y = keras.layers.Add(name=f"{name}_add")([y, shortcut])
    act = activation_layer(activation, name=f"{name}_act")
    if act is not None:
        y = act(y)
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_drop")(y)
    return y


def upsample_bilinear(x, factor, *, name):
    """Bilinear upsampling by an integer factor (half-pixel centres, as TFLite RESIZE_BILINEAR).

    A stock `keras.layers.UpSampling2D(interpolation="bilinear")`: no weights, serializable.

    Args:
        x: input tensor `(B, H, W, C)`.
        factor: integer factor, or a `(fh, fw)` pair.
        name: layer name.

    Returns:
        The tensor `(B, H * fh, W * fw, C)`.

    Example:
        >>> inputs = keras.Input((8, 8, 3))
        >>> tuple(upsample_bilinear(inputs, 4, name="up").shape)
        (None, 32, 32, 3)
    """
    return keras.layers.UpSampling2D(size=factor, interpolation="bilinear", name=name)(x)


def apply_softmax_head(x, num_classes, *, upsample=1, use_bias=True, name):
    """1x1 convolution to class logits, optional bilinear upsampling of the logits, softmax.

    Upsampling the logits (not the probabilities) before the softmax is how deep-supervision
    heads reach the full resolution (docs/design.md).

    Args:
        x: feature tensor `(B, h, w, C)`.
        num_classes: number of output classes.
        upsample: integer factor to bring the logits to the input resolution.
        use_bias: whether the 1x1 convolution has a bias.
        name: prefix of the layer names; the softmax layer is called `name`.

    Returns:
        Softmax probabilities `(B, h * upsample, w * upsample, num_classes)` in float32.

    Example:
        >>> inputs = keras.Input((16, 16, 32))
        >>> tuple(apply_softmax_head(inputs, 3, upsample=4, name="aux").shape)
        (None, 64, 64, 3)
    """
    x = keras.layers.Conv2D(num_classes, 1, use_bias=use_bias, name=f"{name}_logits")(x)
    if upsample > 1:
        x = upsample_bilinear(x, upsample, name=f"{name}_up")
    # float32 softmax keeps the probabilities exact under mixed precision.
    return keras.layers.Softmax(dtype="float32", name=name)(x)
