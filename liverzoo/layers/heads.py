"""The softmax output head of every zoo model, for 2D and 3D features.

Upsampling the logits (not the probabilities) before the softmax is how deep-supervision
heads reach the full resolution (docs/design.md): bilinear in 2D (`UpSampling2D`, TFLite
RESIZE_BILINEAR), trilinear in 3D (`TrilinearUpSampling3D`, LV-Net's head,
../shared/papers/004_e35520e2e41b14d6.txt, Fig. 2c).
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv2d import upsample_bilinear
from liverzoo.layers.resample3d import TrilinearUpSampling3D


def apply_softmax_head(x, num_classes, *, upsample=1, use_bias=True, conv=None, name):
    """1x1 (or 1x1x1) convolution to class logits, optional upsampling of the logits, softmax.

    Args:
        x: feature tensor `(B, h, w, C)` or `(B, d, h, w, C)`.
        num_classes: number of output classes.
        upsample: integer factor that brings the logits to the input resolution.
        use_bias: whether the 1x1 convolution has a bias.
        conv: convolution class; default `keras.layers.Conv2D` or `Conv3D` by the rank of
            `x` (`liverzoo.layers.conv3d.FoldedConv3D` gives a 3D head of 2D builtins).
        name: prefix of the layer names; the softmax layer is called `name`.

    Returns:
        Softmax probabilities, spatial sizes times `upsample`, `num_classes` channels, float32.

    Example:
        >>> tuple(apply_softmax_head(keras.Input((16, 16, 32)), 3, upsample=4, name="aux").shape)
        (None, 64, 64, 3)
        >>> tuple(apply_softmax_head(keras.Input((2, 4, 4, 32)), 3, upsample=4, name="aux").shape)
        (None, 8, 16, 16, 3)
    """
    rank = len(x.shape)
    if rank not in (4, 5):
        raise ConfigError(f"{name}: expected a 2D (B, H, W, C) or 3D (B, D, H, W, C) input, got {x.shape}")
    conv = conv or (keras.layers.Conv2D if rank == 4 else keras.layers.Conv3D)
    x = conv(num_classes, 1, use_bias=use_bias, name=f"{name}_logits")(x)
    if upsample > 1:
        up = f"{name}_up"
        x = upsample_bilinear(x, upsample, name=up) if rank == 4 else TrilinearUpSampling3D(upsample, name=up)(x)
    # float32 softmax keeps the probabilities exact under mixed precision.
    return keras.layers.Softmax(dtype="float32", name=name)(x)
