"""3D U-Net, the baseline of the LV-Net and 3DYNet papers.

Paper figures: ../shared/papers/004_e35520e2e41b14d6.txt, Table 3 (3D U-Net: 16,320,322
trainable parameters, 1,032.80 GFLOPs at 16x256x256); the architecture is Cicek et al.
2016 (reference [13] there, [6] in ../shared/papers/003_1722e7be9c09b159.txt).
"""
import keras

from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layers.resample3d import MaxPooling3D
from liverzoo.layout import VOLUME_3D
from liverzoo.models.checks import check_builder_args

# (first conv, second conv) widths per level, full resolution to bottleneck (Cicek et al.).
UNET3D_FILTERS = ((32, 64), (64, 128), (128, 256), (256, 512))


def _apply_double_conv(x, widths, *, name):
    for i, width in enumerate(widths):
        x = apply_conv_norm_act(x, width, name=f"{name}_conv{i + 1}")
    return x


def build_unet3d(input_shape, num_classes=3, *, filters=UNET3D_FILTERS, name="unet3d"):
    """3D U-Net (Cicek et al. 2016), sized as the LV-Net paper's baseline.

    Each level: two 3x3x3 conv + batch norm + ReLU; 2x2x2 max pooling between levels
    (`liverzoo.layers.resample3d.MaxPooling3D`, TFLite builtins); the decoder upsamples
    by 2 (nearest, no weights), concatenates the encoder level and applies two convs as
    wide as that level's output; a 1x1x1 conv and softmax give the classes. With the default
    widths and 2 classes this has exactly the 16,320,322 trainable parameters of
    ../shared/papers/004_e35520e2e41b14d6.txt, Table 3; Cicek's learned 2x2x2 up-convolutions
    would add 2.7 M, so the baseline measured there upsamples without weights.

    Args:
        input_shape: `(D, H, W, 1)`, every size divisible by `2 ** (len(filters) - 1)` (8).
        num_classes: output classes (the LV-Net paper: 2, liver; the zoo: 3).
        filters: `(first, second)` conv widths per level, full resolution to bottleneck.
        name: model name.

    Returns:
        A `keras.Model` with softmax output `(B, D, H, W, num_classes)`.

    Example:
        >>> model = build_unet3d((16, 256, 256, 1), num_classes=2)
        >>> sum(int(w.numpy().size) for w in model.trainable_weights)
        16320322
    """
    filters = tuple(tuple(level) for level in filters)
    shape = check_builder_args(name, input_shape, num_classes, layout=VOLUME_3D, divisor=2 ** (len(filters) - 1))
    inputs = keras.Input(shape, name="image")
    x, skips = inputs, []
    for i, widths in enumerate(filters):
        if i:
            x = MaxPooling3D(2, name=f"enc{i + 1}_pool")(x)
        x = _apply_double_conv(x, widths, name=f"enc{i + 1}")
        skips.append(x)
    for i in reversed(range(len(filters) - 1)):
        x = keras.layers.UpSampling3D(2, name=f"dec{i + 1}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{i + 1}_concat")([x, skips[i]])
        x = _apply_double_conv(x, (filters[i][1],) * 2, name=f"dec{i + 1}")
    return keras.Model(inputs, apply_softmax_head(x, num_classes, name="segmentation"), name=name)
