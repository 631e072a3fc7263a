"""LW-HCN specifics: phone export (TFLite builtins in LiteRT), any input size, encoder weights, variants.

The generic checks (shapes, softmax, reload, config, training step, bad shapes) are in
test_zoo.py; parameter counts of the four Table 1 variants are pinned in test_params.py.
"""
import numpy as np
import pytest

import keras
import tensorflow as tf

from liverzoo import models
from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import FoldedConv3D
from liverzoo.layers.sts import DSTSConv3D, ParallelSTSConv3D, SequentialSTSConv3D
from liverzoo.models.deeplabv3plus import build_deeplabv3plus
from liverzoo.models.lw_hcn import build_lw_hcn
from tests.layers.test_conv3d import assert_litert_matches

TINY = models.SPECS["lw_hcn"].tiny_input_shape
# Narrow 3D widths: the same graph structure, quick to convert.
NARROW = dict(encoder_filters=(8, 8), aspp_filters=8, skip_filters=(4, 4), decoder_filters=(8, 4))


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return build_lw_hcn(TINY)


def test_tiny_lw_hcn_runs_in_litert_with_builtins_only(tiny_model):
    """The paper's DSTS network, default widths: builtin ops only, no CONV_3D, LiteRT == Keras."""
    ops = assert_litert_matches(tiny_model, _random((1,) + TINY), forbidden=("CONV_3D",))
    assert {"DEPTHWISE_CONV_2D", "CONV_2D", "RESIZE_BILINEAR"} <= ops


@pytest.mark.parametrize("conv_type", ["standard", "sts_seq", "sts_par"])
def test_ablation_variants_run_in_litert_with_builtins_only(conv_type):
    keras.utils.set_random_seed(0)
    model = build_lw_hcn(TINY, conv_type=conv_type, **NARROW)
    ops = assert_litert_matches(model, _random((1,) + TINY), forbidden=())
    # Undilated standard convs are CONV_3D (a builtin); the dilated ASPP ones are folded.
    assert ("CONV_3D" in ops) == (conv_type == "standard")


def test_any_input_size_gives_the_fixed_size_result(tiny_model):
    """Fully convolutional in D, H, W: one graph with unknown sizes serves several input sizes."""
    free = build_lw_hcn((None, None, None, 1))
    assert free.output_shape == (None, None, None, None, 3)
    free.set_weights(tiny_model.get_weights())
    graph = tf.function(lambda x: free(x, training=False), input_signature=[tf.TensorSpec((None,) * 4 + (1,))])
    x = _random((2,) + TINY)
    np.testing.assert_allclose(graph(x).numpy(), tiny_model(x, training=False).numpy(), atol=1e-5)
    assert graph(_random((1, 5, 48, 40, 1))).shape == (1, 5, 48, 40, 3)
    assert graph.experimental_get_tracing_count() == 1


def test_per_slice_outputs_see_neighbouring_slices(tiny_model):
    """3D context: changing slice 0 changes the prediction of slice 1 (a 2D network would not)."""
    x = _random((1,) + TINY)
    y = tiny_model(x, training=False).numpy()
    x2 = x.copy()
    x2[0, 0] += 1.0
    y2 = tiny_model(x2, training=False).numpy()
    changed = np.abs(y2 - y).max(axis=(0, 2, 3, 4))
    assert changed[0] > 1e-6 and changed[1] > 1e-6


@pytest.mark.parametrize(
    "conv_type,layer_cls",
    [
        ("dsts", DSTSConv3D),
        ("sts_seq", SequentialSTSConv3D),
        ("sts_par", ParallelSTSConv3D),
        ("standard", keras.layers.Conv3D),
    ],
)
def test_conv_type_sets_every_3d_conv(conv_type, layer_cls):
    model = build_lw_hcn(TINY, conv_type=conv_type, **NARROW)
    plain = [f"encoder3d_{i}_conv" for i in (1, 2)]
    plain += [f"decoder_{level}_conv{i}_conv" for level in ("p2", "p1") for i in (1, 2)]
    assert all(type(model.get_layer(name)) is layer_cls for name in plain)
    # DST-ASPP: atrous branches at rates 2, 4, 6 in the plane (the standard conv folded, since
    # a dilated CONV_3D is not a builtin), then dropout 0.5.
    atrous = [model.get_layer(f"aspp_rate{r}_conv") for r in (2, 4, 6)]
    if conv_type == "standard":
        assert all(isinstance(layer, FoldedConv3D) for layer in atrous)
        assert [layer.dilation_rate for layer in atrous] == [(1, r, r) for r in (2, 4, 6)]
    else:
        assert all(type(layer) is layer_cls for layer in atrous)
        assert [layer.dilation_rate for layer in atrous] == [2, 4, 6]
    assert model.get_layer("aspp_dropout").rate == 0.5


def test_encoder_weights_come_from_a_trained_deeplabv3plus(tmp_path):
    keras.utils.set_random_seed(1)
    donor = build_deeplabv3plus((32, 32, 1), middle_blocks=0)
    path = tmp_path / "deeplabv3plus.keras"
    donor.save(path)
    model = build_lw_hcn(TINY, encoder_weights=str(path), **NARROW)
    encoder = [layer for layer in model.layers if layer.name.startswith("encoder_") and layer.weights]
    assert len(encoder) == 4 + 2 * 8  # entry convs + norms; P2 and P3 modules (3 separable + skip, each normed)
    for layer in encoder:
        for mine, theirs in zip(layer.get_weights(), donor.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(mine, theirs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(conv_type="i3d"), "conv_type"),
        (dict(dropout=1.0), "dropout"),
        (dict(skip_filters=(48,)), "skip_filters"),
        (dict(input_shape=(None, None, 30, 1)), "divisible"),
        (dict(input_shape=(None, None, None, None)), "channel"),
        (dict(encoder_weights="/no/such/deeplabv3plus.keras"), "does not exist"),
    ],
)
def test_bad_arguments_raise_config_error(kwargs, match):
    kwargs.setdefault("input_shape", TINY)
    with pytest.raises(ConfigError, match=match):
        build_lw_hcn(**kwargs)
