"""Residual U-Net with depthwise-separable convolutions (Pandey et al.).

Paper: ../shared/papers/002_7138868b57b69ed8.txt, "Segmentation of Liver Lesions with
Reduced Complexity Deep Models", Sec. V-A (architecture) and V-B (batch norm, dropout).
"""
import keras

from liverzoo.layers.conv2d import SubPixelUpsampling, apply_residual_block, upsample_bilinear
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layout import STACK_2D
from liverzoo.models.checks import check_builder_args


def build_residual_unet(
    input_shape,
    num_classes=3,
    *,
    base_filters=64,
    depth=4,
    kernel_size=3,
    separable=True,
    dropout=0.05,
    name="residual_unet",
):
    """Residual U-Net: separable residual blocks, bilinear + sub-pixel upsampling.

    Read from the text of ../shared/papers/002_7138868b57b69ed8.txt (Sec. V-A): an encoder
    of `depth` residual blocks (64, 128, 256, 512 channels) with 2x2 max-pooling after each,
    a residual block of 1024 channels at the innermost level, and a decoder of `depth`
    residual blocks (512 ... 64). Each block: batch norm on its input, two depthwise-separable
    convs (the first sets the depth, the second keeps it), a 1x1 projection shortcut when the
    depth changes, ReLU, dropout 0.05. Long skips concatenate encoder features after each
    upsampling; the first `depth - 1` upsamplings are bilinear, the last is sub-pixel
    (depth-to-space, no weights: 128 channels -> 32 at full resolution).

    Parameters: this reading gives 5,298,544 at 256x256x1, not the paper's "2 million" (Sec. VI;
    13.8x fewer than its 30 M U-Net would be 2.2 M). Most of the difference is the 1x1
    projection shortcuts (1.7 M) and the pointwise convs of the 1024-channel bottleneck (1.6 M);
    the paper gives no layer table, so what its model left out cannot be recovered. With
    `separable=False` the same topology has 33,075,271 parameters (the paper's baseline: ~30 M).

    Deviation: the text says "two 2x2 depthwise separable convolution" per block; the default
    is 3x3 because an even 'same' kernel shifts features by half a pixel per layer (18 layers
    would misalign the long skips). `kernel_size=2` builds the literal reading.

    Args:
        input_shape: `(H, W, T)`: H and W divisible by `2**depth`; T slices as channels.
        num_classes: output classes (background, liver, tumor).
        base_filters: channels of the first block (64); doubled at every level.
        depth: number of pooling steps (4).
        kernel_size: spatial kernel of the block convs (see the deviation above).
        separable: depthwise-separable convs (True) or standard convs: the paper's U-Net-like
            baseline with the same topology.
        dropout: dropout rate after every residual block.
        name: model name.

    Returns:
        A `keras.Model` mapping `(B, H, W, T)` to softmax `(B, H, W, num_classes)`.

    Example:
        >>> model = build_residual_unet((256, 256, 1))
        >>> model.output_shape
        (None, 256, 256, 3)
    """
    shape = check_builder_args(name, input_shape, num_classes, layout=STACK_2D, divisor=2**depth)
    block = dict(kernel_size=kernel_size, separable=separable, dropout=dropout)
    inputs = keras.Input(shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        x = apply_residual_block(x, base_filters * 2**level, name=f"enc{level + 1}", **block)
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"enc{level + 1}_pool")(x)
    x = apply_residual_block(x, base_filters * 2**depth, name="bottleneck", **block)
    for level in reversed(range(depth)):
        if level > 0:
            x = upsample_bilinear(x, 2, name=f"dec{level + 1}_up")
        else:
            x = SubPixelUpsampling(2, name=f"dec{level + 1}_up")(x)
        x = keras.layers.Concatenate(name=f"dec{level + 1}_concat")([x, skips[level]])
        x = apply_residual_block(x, base_filters * 2**level, name=f"dec{level + 1}", **block)
    outputs = apply_softmax_head(x, num_classes, name="segmentation")
    return keras.Model(inputs, outputs, name=name)
