"""LW-HCN: light-weight hybrid convolutional network (Zhang et al., IJCAI 2019).

../shared/papers/001_bb2d5e6c0ac559d5.txt, Sec. 3.2 and Fig. 1: 2D depthwise-separable
convolutions (the stride-8 part of the DeepLabV3+ Xception encoder) run on every slice; the
dimension-transformation layer Z stacks their maps into a 3D map; 3D factorized convolutions
and the DST-ASPP follow, then dropout 0.5; the decoder upsamples bilinearly in the slice
plane and concatenates 2D features of the same slices (2D-to-3D skips) before more 3D
convolutions; the output is one softmax map per input slice.
"""
import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.aspp3d import apply_dst_aspp
from liverzoo.layers.conv3d import FoldedConv3D
from liverzoo.layers.conv_norm_act import apply_conv_norm_act
from liverzoo.layers.dimension import SlicesToVolume, VolumeToSlices
from liverzoo.layers.resample3d import TrilinearUpSampling3D
from liverzoo.layers.sts import CONV_TYPES, apply_spatiotemporal_conv
from liverzoo.layout import VOLUME_3D
from liverzoo.models.checks import check_builder_args
from liverzoo.models.deeplabv3plus.deeplabv3plus import apply_xception_encoder, load_encoder_weights

STRIDE = 8


def _check_input_shape(name, input_shape, num_classes):
    """check_builder_args, also for unknown (None) sizes of a fully convolutional build."""
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else input_shape
    if isinstance(shape, tuple) and len(shape) == VOLUME_3D.rank and None in shape[:3]:
        if shape[3] is None:
            raise ConfigError(f"{name}: input_shape must give the channel count, got {input_shape!r}")
        # Known sizes get the usual checks; unknown H, W must be multiples of 8 when the model
        # runs (otherwise the skip concatenations fail on mismatched sizes).
        known = tuple(STRIDE if d is None else d for d in shape[:3]) + (shape[3],)
        check_builder_args(name, known, num_classes, layout=VOLUME_3D, divisor=(1, STRIDE, STRIDE))
        return shape
    return check_builder_args(name, input_shape, num_classes, layout=VOLUME_3D, divisor=(1, STRIDE, STRIDE))


def _upsample_plane(x, *, name):
    """Bilinear x2 in the slice plane only (the depth is kept), as the paper's decoder does."""
    return TrilinearUpSampling3D((1, 2, 2), name=name)(x)


