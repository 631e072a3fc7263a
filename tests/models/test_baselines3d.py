"""3D U-Net and V-Net baselines against the LV-Net paper's Table 3 (004_e35520e2e41b14d6.txt), and in LiteRT."""
import math
import re

import numpy as np
import pytest

import keras

from liverzoo import models
from liverzoo.errors import ConfigError
from liverzoo.models.baselines3d import build_unet3d, build_vnet
from tests.layers.test_conv3d import assert_litert_matches

PAPER_INPUT = (16, 256, 256, 1)


def _trainable(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def test_unet3d_has_exactly_the_papers_trainable_parameters():
    """Table 3: 16,320,322 (liver only: 2 classes)."""
    assert _trainable(build_unet3d(PAPER_INPUT, num_classes=2)) == 16_320_322


def test_vnet_trainable_parameters():
    """Pinned; Table 3's 65,173,903 within 0.01% (Milletari's layout, batch norm after every conv)."""
    count = _trainable(build_vnet(PAPER_INPUT, num_classes=2))
    assert count == 65_178_770
    assert abs(count - 65_173_903) <= 1e-4 * 65_173_903


def test_vnet_layout():
    """Milletari's stages: 1, 2, 3, 3, 3 convs of 5x5x5 down, 3, 3, 2, 1 up; 2x2x2 stride-2 resampling."""
    model = build_vnet(models.SPECS["vnet"].tiny_input_shape)
    layers = {layer.name: layer for layer in model.layers}
    stage_convs = [n for n in layers if re.fullmatch(r"(enc|dec)\d_conv\d_conv", n)]
    stages = [f"enc{i}" for i in range(1, 6)] + [f"dec{i}" for i in range(4, 0, -1)]
    assert [sum(n.startswith(stage + "_") for n in stage_convs) for stage in stages] == [1, 2, 3, 3, 3, 3, 3, 2, 1]
    assert all(layers[n].kernel_size == (5, 5, 5) for n in stage_convs)
    for i in range(2, 6):
        assert (layers[f"enc{i}_down_conv"].kernel_size, layers[f"enc{i}_down_conv"].strides) == ((2,) * 3, (2,) * 3)
    for i in range(1, 5):
        up = layers[f"dec{i}_up_conv"]
        assert (type(up).__name__, up.kernel_size, up.strides) == ("Conv3DTranspose", (2,) * 3, (2,) * 3)


@pytest.mark.parametrize(
    "builder,kwargs",
    [
        (build_unet3d, {}),
        # The op set does not depend on the widths: a 1/4-width V-Net keeps the test light.
        (build_vnet, dict(filters=(4, 8, 16, 32, 64))),
    ],
    ids=["unet3d", "vnet"],
)
def test_litert_builtins_only(builder, kwargs):
    """Converts to TFLite builtins (no Flex MaxPool3D) and runs in LiteRT within 1e-4 of Keras."""
    name = builder.__name__.removeprefix("build_")
    shape = models.SPECS[name].tiny_input_shape
    keras.utils.set_random_seed(0)
    model = builder(shape, **kwargs)
    x = np.random.default_rng(0).standard_normal((1,) + shape).astype("float32")
    assert_litert_matches(model, x, forbidden=())


@pytest.mark.parametrize(
    "builder,kwargs,match",
    [
        (build_vnet, dict(encoder_convs=(1, 2, 3)), "encoder_convs"),
        (build_vnet, dict(input_shape=(8, 16, 16, 1)), "divisible"),
        (build_unet3d, dict(input_shape=(12, 16, 16, 1)), "divisible"),
        (build_unet3d, dict(num_classes=1), "num_classes"),
    ],
)
def test_bad_arguments(builder, kwargs, match):
    kwargs.setdefault("input_shape", (16, 16, 16, 1))
    with pytest.raises(ConfigError, match=match):
        builder(**kwargs)
