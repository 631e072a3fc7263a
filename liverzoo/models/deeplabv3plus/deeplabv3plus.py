"""DeepLabV3+ (Chen et al., ECCV 2018) with an Aligned-Xception encoder, for CT slices.

LW-HCN (../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 4.1) initialises its 2D bottom
encoder (stride 8) from a DeepLabV3+ trained on LiTS. The encoder here is therefore a
function, `apply_xception_encoder`, that returns named feature levels and names every layer
`name + "_..."`; `load_encoder_weights` copies those layers by name from a trained
DeepLabV3+ into any model that contains the same encoder layers.

Pre-trained ImageNet/COCO weights cannot be fetched offline: `load_encoder_weights` takes
a local `.keras` / `.weights.h5` file of a DeepLabV3+ trained with this code.
"""
import os

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv2d import upsample_bilinear
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.heads import apply_softmax_head
from liverzoo.layout import STACK_2D
from liverzoo.models.checks import check_builder_args

LEVELS = ("P1", "P2", "P3", "P4")
OUTPUT_STRIDE = 16
# Every 3x3 conv past the entry flow is depthwise-separable (Xception, ASPP, decoder).
SEPARABLE = keras.layers.SeparableConv2D


def _apply_xception_module(x, filters, *, strides=1, dilation_rate=1, shortcut="conv", name):
    """Three separable conv+BN+ReLU, the last strided, plus a shortcut ("conv", "sum" or None)."""
    y = x
    for i, f in enumerate(filters):
        last = i == len(filters) - 1
        y = apply_conv_norm_act(
            y,
            f,
            strides=strides if last else 1,
            dilation_rate=dilation_rate,
            conv=SEPARABLE,
            use_bias=False,
            name=f"{name}_sep{i + 1}",
        )
    if shortcut == "conv":
        s = keras.layers.Conv2D(filters[-1], 1, strides=strides, use_bias=False, name=f"{name}_skip")(x)
        s = keras.layers.BatchNormalization(name=f"{name}_skip_norm")(s)
        y = keras.layers.Add(name=f"{name}_add")([y, s])
    elif shortcut == "sum":
        y = keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def apply_xception_encoder(x, *, name="encoder", last_level="P4", middle_blocks=16):
    """Aligned-Xception encoder of DeepLabV3+ (output stride 16), as named feature levels.

    Entry flow: two 3x3 convs (32 stride 2, 64) -> "P1" (stride 2); Xception modules of
    depthwise-separable convs 128 -> "P2" (stride 4), 256 -> "P3" (stride 8), 728 (stride 16);
    middle flow: `middle_blocks` residual modules of 728; exit flow: module (728, 1024, 1024)
    and separable convs 1536, 1536, 2048 at atrous rate 2 -> "P4" (stride 16). Every layer is
    named `name + "_..."`, so an encoder cut at "P3" (LW-HCN's stride-8 2D part,
    ../shared/papers/001_bb2d5e6c0ac559d5.txt) has the same layer names and weight shapes as
    the start of the full one. Works on any channel count (1-channel CT, T-slice stacks).

    Args:
        x: input tensor `(B, H, W, C)`; H and W divisible by the stride of `last_level`.
        name: prefix of every layer name.
        last_level: deepest level to build: "P1", "P2", "P3" or "P4".
        middle_blocks: number of middle-flow modules (16 in Xception-65).

    Returns:
        dict level name -> tensor, levels "P1" up to `last_level` ("P<k>" has stride 2**k).

    Example:
        >>> inputs = keras.Input((64, 64, 1))
        >>> levels = apply_xception_encoder(inputs, last_level="P3")
        >>> {k: tuple(v.shape) for k, v in levels.items()}["P3"]
        (None, 8, 8, 256)
    """
    if last_level not in LEVELS:
        raise ConfigError(f"last_level must be one of {LEVELS}, got {last_level!r}")
    stop = LEVELS.index(last_level)
    x = apply_conv_norm_act(x, 32, strides=2, use_bias=False, name=f"{name}_entry1")
    x = apply_conv_norm_act(x, 64, use_bias=False, name=f"{name}_entry2")
    levels = {"P1": x}
    for level, filters in (("P2", 128), ("P3", 256)):
        if len(levels) > stop:
            return levels
        x = _apply_xception_module(x, (filters,) * 3, strides=2, name=f"{name}_{level.lower()}")
        levels[level] = x
    if len(levels) > stop:
        return levels
    x = _apply_xception_module(x, (728,) * 3, strides=2, name=f"{name}_entry_out")
    for i in range(middle_blocks):
        x = _apply_xception_module(x, (728,) * 3, shortcut="sum", name=f"{name}_middle{i + 1}")
    x = _apply_xception_module(x, (728, 1024, 1024), name=f"{name}_exit1")
    x = _apply_xception_module(x, (1536, 1536, 2048), dilation_rate=2, shortcut=None, name=f"{name}_exit2")
    levels["P4"] = x
    return levels


