"""The blocks of LV-Net: the 3D inverted residual block and the down/up-sampling module.

Paper: ../shared/papers/004_e35520e2e41b14d6.txt, Sec. 2.1, Fig. 2a-b. Built from TFLite
builtins that XNNPACK runs (`FoldedConv3D`, `DepthwiseConv3D`, 2D pooling, bilinear resize).
"""
import keras

from liverzoo.layers.conv3d import DepthwiseConv3D, FoldedConv3D
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.resample3d import AveragePooling3D, TrilinearUpSampling3D


def apply_inverted_residual_3d(x, *, expansion=4, kernel_size=5, name):
    """3D inverted residual bottleneck block (IRB) of LV-Net, after MobileNetV2.

    1x1x1 expansion to `expansion * C` channels + BN + ELU, `kernel_size`^3 depthwise
    convolution + BN + ELU, 1x1x1 projection back to C + BN (linear bottleneck), plus the
    input. Weights: `k^3 C e + 2 C^2 e` (+ batch norm), 12.65% of a 5x5x5 convolution at
    C = 64 (../shared/papers/004_e35520e2e41b14d6.txt, Sec. 2.1, Table 1, Fig. 2a).

    Args:
        x: input tensor `(B, D, H, W, C)`.
        expansion: channel expansion rate epsilon (the paper fixes 4).
        kernel_size: depthwise kernel size (the paper: 5).
        name: prefix of the layer names.

    Returns:
        A tensor shaped like `x`.

    Example:
        >>> inputs = keras.Input((4, 8, 8, 64))
        >>> model = keras.Model(inputs, apply_inverted_residual_3d(inputs, name="irb"))
        >>> sum(int(w.numpy().size) for w in model.trainable_weights)  # 64,768 + BN scales/offsets
        65920
    """
    channels = x.shape[-1]
    y = apply_conv_norm_act(
        x, expansion * channels, kernel_size=1, activation="elu", use_bias=False, conv=FoldedConv3D,
        name=f"{name}_expand",
    )
    y = DepthwiseConv3D(kernel_size, padding="same", use_bias=False, name=f"{name}_depthwise")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_depthwise_norm")(y)
    y = keras.layers.ELU(name=f"{name}_depthwise_act")(y)
    y = apply_conv_norm_act(
        y, channels, kernel_size=1, activation=None, use_bias=False, conv=FoldedConv3D, name=f"{name}_project"
    )
    return keras.layers.Add(name=f"{name}_add")([x, y])


def apply_resample_3d(x, filters, *, down, name):
    """LV-Net's down/up-sampling module: pointwise conv + BN + ELU and 2x average pooling / trilinear up.

    Pooling and trilinear interpolation are linear, so they commute with the pointwise
    convolution: it runs on the low-resolution side (pooling first going down, upsampling
    last going up), 8x cheaper than the other way round (Sec. 2.1, Fig. 2b).

    Args:
        x: input tensor `(B, D, H, W, C)`.
        filters: output channels of the pointwise convolution.
        down: average-pool 2x first (encoder) or upsample 2x last (decoder).
        name: prefix of the layer names.

    Returns:
        The tensor `(B, D / 2, H / 2, W / 2, filters)` going down, `(B, 2D, 2H, 2W, filters)` going up.

    Example:
        >>> tuple(apply_resample_3d(keras.Input((4, 8, 8, 16)), 32, down=True, name="enc2_down").shape)
        (None, 2, 4, 4, 32)
    """
    if down:
        x = AveragePooling3D(2, name=f"{name}_pool")(x)
    x = apply_conv_norm_act(
        x, filters, kernel_size=1, activation="elu", use_bias=False, conv=FoldedConv3D, name=name
    )
    return x if down else TrilinearUpSampling3D(2, name=f"{name}_trilinear")(x)
