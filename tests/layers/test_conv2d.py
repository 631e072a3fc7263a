"""liverzoo/layers/conv2d.py against NumPy references (depth-to-space, residual block, bilinear)."""
import numpy as np
import pytest

from liverzoo.errors import ConfigError
from liverzoo.layers import conv2d
from tests.layer_test_utils import run_layer_test
from tests.layers.numpy_2d import (
    RNG,
    functional,
    np_act,
    np_bilinear,
    np_conv_layer,
    np_depth_to_space,
    np_norm,
)


# ---- SubPixelUpsampling -----------------------------------------------------------------
@pytest.mark.parametrize("scale,in_shape", [(2, (2, 4, 6, 8)), (3, (1, 3, 2, 18)), (2, (1, 5, 5, 4))])
def test_sub_pixel_upsampling_matches_numpy(scale, in_shape, tmp_path):
    x = RNG.normal(size=in_shape).astype("float32")
    b, h, w, c = in_shape
    expected_shape = (b, h * scale, w * scale, c // scale**2)
    out = run_layer_test(conv2d.SubPixelUpsampling, dict(scale=scale), x, expected_shape, tmp_path=tmp_path)
    np.testing.assert_array_equal(out, np_depth_to_space(x, scale))


@pytest.mark.parametrize("kwargs,in_shape,match", [
    (dict(scale=1), (1, 4, 4, 4), "scale"),
    (dict(scale=2.0), (1, 4, 4, 4), "scale"),
    (dict(scale=2), (1, 4, 4, 6), "divisible"),
])
def test_sub_pixel_upsampling_rejects_bad_arguments(kwargs, in_shape, match):
    with pytest.raises(ConfigError, match=match):
        conv2d.SubPixelUpsampling(**kwargs)(np.zeros(in_shape, "float32"))


# ---- residual block ---------------------------------------------------------------------
@pytest.mark.parametrize("c_in,filters,separable", [(3, 6, True), (6, 6, True), (4, 2, False)])
def test_residual_block_matches_numpy(c_in, filters, separable):
    model = functional(conv2d.apply_residual_block, (8, 8, c_in), filters=filters, separable=separable,
                       dropout=0.05, name="res")
    names = {layer.name for layer in model.layers}
    assert ("res_proj" in names) == (c_in != filters)  # 1x1 projection only when depth changes
    x = RNG.normal(size=(2, 8, 8, c_in)).astype("float32")
    xn = np_norm(model.get_layer("res_prenorm"), x, "batch")
    h = np_act(np_conv_layer(model.get_layer("res_c1_conv"), xn, separable), "relu")
    h = np_conv_layer(model.get_layer("res_c2_conv"), h, separable)
    shortcut = np_conv_layer(model.get_layer("res_proj"), xn, False) if c_in != filters else xn
    expected = np_act(h + shortcut, "relu")
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, rtol=1e-4, atol=1e-4)


# ---- bilinear upsampling -------------------------------------------------------------
@pytest.mark.parametrize("factor,in_shape", [(2, (1, 4, 5, 2)), (4, (2, 3, 3, 1)), (8, (1, 2, 2, 3))])
def test_upsample_bilinear_matches_numpy_half_pixel(factor, in_shape):
    import keras

    x = RNG.normal(size=in_shape).astype("float32")
    inputs = keras.Input(in_shape[1:])
    model = keras.Model(inputs, conv2d.upsample_bilinear(inputs, factor, name="up"))
    np.testing.assert_allclose(np.asarray(model(x)), np_bilinear(x, factor), atol=1e-5)