def apply_aspp(x, *, filters=256, rates=(6, 12, 18), dropout=0.1, name="aspp"):
    """Atrous spatial pyramid pooling of DeepLabV3+ with depthwise-separable atrous convs.

    Branches: 1x1 conv, one 3x3 separable conv per atrous rate, and image pooling (global
    average, 1x1 conv, broadcast back); concatenated and fused by a 1x1 conv. The input must
    have a static spatial size (the pooled branch is upsampled to it).

    Args:
        x: feature tensor `(B, h, w, C)`.
        filters: channels of every branch and of the output.
        rates: atrous rates of the separable branches (6, 12, 18 at output stride 16).
        dropout: dropout rate after the fusion.
        name: prefix of every layer name.

    Returns:
        The tensor `(B, h, w, filters)`.

    Example:
        >>> inputs = keras.Input((16, 16, 64))
        >>> tuple(apply_aspp(inputs, filters=32).shape)
        (None, 16, 16, 32)
    """
    h, w = x.shape[1], x.shape[2]
    branches = [apply_conv_norm_act(x, filters, kernel_size=1, use_bias=False, name=f"{name}_1x1")]
    for rate in rates:
        branches.append(
            apply_conv_norm_act(x, filters, dilation_rate=rate, conv=SEPARABLE, use_bias=False, name=f"{name}_rate{rate}")
        )
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    pooled = apply_conv_norm_act(
        pooled, filters, kernel_size=1, use_bias=False, name=f"{name}_pool_proj"
    )
    branches.append(upsample_bilinear(pooled, (h, w), name=f"{name}_pool_up"))
    y = keras.layers.Concatenate(name=f"{name}_concat")(branches)
    y = apply_conv_norm_act(y, filters, kernel_size=1, use_bias=False, name=f"{name}_fuse")
    return keras.layers.Dropout(dropout, name=f"{name}_drop")(y)


