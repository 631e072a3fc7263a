"""DST-ASPP: atrous spatial pyramid pooling of factorized 3D convolutions (LW-HCN Eq. (7)).

../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.2: "we perform a 1 x 1 x 1 convolution, and
three DSTS convolutions with the atrous rates 2, 4, 6 in the spatial dimension. The obtained
feature maps are concatenated and passed through a pointwise convolution layer."
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.sts import apply_pointwise_conv3d, apply_spatiotemporal_conv


def apply_dst_aspp(
    x, filters=256, *, rates=(2, 4, 6), conv_type="dsts", kernel_size=3, norm="batch", activation="relu", name="aspp"
):
    """DST-ASPP (Eq. (7)): a 1x1x1 branch and one atrous factorized conv per rate, fused 1x1x1.

    Every branch and the fusion are followed by normalization and activation, as in the
    DeepLabV3+ ASPP that inspired Eq. (7) (the equation, like Eq. (6), leaves them out).
    With `conv_type` other than "dsts" the same module gives the ablation variants of
    Table 1 (the paper replaces "all 3D convolutions").

    Args:
        x: input tensor `(B, D, H, W, C)`.
        filters: channels of every branch and of the output.
        rates: atrous rates in the slice plane, one branch each (2, 4, 6 in the paper).
        conv_type: "dsts", "sts_seq", "sts_par" or "standard" (see `liverzoo.layers.sts`).
        kernel_size: kernel size k of the atrous branches.
        norm: "batch", "instance" or None.
        activation: "relu", "leaky_relu" or None.
        name: prefix of every layer name.

    Returns:
        The tensor `(B, D, H, W, filters)`.

    Raises:
        ConfigError: for empty or non-positive rates.

    Example:
        >>> inputs = keras.Input((None, None, None, 64))
        >>> tuple(apply_dst_aspp(inputs, 32).shape)
        (None, None, None, None, 32)
    """
    rates = tuple(rates)
    if not rates or not all(isinstance(r, int) and r >= 1 for r in rates):
        raise ConfigError(f"{name}: rates must be a non-empty sequence of positive ints, got {rates!r}")
    branches = [apply_pointwise_conv3d(x, filters, norm=norm, activation=activation, name=f"{name}_1x1")]
    for rate in rates:
        branches.append(
            apply_spatiotemporal_conv(
                x,
                filters,
                conv_type,
                kernel_size=kernel_size,
                dilation_rate=rate,
                norm=norm,
                activation=activation,
                name=f"{name}_rate{rate}",
            )
        )
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    return apply_pointwise_conv3d(y, filters, norm=norm, activation=activation, name=f"{name}_fuse")
