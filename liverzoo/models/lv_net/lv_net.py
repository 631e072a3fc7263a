"""LV-Net: a lightweight V-Net of 3D inverted residual blocks, for phones.

Paper: ../shared/papers/004_e35520e2e41b14d6.txt, "Lightweight V-Net for Liver Segmentation"
(Lei et al.), Sec. 2 and Figs. 1-2; Table 3: 1,659,282 trainable parameters, 58.07 GFLOPs at
16x256x256. Every layer is built from TFLite builtins that XNNPACK runs (2D convolutions,
depthwise 2D convolutions, 2D pooling, bilinear resize), so the model runs on phones.
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import FoldedConv3D
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layout import VOLUME_3D
from liverzoo.models.checks import check_builder_args
from liverzoo.models.lv_net.blocks import apply_inverted_residual_3d, apply_resample_3d

# V-Net's layout (Milletari et al.) at half its width: channels per level, and inverted
# residual blocks per stage where V-Net has 5x5x5 convolutions (its first stage's single
# convolution is the stem).
LV_NET_FILTERS = (8, 16, 32, 64, 128)
LV_NET_ENCODER_BLOCKS = (2, 3, 3, 3)  # levels 2..5
LV_NET_DECODER_BLOCKS = (3, 3, 2, 1)  # coarse to fine


def build_lv_net(
    input_shape,
    num_classes=3,
    *,
    filters=LV_NET_FILTERS,
    encoder_blocks=LV_NET_ENCODER_BLOCKS,
    decoder_blocks=LV_NET_DECODER_BLOCKS,
    expansion=4,
    kernel_size=5,
    deep_supervision=True,
    name="lv_net",
):
    """LV-Net (../shared/papers/004_e35520e2e41b14d6.txt): V-Net with inverted residual blocks.

    Layout (Fig. 1): a 5x5x5 conv stem (V-Net's first stage); four encoder stages, each a
    down-sampling module (average pooling 2x2x2 + pointwise conv doubling the channels +
    BN + ELU, Fig. 2b) and inverted residual blocks (expansion 4, 5x5x5 depthwise, ELU,
    BN, Fig. 2a); four decoder stages, each an up-sampling module (pointwise conv to the
    skip's width + BN + ELU + trilinear 2x) concatenated with the encoder stage of equal
    resolution, then inverted residual blocks; a pointwise conv and softmax.

    3D deep supervision (Sec. 2.2, Fig. 2c): four heads (pointwise conv, trilinear up to the
    input size, softmax) on the bottleneck (x16) and the first three decoder stages (x8,
    x4, x2); the last decoder stage feeds the main output. Outputs are
    `[main, aux_1, aux_2, aux_3, aux_4]` from the coarsest head to the finest, so the
    paper's loss weights eta_1..eta_4 = 0.2, 0.4, 0.6, 0.8 apply in that order.

    The paper gives neither the widths nor the number of blocks per stage. V-Net's stage
    layout (1, 2, 3, 3, 3 / 3, 3, 2, 1 convolutions) at half its width (8 to 128 channels)
    gives 1,761,562 trainable parameters with 2 classes, 6.2% above the paper's 1,659,282;
    V-Net's own widths with one block per stage would give 2.0 M (+21%). See docs/models3d.md.

    Args:
        input_shape: `(D, H, W, 1)`, every size divisible by `2 ** (len(filters) - 1)` (16);
            the paper: 16 slices of 256x256.
        num_classes: output classes (the paper: 2, liver; the zoo: 3).
        filters: channels per level, full resolution to bottleneck.
        encoder_blocks: inverted residual blocks per encoder stage below the stem.
        decoder_blocks: inverted residual blocks per decoder stage, coarse to fine.
        expansion: expansion rate of the blocks (the paper: 4).
        kernel_size: depthwise kernel size (the paper: 5).
        deep_supervision: return `[main, aux_1, ...]` (one head per level below the top:
            four in the paper) or the main output only.
        name: model name.

    Returns:
        A `keras.Model`: softmax `(B, D, H, W, num_classes)`, or a list of five of them.

    Example:
        >>> model = build_lv_net((16, 256, 256, 1), num_classes=2)
        >>> len(model.outputs), sum(int(w.numpy().size) for w in model.trainable_weights)
        (5, 1761562)
    """
    filters, encoder_blocks, decoder_blocks = tuple(filters), tuple(encoder_blocks), tuple(decoder_blocks)
    levels = len(filters)
    shape = check_builder_args(name, input_shape, num_classes, layout=VOLUME_3D, divisor=2 ** (levels - 1))
    if len(encoder_blocks) != levels - 1 or len(decoder_blocks) != levels - 1:
        raise ConfigError(
            f"{name}: encoder_blocks and decoder_blocks need one entry per level below the stem ({levels - 1}), "
            f"got {encoder_blocks} and {decoder_blocks}"
        )
    inputs = keras.Input(shape, name="image")
    x = apply_conv_norm_act(inputs, filters[0], kernel_size=5, activation="elu", conv=FoldedConv3D, name="stem")
    skips = [x]

    def blocks(x, n, name):
        for j in range(n):
            x = apply_inverted_residual_3d(x, expansion=expansion, kernel_size=kernel_size, name=f"{name}_irb{j + 1}")
        return x

    for i, n in enumerate(encoder_blocks, start=1):
        x = blocks(apply_resample_3d(x, filters[i], down=True, name=f"enc{i + 1}_down"), n, f"enc{i + 1}")
        skips.append(x)
    aux = []
    for n, i in zip(decoder_blocks, reversed(range(levels - 1))):
        if deep_supervision:
            head = f"aux{len(aux) + 1}"
            aux.append(apply_softmax_head(x, num_classes, upsample=2 ** (i + 1), conv=FoldedConv3D, name=head))
        x = apply_resample_3d(x, filters[i], down=False, name=f"dec{i + 1}_up")
        x = blocks(keras.layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[i]]), n, f"dec{i + 1}")
    main = apply_softmax_head(x, num_classes, conv=FoldedConv3D, name="segmentation")
    return keras.Model(inputs, [main] + aux if deep_supervision else main, name=name)
