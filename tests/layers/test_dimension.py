"""The dimension-transformation layer Z (SlicesToVolume) and its inverse (VolumeToSlices)."""
import numpy as np
import pytest

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.dimension import SlicesToVolume, VolumeToSlices
from tests.layer_test_utils import run_layer_test
from tests.layers.test_conv3d import assert_litert_matches


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_fold_puts_slice_d_of_volume_b_at_row_b_times_d():
    x = _random((2, 3, 4, 5, 2))
    folded = np.asarray(VolumeToSlices()(x))
    assert folded.shape == (6, 4, 5, 2)
    for b in range(2):
        for d in range(3):
            np.testing.assert_array_equal(folded[b * 3 + d], x[b, d])


@pytest.mark.parametrize("use_reference", [False, True])
def test_z_inverts_the_fold(use_reference):
    x = _random((2, 3, 4, 5, 2))
    folded = VolumeToSlices()(x)
    z = SlicesToVolume() if use_reference else SlicesToVolume(depth=3)
    volume = z([folded, x]) if use_reference else z(folded)
    np.testing.assert_array_equal(np.asarray(volume), x)


def test_per_slice_2d_conv_through_z_equals_a_1xkxk_conv3d():
    """2D layers between the fold and Z act on each slice: a (1, k, k) Conv3D."""
    inputs = keras.Input((None, None, None, 3))
    conv2d = keras.layers.Conv2D(4, 3, padding="same", bias_initializer="random_normal")
    volume = SlicesToVolume()([conv2d(VolumeToSlices()(inputs)), inputs])
    model = keras.Model(inputs, volume)
    assert model.output_shape == (None, None, None, None, 4)
    conv3d = keras.layers.Conv3D(4, (1, 3, 3), padding="same")
    conv3d.build((None, None, None, None, 3))
    kernel, bias = conv2d.get_weights()
    conv3d.set_weights([kernel[None], bias])
    for shape in [(1, 4, 6, 7, 3), (2, 3, 5, 5, 3)]:  # unknown sizes: two shapes, one graph
        x = _random(shape)
        np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(conv3d(x)), atol=1e-5)


def test_static_output_shapes():
    inputs = keras.Input((12, 32, 32, 1))
    folded = VolumeToSlices()(inputs)
    assert tuple(folded.shape) == (None, 32, 32, 1)
    maps = keras.layers.Conv2D(8, 3, strides=8, padding="same")(folded)
    assert tuple(SlicesToVolume()([maps, inputs]).shape) == (None, 12, 4, 4, 8)
    assert tuple(SlicesToVolume(depth=12)(maps).shape) == (None, 12, 4, 4, 8)


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,shape,expected",
    [(VolumeToSlices, {}, (2, 3, 4, 4, 2), (6, 4, 4, 2)), (SlicesToVolume, dict(depth=3), (6, 4, 4, 2), (2, 3, 4, 4, 2))],
)
def test_run_layer_test(layer_cls, init_kwargs, shape, expected, tmp_path):
    run_layer_test(layer_cls, init_kwargs, _random(shape), expected, tmp_path=tmp_path)


def test_reference_form_reloads_safe_mode(tmp_path):
    inputs = keras.Input((None, None, None, 2))
    maps = keras.layers.Conv2D(3, 1)(VolumeToSlices(name="fold")(inputs))
    model = keras.Model(inputs, SlicesToVolume(name="z")([maps, inputs]))
    model.save(tmp_path / "z.keras")
    reloaded = keras.models.load_model(tmp_path / "z.keras", safe_mode=True)
    x = _random((2, 3, 4, 4, 2))
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SlicesToVolume(depth=0),
        lambda: SlicesToVolume()(_random((6, 4, 4, 2))),  # no source for D
        lambda: SlicesToVolume(depth=3)([_random((6, 4, 4, 2)), _random((2, 3, 4, 4, 2))]),  # two sources
        lambda: VolumeToSlices()(keras.Input((4, 4, 2))),
    ],
)
def test_bad_use_raises_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_litert_is_reshape_only():
    inputs = keras.Input((3, 8, 8, 2))
    maps = keras.layers.Conv2D(4, 3, padding="same")(VolumeToSlices()(inputs))
    model = keras.Model(inputs, SlicesToVolume()([maps, inputs]))
    ops = assert_litert_matches(model, _random((1, 3, 8, 8, 2)))
    assert ops == {"RESHAPE", "CONV_2D"}
