"""3D U-Net, the baseline of the LV-Net and 3DYNet papers, and the 3D blocks the 3D builders share.

Paper figures: ../shared/papers/004_e35520e2e41b14d6.txt, Table 3 (3D U-Net: 16,320,322
trainable parameters, 1,032.80 GFLOPs at 16x256x256); the architecture is Cicek et al.
2016 (reference [13] there, [6] in ../shared/papers/003_1722e7be9c09b159.txt).
"""
import keras

from liverzoo.layers.conv2d import activation_layer, normalization
from liverzoo.layers.resample3d import MaxPooling3D, TrilinearUpSampling3D
from liverzoo.models.checks import check_builder_args

# (first conv, second conv) widths per level, full resolution to bottleneck (Cicek et al.).
UNET3D_FILTERS = ((32, 64), (64, 128), (128, 256), (256, 512))


def _activation(activation, *, name):
    # ELU (V-Net, LV-Net) is not among the 2D blocks' activations.
    if activation == "elu":
        return keras.layers.ELU(name=name)
    return activation_layer(activation, name=name)


def apply_conv3d_norm_act(
    x,
    filters,
    *,
    kernel_size=3,
    strides=1,
    norm="batch",
    activation="relu",
    use_bias=True,
    kernel_initializer="glorot_uniform",
    conv_cls=None,
    name,
):
    """3D convolution ("same" padding) + normalization + activation.

    Args:
        x: input tensor `(B, D, H, W, C_in)`.
        filters: output channels.
        kernel_size: int or `(kd, kh, kw)`.
        strides: int or `(sd, sh, sw)`.
        norm: "batch", "instance" or None (see `liverzoo.layers.conv2d.normalization`).
        activation: "relu", "leaky_relu" (slope 0.01), "elu" or None.
        use_bias: whether the convolution has a bias.
        kernel_initializer: initializer of the convolution kernel.
        conv_cls: convolution class, default `keras.layers.Conv3D` (TFLite CONV_3D);
            `liverzoo.layers.conv3d.FoldedConv3D` computes the same from 2D builtins.
        name: prefix of every layer name (`name + "_conv"`, `"_norm"`, `"_act"`).

    Returns:
        The output tensor `(B, D / sd, H / sh, W / sw, filters)`.

    Example:
        >>> inputs = keras.Input((8, 32, 32, 1))
        >>> tuple(apply_conv3d_norm_act(inputs, 16, strides=2, name="down").shape)
        (None, 4, 16, 16, 16)
    """
    conv_cls = conv_cls or keras.layers.Conv3D
    x = conv_cls(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv",
    )(x)
    for layer in (normalization(norm, name=f"{name}_norm"), _activation(activation, name=f"{name}_act")):
        if layer is not None:
            x = layer(x)
    return x


def apply_softmax_head_3d(x, num_classes, *, upsample=1, conv_cls=None, name):
    """1x1x1 convolution to class logits, trilinear upsampling of the logits, softmax.

    The deep-supervision head of LV-Net (../shared/papers/004_e35520e2e41b14d6.txt,
    Fig. 2c: pointwise convolution, trilinear interpolation, softmax); with `upsample=1`
    the plain output layer of every 3D model.

    Args:
        x: feature tensor `(B, d, h, w, C)`.
        num_classes: number of output classes.
        upsample: integer factor that brings the logits to the input resolution.
        conv_cls: convolution class (default `keras.layers.Conv3D`).
        name: prefix of the layer names; the softmax layer is called `name`.

    Returns:
        Softmax probabilities `(B, d * upsample, h * upsample, w * upsample, num_classes)`, float32.

    Example:
        >>> inputs = keras.Input((2, 4, 4, 32))
        >>> tuple(apply_softmax_head_3d(inputs, 3, upsample=4, name="aux").shape)
        (None, 8, 16, 16, 3)
    """
    x = (conv_cls or keras.layers.Conv3D)(num_classes, 1, name=f"{name}_logits")(x)
    if upsample > 1:
        x = TrilinearUpSampling3D(upsample, name=f"{name}_up")(x)
    # float32 softmax keeps the probabilities exact under mixed precision.
    return keras.layers.Softmax(dtype="float32", name=name)(x)


def _apply_double_conv(x, widths, *, name):
    for i, width in enumerate(widths):
        x = apply_conv3d_norm_act(x, width, name=f"{name}_conv{i + 1}")
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
    shape = check_builder_args(name, input_shape, num_classes, rank=4, divisor=2 ** (len(filters) - 1))
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
    return keras.Model(inputs, apply_softmax_head_3d(x, num_classes, name="segmentation"), name=name)
