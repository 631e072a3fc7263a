"""V-Net (Milletari et al. 2016), the baseline that LV-Net compresses.

Paper figures: ../shared/papers/004_e35520e2e41b14d6.txt, Table 3 (V-Net: 65,173,903
trainable parameters, 516.12 GFLOPs at 16x256x256); V-Net is reference [14] there and
[9] in ../shared/papers/003_1722e7be9c09b159.txt.
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layout import VOLUME_3D
from liverzoo.models.checks import check_builder_args

# Channels per resolution level and 5x5x5 convolutions per stage (Milletari et al., Fig. 1).
VNET_FILTERS = (16, 32, 64, 128, 256)
VNET_ENCODER_CONVS = (1, 2, 3, 3, 3)
VNET_DECODER_CONVS = (3, 3, 2, 1)  # coarse to fine


def _apply_residual_stage(x, shortcut, width, num_convs, *, name):
    """`num_convs` 5x5x5 conv + BN + ELU; the stage input is added before the last ELU."""
    for i in range(num_convs):
        last = i == num_convs - 1
        x = apply_conv_norm_act(
            x, width, kernel_size=5, activation=None if last else "elu", name=f"{name}_conv{i + 1}"
        )
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ELU(name=f"{name}_act")(x)


def build_vnet(
    input_shape,
    num_classes=3,
    *,
    filters=VNET_FILTERS,
    encoder_convs=VNET_ENCODER_CONVS,
    decoder_convs=VNET_DECODER_CONVS,
    name="vnet",
):
    """V-Net: residual stages of 5x5x5 convolutions, strided-conv down, transposed-conv up.

    Milletari et al.'s layout: one stage per level with 1, 2, 3, 3, 3 convolutions
    (16 to 256 channels); 2x2x2 stride-2 convolutions double the channels on the way down;
    2x2x2 stride-2 transposed convolutions bring half of the level's channels up, which are
    concatenated with the encoder stage and processed by 3, 3, 2, 1 convolutions; every
    stage adds its input (the first one the input volume, broadcast over its channels);
    a 1x1x1 convolution and softmax give the classes. As in the widely used PyTorch port
    and in the LV-Net paper's setup, every convolution is followed by batch normalization
    and ELU replaces Milletari's PReLU. With 2 classes this has 65,178,770 trainable
    parameters, 0.007% above the 65,173,903 of ../shared/papers/004_e35520e2e41b14d6.txt,
    Table 3 (whose remaining difference is not recoverable from the paper).

    Args:
        input_shape: `(D, H, W, 1)`, every size divisible by `2 ** (len(filters) - 1)` (16).
        num_classes: output classes (the LV-Net paper: 2, liver; the zoo: 3).
        filters: channels per level, full resolution to bottleneck.
        encoder_convs: 5x5x5 convolutions per encoder stage (one per level).
        decoder_convs: 5x5x5 convolutions per decoder stage, coarse to fine.
        name: model name.

    Returns:
        A `keras.Model` with softmax output `(B, D, H, W, num_classes)`.

    Example:
        >>> model = build_vnet((16, 256, 256, 1), num_classes=2)
        >>> sum(int(w.numpy().size) for w in model.trainable_weights)
        65178770
    """
    filters, encoder_convs, decoder_convs = tuple(filters), tuple(encoder_convs), tuple(decoder_convs)
    shape = check_builder_args(name, input_shape, num_classes, layout=VOLUME_3D, divisor=2 ** (len(filters) - 1))
    if len(encoder_convs) != len(filters) or len(decoder_convs) != len(filters) - 1:
        raise ConfigError(
            f"{name}: need one encoder_convs entry per level ({len(filters)}) and one decoder_convs entry per "
            f"level below the top ({len(filters) - 1}), got {encoder_convs} and {decoder_convs}"
        )
    inputs = keras.Input(shape, name="image")
    x, skips = inputs, []
    for i, (width, n) in enumerate(zip(filters, encoder_convs)):
        shortcut = x
        if i:
            x = shortcut = apply_conv_norm_act(
                x, width, kernel_size=2, strides=2, activation="elu", name=f"enc{i + 1}_down"
            )
        x = _apply_residual_stage(x, shortcut, width, n, name=f"enc{i + 1}")
        skips.append(x)
    for n, i in zip(decoder_convs, reversed(range(len(filters) - 1))):
        width = 2 * filters[i]
        x = apply_conv_norm_act(
            x, filters[i], kernel_size=2, strides=2, activation="elu", conv=keras.layers.Conv3DTranspose,
            name=f"dec{i + 1}_up",
        )
        x = keras.layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[i]])
        x = _apply_residual_stage(x, x, width, n, name=f"dec{i + 1}")
    return keras.Model(inputs, apply_softmax_head(x, num_classes, name="segmentation"), name=name)
