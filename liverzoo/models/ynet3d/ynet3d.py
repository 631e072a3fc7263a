"""3DYNet and 3DYNet-EE: two 3D VGG19 encoders, one 3D U-Net decoder, long skip connections.

Paper: ../shared/papers/003_1722e7be9c09b159.txt, "3DYNet: a densely interconnected network
for volumetric liver and tumors segmentation" (d'Albenzio et al.), Sec. 2 and 3.3. The paper
reports no parameter count; it notes the VGG19 encoders make the network heavy (Sec. 4).
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layers.resample3d import MaxPooling3D
from liverzoo.layout import VOLUME_3D
from liverzoo.models.checks import check_builder_args

# VGG19 without its dense layers, in 3D: 3x3x3 convolutions per stage, and stage widths in
# multiples of the first stage's (64 in VGG19). The decoder mirrors the widths (3D U-Net style).
VGG19_CONVS = (2, 2, 4, 4, 4)
VGG19_WIDTHS = (1, 2, 4, 8, 8)
ENCODER_FUSIONS = ("concat", "sum")
# "The normal distribution initializer [16] (He et al.)", Sec. 3.2.
HE_NORMAL = "he_normal"


def apply_vgg19_encoder_3d(x, stages, *, name):
    """A 3D VGG19 encoder: stages of 3x3x3 conv + ReLU with 2x2x2 max pooling in between.

    The pooling after the last stage is left out: its output is the bottleneck that the
    decoder's first up-sampling starts from.

    Args:
        x: input tensor `(B, D, H, W, C)`.
        stages: `(channels, convolutions)` per stage.
        name: prefix of the layer names.

    Returns:
        The stage outputs before pooling, full resolution first (the last one is the
        bottleneck at stride `2 ** (len(stages) - 1)`).

    Example:
        >>> inputs = keras.Input((16, 32, 32, 1))
        >>> stages = [(64, 2), (128, 2), (256, 4), (512, 4), (512, 4)]
        >>> [tuple(f.shape[1:]) for f in apply_vgg19_encoder_3d(inputs, stages, name="enc")][-1]
        (1, 2, 2, 512)
    """
    features = []
    for i, (width, convs) in enumerate(stages):
        if i:
            x = MaxPooling3D(2, name=f"{name}_stage{i}_pool")(x)
        for j in range(convs):
            x = apply_conv_norm_act(
                x, width, norm=None, kernel_initializer=HE_NORMAL, name=f"{name}_stage{i + 1}_conv{j + 1}"
            )
        features.append(x)
    return features


def build_ynet3d(input_shape, num_classes=3, *, encoder_fusion="concat", base_filters=64, name="ynet3d"):
    """3DYNet (`encoder_fusion="concat"`) or 3DYNet-EE (`"sum"`).

    Two encoders of the same 3D VGG19 architecture (Sec. 2: two stages of two 3x3x3 conv
    + ReLU, three stages of four, 2x2x2 max pooling between stages; separate weights) both
    read the input CT volume, as in the Y-Net the paper builds on (its reference [10]).
    At every resolution their features (before pooling) are fused, by concatenation
    (3DYNet) or by a sum (3DYNet-EE, Sec. 3.3), and passed over long skip connections to a
    3D U-Net-style decoder of four blocks: 3x3x3 stride-2 transposed convolution,
    concatenation with the fused encoder features, three 3x3x3 conv + LeakyReLU(0.01); a
    1x1x1 convolution and softmax give the classes. The bottleneck (last encoder stage) is
    fused the same way. Widths: VGG19's 64, 128, 256, 512, 512 in the encoders, mirrored
    (512, 256, 128, 64) in the decoder. Activations as in the paper: ReLU in the encoders,
    LeakyReLU in the decoder; the paper mentions no normalization, none is used.

    Args:
        input_shape: `(D, H, W, 1)`, every size divisible by 16 (the paper: 64x256x256).
        num_classes: output classes (background, liver, tumor).
        encoder_fusion: "concat" (3DYNet) or "sum" (3DYNet-EE).
        base_filters: width of the first encoder stage (VGG19: 64); the others scale with
            it. Smaller values only make unit tests affordable (186 M parameters at 64).
        name: model name.

    Returns:
        A `keras.Model` with softmax output `(B, D, H, W, num_classes)`.

    Example:
        >>> model = build_ynet3d((64, 256, 256, 1))
        >>> model.count_params()
        185923651
    """
    shape = check_builder_args(name, input_shape, num_classes, layout=VOLUME_3D, divisor=2 ** (len(VGG19_CONVS) - 1))
    if encoder_fusion not in ENCODER_FUSIONS:
        raise ConfigError(f"{name}: encoder_fusion must be one of {ENCODER_FUSIONS}, got {encoder_fusion!r}")
    if not isinstance(base_filters, int) or base_filters < 1:
        raise ConfigError(f"{name}: base_filters must be a positive integer, got {base_filters!r}")
    stages = [(base_filters * m, n) for m, n in zip(VGG19_WIDTHS, VGG19_CONVS)]
    inputs = keras.Input(shape, name="image")
    fuse = keras.layers.Concatenate if encoder_fusion == "concat" else keras.layers.Add
    pairs = zip(*(apply_vgg19_encoder_3d(inputs, stages, name=f"encoder{k}") for k in (1, 2)))
    fused = [fuse(name=f"fuse{i + 1}")(list(pair)) for i, pair in enumerate(pairs)]
    x = fused.pop()
    for i in reversed(range(len(fused))):
        width = stages[i][0]
        x = keras.layers.Conv3DTranspose(
            width, 3, strides=2, padding="same", kernel_initializer=HE_NORMAL, name=f"dec{i + 1}_up"
        )(x)
        x = keras.layers.Concatenate(name=f"dec{i + 1}_concat")([x, fused[i]])
        for j in range(3):
            x = apply_conv_norm_act(
                x, width, norm=None, activation="leaky_relu", kernel_initializer=HE_NORMAL,
                name=f"dec{i + 1}_conv{j + 1}",
            )
    return keras.Model(inputs, apply_softmax_head(x, num_classes, name="segmentation"), name=name)


def build_ynet3d_ee(input_shape, num_classes=3, *, base_filters=64, name="ynet3d_ee"):
    """3DYNet-EE: 3DYNet whose two encoders are summed before the skip connections.

    ../shared/papers/003_1722e7be9c09b159.txt, Sec. 3.3 ("the feature maps of each encoder
    are first summed and then concatenated into the decoder layers of equal resolution").
    See `build_ynet3d`.

    Args:
        input_shape: `(D, H, W, 1)`, every size divisible by 16 (the paper: 64x256x256).
        num_classes: output classes.
        base_filters: width of the first encoder stage (VGG19: 64).
        name: model name.

    Returns:
        A `keras.Model`, see `build_ynet3d`.

    Example:
        >>> model = build_ynet3d_ee((64, 256, 256, 1))
        >>> model.output_shape
        (None, 64, 256, 256, 3)
    """
    return build_ynet3d(input_shape, num_classes, encoder_fusion="sum", base_filters=base_filters, name=name)
