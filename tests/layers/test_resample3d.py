"""MaxPooling3D, AveragePooling3D and TrilinearUpSampling3D against stock Keras, NumPy and SciPy, and in LiteRT."""
import numpy as np
import pytest
import scipy.ndimage

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.resample3d import AveragePooling3D, MaxPooling3D, TrilinearUpSampling3D
from tests.layer_test_utils import run_layer_test
from tests.layers.test_conv3d import assert_litert_matches, litert_run, tflite_convert_builtins, tflite_op_names

POOLS = [(MaxPooling3D, keras.layers.MaxPooling3D), (AveragePooling3D, keras.layers.AveragePooling3D)]

# pool_size, strides, padding, input shape (odd and even sizes)
POOL_CASES = [
    (2, None, "valid", (2, 4, 6, 8, 3)),
    (2, None, "valid", (2, 5, 7, 9, 3)),
    (2, None, "same", (1, 5, 7, 9, 2)),
    (3, 2, "same", (1, 5, 7, 9, 2)),
    ((2, 3, 2), (1, 2, 3), "same", (1, 5, 7, 9, 2)),
    ((1, 2, 2), None, "valid", (1, 3, 6, 6, 2)),
    ((2, 1, 1), None, "valid", (1, 6, 3, 5, 2)),
    ((3, 3, 1), (2, 1, 1), "valid", (1, 7, 6, 5, 2)),
]

# upsampling factors, input shape
UP_CASES = [
    (2, (2, 3, 4, 5, 2)),
    ((2, 3, 1), (1, 3, 5, 7, 2)),
    ((1, 2, 4), (1, 4, 3, 5, 1)),
    ((3, 1, 2), (1, 5, 4, 3, 2)),
    (1, (1, 2, 3, 3, 2)),
]


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def numpy_trilinear(x, size):
    """Half-pixel linear interpolation along each axis in float64: np.interp clamps to the edges."""
    y = x.astype(np.float64)
    for axis, s in zip((1, 2, 3), size):
        n = y.shape[axis]
        coords = (np.arange(n * s) + 0.5) / s - 0.5
        y = np.apply_along_axis(lambda v: np.interp(coords, np.arange(n), v), axis, y)
    return y


@pytest.mark.parametrize("ours,stock", POOLS)
@pytest.mark.parametrize("pool_size,strides,padding,shape", POOL_CASES)
def test_pooling_equals_stock_keras(ours, stock, pool_size, strides, padding, shape):
    x = _random(shape)
    layer = ours(pool_size, strides=strides, padding=padding)
    y = np.asarray(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, np.asarray(stock(pool_size, strides=strides, padding=padding)(x)), atol=1e-6)


@pytest.mark.parametrize("size,shape", UP_CASES)
def test_trilinear_equals_numpy_and_scipy(size, shape):
    x = _random(shape)
    layer = TrilinearUpSampling3D(size)
    y = np.asarray(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape)
    np.testing.assert_allclose(y, numpy_trilinear(x, layer.size), atol=1e-5)
    zoomed = scipy.ndimage.zoom(x.astype(np.float64), (1, *layer.size, 1), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(y, zoomed, atol=1e-5)


def test_trilinear_keeps_linear_ramps_and_constants():
    """Inside the volume a linear ramp stays linear (half-pixel positions); constants stay constant."""
    d = np.arange(4, dtype="float32")
    ramp = np.broadcast_to(d[None, :, None, None, None], (1, 4, 2, 2, 1))
    y = np.asarray(TrilinearUpSampling3D((2, 1, 1))(ramp))[0, :, 0, 0, 0]
    np.testing.assert_allclose(y, [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3], atol=1e-6)
    ones = np.ones((1, 3, 3, 3, 2), "float32")
    np.testing.assert_allclose(np.asarray(TrilinearUpSampling3D(3)(ones)), 1.0, atol=1e-6)


def test_unknown_sizes_give_the_same_outputs():
    inputs = keras.Input((None, None, None, 2))
    layers = [MaxPooling3D(2), AveragePooling3D(3, 2, "same"), TrilinearUpSampling3D((2, 1, 3))]
    model = keras.Model(inputs, [layer(inputs) for layer in layers])
    assert [tuple(o.shape) for o in model.outputs] == [(None, None, None, None, 2)] * 3
    for shape in [(1, 5, 7, 9, 2), (2, 4, 6, 6, 2)]:
        x = _random(shape)
        mx, avg, up = model.predict(x, verbose=0)
        np.testing.assert_allclose(mx, np.asarray(keras.layers.MaxPooling3D(2)(x)), atol=1e-6)
        np.testing.assert_allclose(avg, np.asarray(keras.layers.AveragePooling3D(3, 2, "same")(x)), atol=1e-6)
        np.testing.assert_allclose(up, numpy_trilinear(x, (2, 1, 3)), atol=1e-5)


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,shape,expected",
    [
        (MaxPooling3D, dict(pool_size=(2, 3, 3), strides=(2, 2, 2), padding="same"), (2, 5, 7, 7, 3), (2, 3, 4, 4, 3)),
        (AveragePooling3D, dict(pool_size=2, strides=None, padding="valid"), (2, 4, 6, 6, 3), (2, 2, 3, 3, 3)),
        (TrilinearUpSampling3D, dict(size=(2, 3, 1)), (2, 3, 3, 4, 2), (2, 6, 9, 4, 2)),
    ],
)
def test_run_layer_test(layer_cls, init_kwargs, shape, expected, tmp_path):
    run_layer_test(layer_cls, init_kwargs, _random(shape), expected, tmp_path=tmp_path)


