"""3DYNet and 3DYNet-EE (../shared/papers/003_1722e7be9c09b159.txt): layout, sizes by hand, LiteRT."""
import numpy as np
import pytest

import keras

from liverzoo import models
from liverzoo.errors import ConfigError
from liverzoo.models.ynet3d import build_ynet3d, build_ynet3d_ee
from tests.layers.test_conv3d import assert_litert_matches

TINY = models.SPECS["ynet3d"].tiny_input_shape
TINY_KWARGS = models.SPECS["ynet3d"].tiny_kwargs
BUILDERS = {"concat": build_ynet3d, "sum": build_ynet3d_ee}


def hand_count(base, fusion, num_classes=3):
    """Weights of the paper's description, counted by hand (3x3x3 kernels + biases)."""
    widths = [base * m for m in (1, 2, 4, 8, 8)]
    convs = (2, 2, 4, 4, 4)
    encoder, c_in = 0, 1
    for w, n in zip(widths, convs):
        encoder += (27 * c_in * w + w) + (n - 1) * (27 * w * w + w)
        c_in = w
    fused = [2 * w if fusion == "concat" else w for w in widths]
    decoder, c_in = 0, fused[-1]
    for w, skip in zip(widths[3::-1], fused[3::-1]):
        decoder += 27 * c_in * w + w  # 3x3x3 stride-2 transposed conv
        decoder += 27 * (w + skip) * w + w + 2 * (27 * w * w + w)  # three 3x3x3 convs
        c_in = w
    return 2 * encoder + decoder + widths[0] * num_classes + num_classes


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny(request):
    keras.utils.set_random_seed(0)
    model = BUILDERS[request.param](TINY, **TINY_KWARGS)
    x = np.random.default_rng(0).standard_normal((1,) + TINY).astype("float32")
    return request.param, model, x


def test_paper_width_counts_follow_the_description():
    """The pinned paper-width counts (tests/models/test_params.py) are the hand counts at VGG19's 64."""
    assert hand_count(64, "concat") == 185_923_651
    assert hand_count(64, "sum") == 169_445_443


def test_layout(tiny):
    fusion, model, _ = tiny
    assert model.count_params() == hand_count(TINY_KWARGS["base_filters"], fusion)
    layers = {layer.name: layer for layer in model.layers}
    for k in (1, 2):
        # VGG19: 2, 2, 4, 4, 4 convs of 3x3x3 + ReLU per stage, 2x2x2 max pooling between stages.
        convs = [n for n in layers if n.startswith(f"encoder{k}_stage") and n.endswith("_conv")]
        assert [sum(n.startswith(f"encoder{k}_stage{s}_") for n in convs) for s in range(1, 6)] == [2, 2, 4, 4, 4]
        assert all(layers[n].kernel_size == (3, 3, 3) for n in convs)
        assert sum(type(layers[n]).__name__ == "MaxPooling3D" for n in layers if n.startswith(f"encoder{k}_")) == 4
    # The two encoders read the same input with their own weights.
    first = [layers[f"encoder{k}_stage1_conv1_conv"] for k in (1, 2)]
    assert all(layer.input is model.inputs[0] for layer in first)
    assert not np.allclose(first[0].get_weights()[0], first[1].get_weights()[0])
    fuse_cls = {"concat": "Concatenate", "sum": "Add"}[fusion]
    assert [type(layers[f"fuse{i}"]).__name__ for i in range(1, 6)] == [fuse_cls] * 5
    # Decoder: four blocks of a 3x3x3 stride-2 transposed conv and three 3x3x3 conv + LeakyReLU(0.01).
    for i in range(1, 5):
        up = layers[f"dec{i}_up"]
        assert (type(up).__name__, up.kernel_size, up.strides) == ("Conv3DTranspose", (3, 3, 3), (2, 2, 2))
        assert all(layers[f"dec{i}_conv{j}_act"].negative_slope == 0.01 for j in (1, 2, 3))


def test_litert_builtins_only(tiny):
    """Converts to TFLite builtins (MaxPooling3D as MAX_POOL_2D) and runs in LiteRT within 1e-4 of Keras."""
    _, model, x = tiny
    ops = assert_litert_matches(model, x, forbidden=())
    assert {"MAX_POOL_2D", "CONV_3D_TRANSPOSE"} <= ops


@pytest.mark.parametrize(
    "kwargs,match",
    [(dict(encoder_fusion="mean"), "encoder_fusion"), (dict(base_filters=0), "base_filters")],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_ynet3d(TINY, **kwargs)
