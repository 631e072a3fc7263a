"""2D nnU-Net (LiTS topology) and its depthwise-separable 2.5D variant, DS nnU-Net.

Paper: ../shared/papers/000_ebe0050d52f538d0.txt, "Multi-Slice Dense-Sparse Learning for
Efficient Liver and Tumor Segmentation" (Zhao et al.), Sec. III-B and Table I; the backbone
is the 2D U-Net nnU-Net (Isensee et al. 2021) configures for LiTS at 512x512.
"""
import keras

from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layout import STACK_2D
from liverzoo.models.checks import check_builder_args

# Feature widths of nnU-Net's 2D plan for LiTS (8 stages, 7 poolings: 512 -> 4).
LITS_2D_FILTERS = (32, 64, 128, 256, 480, 480, 480, 480)
# nnU-Net's planner stops pooling before a feature map edge drops below 4.
MIN_FEATURE_SIZE = 4


def planned_stages(input_shape, num_filters, min_feature_size=MIN_FEATURE_SIZE):
    """Stages nnU-Net's rule gives an (H, W) input: pool while both edges stay >= min_feature_size.

    At most `num_filters` stages. 512x512 gives 8 (the LiTS plan, 512 -> 4), 256x256 gives 7,
    128x128 gives 6. A deeper net would instance-normalise 1x1 or 2x2 maps, where the
    statistics of a single position make the output its bias (no information passes, and
    a full-int8 file gets a zero-range tensor that aborts LiteRT).

    Example:
        >>> planned_stages((128, 128, 7), 8)
        6
    """
    edge, pools = min(input_shape[:2]), 0
    while pools < num_filters - 1 and edge is not None and edge // 2 >= min_feature_size and edge % 2 == 0:
        edge //= 2
        pools += 1
    return pools + 1


def _apply_stage(x, filters, *, strides, separable, name):
    """Two (conv 3x3 + instance norm + LeakyReLU 0.01); the first conv may downsample."""
    for i, s in enumerate((strides, 1)):
        x = apply_conv_norm_act(
            x,
            filters,
            strides=s,
            conv=keras.layers.SeparableConv2D if separable else keras.layers.Conv2D,
            norm="instance",
            activation="leaky_relu",
            name=f"{name}_conv{i + 1}",
        )
    return x