def build_deeplabv3plus(
    input_shape,
    num_classes=3,
    *,
    middle_blocks=16,
    aspp_filters=256,
    aspp_rates=(6, 12, 18),
    low_level_filters=48,
    decoder_filters=256,
    name="deeplabv3plus",
):
    """DeepLabV3+ for CT slices: Aligned-Xception encoder (OS 16), ASPP, light decoder.

    Chen et al., "Encoder-decoder with atrous separable convolution for semantic image
    segmentation", ECCV 2018, as the 2D baseline and encoder donor of LW-HCN
    (../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 4.1 and Table 3). The decoder reduces the
    stride-4 encoder features ("P2") to 48 channels, concatenates the 4x-upsampled ASPP output,
    applies two 3x3 separable convs and upsamples the logits 4x to the input size.

    Pre-trained ImageNet/COCO weights are not downloadable offline; to start from trained
    weights, pass a local file to `load_encoder_weights` (or `model.load_weights`).

    Args:
        input_shape: `(H, W, T)`, H and W divisible by 16; T slices as channels (T=1: one slice).
        num_classes: output classes (background, liver, tumor).
        middle_blocks: Xception middle-flow modules (16 = Xception-65 of DeepLabV3+).
        aspp_filters: ASPP channels.
        aspp_rates: ASPP atrous rates.
        low_level_filters: channels of the reduced stride-4 features.
        decoder_filters: channels of the decoder convs.
        name: model name.

    Returns:
        A `keras.Model` mapping `(B, H, W, T)` to softmax `(B, H, W, num_classes)`.

    Example:
        >>> model = build_deeplabv3plus((256, 256, 1))
        >>> model.output_shape
        (None, 256, 256, 3)
    """
    shape = check_builder_args(name, input_shape, num_classes, layout=STACK_2D, divisor=OUTPUT_STRIDE)
    inputs = keras.Input(shape, name="image")
    levels = apply_xception_encoder(inputs, name="encoder", middle_blocks=middle_blocks)
    x = apply_aspp(levels["P4"], filters=aspp_filters, rates=aspp_rates, name="aspp")
    x = upsample_bilinear(x, OUTPUT_STRIDE // 4, name="decoder_up")
    low = apply_conv_norm_act(
        levels["P2"], low_level_filters, kernel_size=1, use_bias=False, name="decoder_low"
    )
    x = keras.layers.Concatenate(name="decoder_concat")([x, low])
    for i in (1, 2):
        x = apply_conv_norm_act(x, decoder_filters, conv=SEPARABLE, use_bias=False, name=f"decoder_conv{i}")
    outputs = apply_softmax_head(x, num_classes, upsample=4, name="segmentation")
    return keras.Model(inputs, outputs, name=name)


def _nested_layers(model):
    """Every layer of `model`, descending into nested models/layers with sublayers."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _nested_layers(layer)


def _source_model(weights_path, source_kwargs, channels):
    if weights_path.endswith(".keras"):
        # Importing the layers registers liverzoo classes for the reload.
        import liverzoo.layers  # noqa: F401

        return keras.models.load_model(weights_path, compile=False, safe_mode=True)
    kwargs = dict(source_kwargs or {})
    kwargs.setdefault("input_shape", (64, 64, channels))
    source = build_deeplabv3plus(**kwargs)
    source.load_weights(weights_path)
    return source


def load_encoder_weights(model, weights_path, prefix="encoder", *, source_kwargs=None):
    """Copies encoder weights, layer by layer by name, from a trained DeepLabV3+ into `model`.

    Every layer of `model` (nested models included) whose name starts with `prefix + "_"`
    receives the weights of the same-named layer of the DeepLabV3+ in `weights_path`. This is
    how LW-HCN's 2D bottom encoder is initialised (../shared/papers/001_bb2d5e6c0ac559d5.txt,
    Sec. 4.1). Hub weights (ImageNet/COCO) cannot be fetched offline: give a local file.

    Args:
        model: the receiving `keras.Model` (built with `apply_xception_encoder(name=prefix)`).
        weights_path: a `.keras` model file, or a `.weights.h5` file of a model built by
            `build_deeplabv3plus(**source_kwargs)`.
        prefix: the encoder's layer-name prefix.
        source_kwargs: for `.weights.h5` only: the `build_deeplabv3plus` arguments of the
            trained model (default: default options; input channels taken from `model`).

    Returns:
        The number of layers whose weights were copied.

    Raises:
        ConfigError: missing or unreadable file, no encoder layers in `model`, a layer missing
            from the source, or mismatching weight shapes.

    Example:
        >>> lw_hcn = build_lw_hcn((12, 256, 256, 1))  # doctest: +SKIP
        >>> load_encoder_weights(lw_hcn, "runs/deeplabv3plus/best.keras")  # doctest: +SKIP
        20
    """
    weights_path = os.fspath(weights_path)
    if not os.path.isfile(weights_path):
        raise ConfigError(f"encoder weights file {weights_path!r} does not exist")
    if not weights_path.endswith((".keras", ".weights.h5")):
        raise ConfigError(f"encoder weights file {weights_path!r}: expected a .keras or .weights.h5 file")
    targets = [layer for layer in _nested_layers(model) if layer.name.startswith(prefix + "_") and layer.weights]
    if not targets:
        raise ConfigError(f"model {model.name!r} has no layers named {prefix + '_*'} with weights")
    entry = next((layer for layer in targets if layer.name == f"{prefix}_entry1_conv"), None)
    channels = entry.kernel.shape[-2] if entry is not None else 1
    try:
        source = _source_model(weights_path, source_kwargs, channels)
    except (ValueError, OSError, KeyError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot read encoder weights from {weights_path!r}: {first_line}") from e
    source_layers = {layer.name: layer for layer in _nested_layers(source)}
    updates = []
    for layer in targets:
        if layer.name not in source_layers:
            raise ConfigError(f"{weights_path!r} has no layer {layer.name!r}")
        values = source_layers[layer.name].get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != shapes:
            raise ConfigError(
                f"{weights_path!r}: layer {layer.name!r} has weight shapes {[v.shape for v in values]}, "
                f"model expects {shapes}"
            )
        updates.append((layer, values))
    # Check everything before changing anything, so a failure leaves `model` untouched.
    for layer, values in updates:
        layer.set_weights(values)
    return len(updates)