@pytest.mark.parametrize(
    "layer_cls,init_kwargs",
    [
        (MaxPooling3D, dict(pool_size=0)),
        (MaxPooling3D, dict(pool_size=(2, 2))),
        (AveragePooling3D, dict(pool_size=2, strides=(1, 0, 1))),
        (AveragePooling3D, dict(pool_size=2, padding="causal")),
        (TrilinearUpSampling3D, dict(size=0)),
        (TrilinearUpSampling3D, dict(size=(2, 1.5, 2))),
    ],
)
def test_bad_arguments_raise_config_error(layer_cls, init_kwargs):
    with pytest.raises(ConfigError):
        layer_cls(**init_kwargs)


@pytest.mark.parametrize("layer_cls", [MaxPooling3D, AveragePooling3D, TrilinearUpSampling3D])
def test_rejects_4d_input(layer_cls):
    with pytest.raises(ConfigError, match=layer_cls.__name__):
        layer_cls()(_random((1, 4, 4, 2)))


@pytest.mark.parametrize(
    "layer,shape,expected_op",
    [
        (MaxPooling3D(2), (1, 4, 6, 6, 3), "MAX_POOL_2D"),
        (MaxPooling3D(3, 2, "same"), (1, 5, 7, 9, 2), "MAX_POOL_2D"),
        (AveragePooling3D(2), (1, 4, 6, 6, 3), "AVERAGE_POOL_2D"),
        (AveragePooling3D((2, 3, 2), (1, 2, 3), "same"), (1, 5, 7, 9, 2), "AVERAGE_POOL_2D"),
        (TrilinearUpSampling3D(2), (1, 3, 5, 7, 2), "RESIZE_BILINEAR"),
        (TrilinearUpSampling3D((3, 2, 1)), (1, 3, 4, 5, 2), "RESIZE_BILINEAR"),
    ],
    ids=lambda v: getattr(v, "name", None),
)
def test_litert_builtins_only(layer, shape, expected_op):
    """Converts with TFLITE_BUILTINS only (op list read from the flatbuffer), runs in LiteRT within 1e-4."""
    inputs = keras.Input(shape[1:])
    ops = assert_litert_matches(keras.Model(inputs, layer(inputs)), _random(shape), forbidden=())
    assert expected_op in ops, ops


def test_litert_unknown_sizes():
    """Converted with unknown D, H, W, the layers run in LiteRT at two sizes."""
    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, TrilinearUpSampling3D(2)(AveragePooling3D(2)(MaxPooling3D(3, 1, "same")(inputs))))
    flatbuffer = tflite_convert_builtins(model, (1, None, None, None, 2))
    assert not any(op.startswith("CUSTOM") for op in tflite_op_names(flatbuffer))
    for shape in [(1, 4, 6, 8, 2), (1, 6, 4, 4, 2)]:
        x = _random(shape)
        np.testing.assert_allclose(litert_run(flatbuffer, x), np.asarray(model(x)), atol=1e-4)