def build_lw_hcn(
    input_shape=(12, 256, 256, 1),
    num_classes=3,
    *,
    conv_type="dsts",
    encoder_weights=None,
    encoder_filters=(256, 512),
    aspp_filters=576,
    aspp_rates=(2, 4, 6),
    dropout=0.5,
    skip_filters=(48, 32),
    decoder_filters=(256, 128),
    name="lw_hcn",
):
    """LW-HCN for CT sub-volumes `(D, H, W, 1)` (D = slices), softmax per voxel.

    Zhang et al., "Light-Weight Hybrid Convolutional Network for Liver Tumor Segmentation",
    IJCAI 2019, ../shared/papers/001_bb2d5e6c0ac559d5.txt (Sec. 3, Fig. 1, Table 1):

    - 2D encoder: the Aligned-Xception entry flow of DeepLabV3+ up to stride 8 ("P1" 64 ch
      at stride 2, "P2" 128 at 4, "P3" 256 at 8), applied to every slice;
    - Z, then the 3D encoder: one `conv_type` conv + BN + ReLU per `encoder_filters` entry;
    - DST-ASPP (Eq. 7: 1x1x1 branch + rates 2, 4, 6 in the plane), dropout;
    - decoder, twice: bilinear x2 in the plane, concatenation with the 1x1-reduced 2D
      features of that stride ("P2", then "P1") made 3D by Z, two `conv_type` convs;
    - 1x1x1 classifier, bilinear x2 of the logits, softmax.

    The widths are not printed in the paper; the defaults reproduce its Table 1 parameter
    counts within 15% for all four `conv_type`s (see docs/lw_hcn.md and
    tests/models/test_params.py). Fully convolutional: any of D, H, W may be None (H, W
    multiples of 8 at run time). TFLite: "dsts", "sts_seq" and "sts_par" export to builtins
    with 2D ops only; "standard" exports to builtins too (undilated convs as CONV_3D, the
    dilated ASPP convs as FoldedConv3D, since a dilated CONV_3D would need Flex).

    Args:
        input_shape: `(D, H, W, 1)`; H and W multiples of 8; None for a size-agnostic model.
        num_classes: output classes (background, liver, tumor).
        conv_type: 3D convolution of the encoder, ASPP and decoder: "dsts" (the paper's
            LW-HCN), "standard", "sts_seq" or "sts_par" (Table 1 ablation).
        encoder_weights: optional path of a trained DeepLabV3+ (`.keras` or `.weights.h5`)
            whose encoder initialises the 2D part (the paper's initialisation, Sec. 4.2).
        encoder_filters: widths of the 3D encoder convs.
        aspp_filters: DST-ASPP channels.
        aspp_rates: DST-ASPP atrous rates in the plane.
        dropout: dropout rate after the DST-ASPP (0.5 in the paper).
        skip_filters: channels of the reduced 2D skip features at stride 4 and stride 2.
        decoder_filters: widths of the decoder convs at stride 4 and stride 2.
        name: model name.

    Returns:
        A `keras.Model` mapping `(B, D, H, W, 1)` to softmax `(B, D, H, W, num_classes)`.

    Raises:
        ConfigError: bad shapes, classes or conv_type, or unreadable encoder weights.

    Example:
        >>> model = build_lw_hcn((12, 256, 256, 1))
        >>> model.output_shape
        (None, 12, 256, 256, 3)
        >>> build_lw_hcn((None, None, None, 1)).output_shape
        (None, None, None, None, 3)
    """
    shape = _check_input_shape(name, input_shape, num_classes)
    if conv_type not in CONV_TYPES:
        raise ConfigError(f"{name}: conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
    if len(skip_filters) != 2 or len(decoder_filters) != 2:
        raise ConfigError(f"{name}: skip_filters and decoder_filters need one entry per decoder stage (2)")
    if not 0 <= dropout < 1:
        raise ConfigError(f"{name}: dropout must be in [0, 1), got {dropout!r}")

    inputs = keras.Input(shape, name="volume")
    slices = VolumeToSlices(name="slices")(inputs)
    levels = apply_xception_encoder(slices, name="encoder", last_level="P3")

    x = SlicesToVolume(name="z_p3")([levels["P3"], inputs])
    for i, filters in enumerate(encoder_filters):
        x = apply_spatiotemporal_conv(x, filters, conv_type, name=f"encoder3d_{i + 1}")
    x = apply_dst_aspp(x, aspp_filters, rates=aspp_rates, conv_type=conv_type, name="aspp")
    x = keras.layers.Dropout(dropout, name="aspp_dropout")(x)

    for level, skip, filters in zip(("P2", "P1"), skip_filters, decoder_filters):
        stage = f"decoder_{level.lower()}"
        x = _upsample_plane(x, name=f"{stage}_up")
        low = apply_conv_norm_act(
            levels[level], skip, kernel_size=1, use_bias=False, name=f"{stage}_skip"
        )
        low = SlicesToVolume(name=f"{stage}_skip_z")([low, inputs])
        x = keras.layers.Concatenate(name=f"{stage}_concat")([x, low])
        for i in (1, 2):
            x = apply_spatiotemporal_conv(x, filters, conv_type, name=f"{stage}_conv{i}")

    logits = FoldedConv3D(num_classes, 1, name="segmentation_logits")(x)
    logits = _upsample_plane(logits, name="segmentation_up")
    # float32 softmax keeps the probabilities exact under mixed precision.
    outputs = keras.layers.Softmax(dtype="float32", name="segmentation")(logits)
    model = keras.Model(inputs, outputs, name=name)
    if encoder_weights is not None:
        load_encoder_weights(model, encoder_weights, prefix="encoder")
    return model