def build_nnunet(
    input_shape,
    num_classes=3,
    *,
    filters=LITS_2D_FILTERS,
    separable=True,
    deep_supervision=True,
    min_feature_size=MIN_FEATURE_SIZE,
    name="ds_nnunet",
):
    """nnU-Net 2D U-Net, with depthwise-separable 3x3 convs (DS nnU-Net) or standard ones.

    Topology of nnU-Net's 2D plan for LiTS: one stage per entry of `filters` (the first
    `planned_stages(input_shape)` of them: as nnU-Net plans a smaller patch, pooling stops
    before a feature map edge drops below `min_feature_size`), each two
    3x3 conv + instance norm + LeakyReLU(0.01); downsampling by a stride-2 first conv;
    upsampling by 2x2 stride-2 transposed convs (no bias), concatenation with the encoder
    stage, then a decoder stage. DS nnU-Net (../shared/papers/000_ebe0050d52f538d0.txt,
    Sec. III-B) makes every 3x3 conv depthwise-separable and takes T adjacent slices as
    channels; the transposed convs and 1x1 heads stay standard. At 512x512 this gives
    7,750,047 parameters for T=7 (paper: 7.7 M) and 41,262,912 for the standard 2D nnU-Net
    with T=1 (paper: 41 M), deep-supervision heads included (they add 4,224).

    Deep supervision (nnU-Net's default, on here): 1x1 heads (no bias) at every decoder
    level except the coarsest (nnU-Net gives that one loss weight 0), logits bilinearly
    upsampled to the input size, then softmax. Outputs: `[main, aux_s2, aux_s4, ...]`, where
    `aux_sK` comes from the decoder level with stride K.

    Args:
        input_shape: `(H, W, T)`: H and W divisible by 2 to the number of poolings
            (128 for the full LiTS plan at 512x512); T odd (the centre slice is predicted).
        num_classes: output classes (background, liver, tumor).
        filters: channels per stage, from full resolution to the bottleneck (stages past
            the planned depth are not built).
        separable: depthwise-separable 3x3 convs (DS nnU-Net) or standard (2D nnU-Net).
        deep_supervision: return `[main, aux...]` instead of the main output alone.
        min_feature_size: smallest bottleneck edge (nnU-Net: 4).
        name: model name.

    Returns:
        A `keras.Model`: softmax `(B, H, W, num_classes)`, or a list of them with deep
        supervision (main first).

    Example:
        >>> model = build_nnunet((256, 256, 7), deep_supervision=False)
        >>> model.output_shape
        (None, 256, 256, 3)
    """
    filters = tuple(filters)
    if len(input_shape) == STACK_2D.rank and all(isinstance(n, int) for n in input_shape[:2]):
        filters = filters[: planned_stages(input_shape, len(filters), min_feature_size)]
    shape = check_builder_args(
        name, input_shape, num_classes, layout=STACK_2D, divisor=2 ** (len(filters) - 1), odd_channels=True
    )
    inputs = keras.Input(shape, name="image")
    x, skips = inputs, []
    for i, f in enumerate(filters):
        x = _apply_stage(x, f, strides=1 if i == 0 else 2, separable=separable, name=f"enc{i + 1}")
        skips.append(x)
    aux = []  # coarse to fine
    for i in reversed(range(len(filters) - 1)):
        x = keras.layers.Conv2DTranspose(filters[i], 2, strides=2, use_bias=False, name=f"dec{i + 1}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[i]])
        x = _apply_stage(x, filters[i], strides=1, separable=separable, name=f"dec{i + 1}")
        if deep_supervision and 0 < i < len(filters) - 2:
            aux.append(apply_softmax_head(x, num_classes, upsample=2**i, use_bias=False, name=f"aux_s{2**i}"))
    main = apply_softmax_head(x, num_classes, use_bias=False, name="segmentation")
    if not deep_supervision:
        return keras.Model(inputs, main, name=name)
    return keras.Model(inputs, [main] + aux[::-1], name=name)


def build_ds_nnunet(input_shape, num_classes=3, *, deep_supervision=True, filters=LITS_2D_FILTERS, name="ds_nnunet"):
    """DS nnU-Net: 2.5D nnU-Net with depthwise-separable convs (T = 7 slices by default).

    ../shared/papers/000_ebe0050d52f538d0.txt (Sec. III-B, Table I: 7.7 M parameters).

    Args:
        input_shape: `(H, W, T)`, T odd (the paper: T = 7); sizes as in `build_nnunet`.
        num_classes, deep_supervision, filters, name: as in `build_nnunet`.

    Returns:
        `build_nnunet(..., separable=True)`.

    Example:
        >>> build_ds_nnunet((512, 512, 7)).count_params()
        7750047
    """
    return build_nnunet(
        input_shape, num_classes, filters=filters, separable=True, deep_supervision=deep_supervision, name=name
    )


def build_nnunet_2d(input_shape, num_classes=3, *, deep_supervision=True, filters=LITS_2D_FILTERS, name="nnunet_2d"):
    """2D nnU-Net baseline with standard convs (Table I of 000_ebe0050d52f538d0.txt: 41 M).

    With T > 1 slices it is the paper's nnU-Net-DS / nnU-Net-DSD fed with slice stacks.

    Args:
        input_shape: `(H, W, T)`, T odd (T = 1: plain 2D); sizes as in `build_nnunet`.
        num_classes, deep_supervision, filters, name: as in `build_nnunet`.

    Returns:
        `build_nnunet(..., separable=False)`.

    Example:
        >>> build_nnunet_2d((512, 512, 1)).count_params()
        41262912
    """
    return build_nnunet(
        input_shape, num_classes, filters=filters, separable=False, deep_supervision=deep_supervision, name=name
    )
