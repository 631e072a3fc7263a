"""2D building blocks shared by the 2D / 2.5D models (and the 2D part of LW-HCN).

Blocks are plain functions over Keras tensors (keras-hub style `apply_*`); the one
operation with no stock Keras layer, sub-pixel upsampling (`depth_to_space`), is a
serializable layer so that every model reloads with `safe_mode=True`.

The conv + norm + activation block they are made of is `liverzoo.layers.conv_norm_act`
(one function for 2D and 3D); the softmax head is `liverzoo.layers.heads`.

Papers: depthwise-separable convolution and residual blocks as in
../shared/papers/002_7138868b57b69ed8.txt (Sec. V-A) and 000_ebe0050d52f538d0.txt (Sec. III-B).
"""
import keras
import tensorflow as tf

from liverzoo.errors import ConfigError
from liverzoo.layers.conv_norm_act import activation_layer, apply_conv_norm_act

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
    conv = dict(kernel_size=kernel_size, conv=keras.layers.SeparableConv2D if separable else keras.layers.Conv2D)
    y = apply_conv_norm_act(x, filters, norm=None, activation=activation, name=f"{name}_c1", **conv)
    y = apply_conv_norm_act(y, filters, norm=None, activation=None, name=f"{name}_c2", **conv)
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
