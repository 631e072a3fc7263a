"""Sequential/parallel STS and DSTS convolutions (LW-HCN Eq. (4)-(6)) against stock Keras and NumPy."""
import numpy as np
import pytest

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import FoldedConv3D
from liverzoo.layers.sts import (
    CONV_TYPES,
    DSTSConv3D,
    ParallelSTSConv3D,
    SequentialSTSConv3D,
    apply_spatiotemporal_conv,
    spatiotemporal_conv,
)
from tests.layer_test_utils import run_layer_test
from tests.layers.test_conv3d import assert_litert_matches, numpy_conv3d


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _stock(filters, kernel_size, dilation=1, groups=1, use_bias=False):
    return keras.layers.Conv3D(
        filters, kernel_size, padding="same", dilation_rate=dilation, groups=groups, use_bias=use_bias
    )


def _with_weights(layer, source, input_shape):
    layer.build(input_shape)
    layer.set_weights(source.get_weights())
    return layer


# kernel_size, dilation_rate (in-plane), input shape with odd sizes
CASES = [(3, 1, (2, 5, 7, 9, 4)), (3, 2, (1, 4, 9, 8, 5)), (5, 1, (1, 6, 7, 7, 3)), (3, 4, (1, 3, 11, 10, 2))]


@pytest.mark.parametrize("k,r,shape", CASES)
def test_sequential_equals_spatial_then_temporal_conv3d(k, r, shape):
    x = _random(shape)
    layer = SequentialSTSConv3D(6, kernel_size=k, dilation_rate=r, bias_initializer="random_normal")
    y = np.asarray(layer(x))
    spatial = _with_weights(_stock(6, (1, k, k), (1, r, r)), layer.spatial, shape)
    temporal = _with_weights(_stock(6, (k, 1, 1), use_bias=True), layer.temporal, shape[:-1] + (6,))
    np.testing.assert_allclose(y, np.asarray(temporal(spatial(x))), atol=1e-5)


@pytest.mark.parametrize("k,r,shape", CASES)
def test_parallel_equals_concatenated_branches_and_pointwise(k, r, shape):
    x = _random(shape)
    layer = ParallelSTSConv3D(6, kernel_size=k, dilation_rate=r, bias_initializer="random_normal")
    y = np.asarray(layer(x))
    spatial = _with_weights(_stock(6, (1, k, k), (1, r, r)), layer.spatial, shape)
    temporal = _with_weights(_stock(6, (k, 1, 1)), layer.temporal, shape)
    pointwise = _with_weights(_stock(6, 1, use_bias=True), layer.pointwise, shape[:-1] + (12,))
    expected = pointwise(keras.ops.concatenate([spatial(x), temporal(x)], axis=-1))
    np.testing.assert_allclose(y, np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("k,r,shape", CASES)
def test_dsts_equals_numpy_split_depthwise_and_pointwise(k, r, shape):
    """Eq. (6): first ceil(C/2) channels spatial (1,k,k), the rest temporal (k,1,1), then pointwise."""
    x = _random(shape)
    c = shape[-1]
    layer = DSTSConv3D(6, kernel_size=k, dilation_rate=r, bias_initializer="random_normal")
    y = np.asarray(layer(x))
    cs = c - c // 2
    assert layer.spatial.kernel.shape == (1, k, k, 1, cs)
    assert layer.temporal.kernel.shape == (k, 1, 1, 1, c // 2)
    spatial = numpy_conv3d(x[..., :cs], layer.spatial.kernel.numpy(), None, (1, 1, 1), "same", (1, r, r), groups=cs)
    temporal = numpy_conv3d(x[..., cs:], layer.temporal.kernel.numpy(), None, (1, 1, 1), "same", (1, 1, 1), groups=c // 2)
    both = np.concatenate([spatial, temporal], axis=-1)
    expected = numpy_conv3d(both, *layer.pointwise.get_weights(), (1, 1, 1), "same", (1, 1, 1))
    np.testing.assert_allclose(y, expected, atol=1e-5)
    # The depthwise parts also equal stock grouped Conv3D with the same weights.
    grouped = _with_weights(_stock(cs, (1, k, k), (1, r, r), groups=cs), layer.spatial, shape[:-1] + (cs,))
    np.testing.assert_allclose(np.asarray(grouped(x[..., :cs])), spatial, atol=1e-5)


def _paper_weights(conv_type, m, n, k=3):
    """Weights of one convolution per ../shared/papers/001 Sec. 3.1 (no bias), M -> N channels."""
    spatial, temporal = k * k, k
    return {
        "standard": k**3 * m * n,  # 27c^2
        "sts_seq": spatial * m * n + temporal * n * n,  # 12c^2 for M = N
        "sts_par": (spatial + temporal) * m * n + 2 * n * n,  # 12c^2 + the 2c^2 fusion
        "dsts": spatial * (m - m // 2) + temporal * (m // 2) + m * n,  # c^2 + 6c
    }[conv_type]


@pytest.mark.parametrize("conv_type", CONV_TYPES)
@pytest.mark.parametrize("m,n", [(8, 8), (6, 10), (5, 4)])
def test_parameter_counts_follow_the_paper(conv_type, m, n):
    layer = spatiotemporal_conv(n, conv_type, use_bias=False)
    layer.build((None, 4, 8, 8, m))
    assert layer.count_params() == _paper_weights(conv_type, m, n)


def test_paper_ratios_for_square_convolutions():
    """Sec. 3.1: 27c^2 (standard), 12c^2 (both STS, before our 2c^2 fusion), c^2 + O(c) (DSTS)."""
    c = 64
    assert _paper_weights("standard", c, c) == 27 * c * c
    assert _paper_weights("sts_seq", c, c) == 12 * c * c
    assert _paper_weights("sts_par", c, c) == 14 * c * c
    assert _paper_weights("dsts", c, c) == c * c + 6 * c


def test_standard_is_stock_conv3d_undilated_and_folded_dilated():
    assert type(spatiotemporal_conv(4, "standard")) is keras.layers.Conv3D
    dilated = spatiotemporal_conv(4, "standard", dilation_rate=3)
    assert isinstance(dilated, FoldedConv3D) and dilated.dilation_rate == (1, 3, 3)


def test_block_has_bias_only_without_norm():
    inputs = keras.Input((4, 8, 8, 6))
    model = keras.Model(inputs, apply_spatiotemporal_conv(inputs, 8, "dsts", name="b"))
    assert model.get_layer("b_conv").use_bias is False
    assert isinstance(model.get_layer("b_norm"), keras.layers.BatchNormalization)
    model = keras.Model(inputs, apply_spatiotemporal_conv(inputs, 8, "dsts", norm=None, activation=None, name="c"))
    assert model.get_layer("c_conv").use_bias is True
    assert [layer.name for layer in model.layers[1:]] == ["c_conv"]


@pytest.mark.parametrize("layer_cls", [SequentialSTSConv3D, ParallelSTSConv3D, DSTSConv3D])
def test_run_layer_test(layer_cls, tmp_path):
    kwargs = dict(filters=5, kernel_size=3, dilation_rate=2, use_bias=True, bias_initializer="random_normal")
    run_layer_test(layer_cls, kwargs, _random((2, 3, 8, 8, 4)), (2, 3, 8, 8, 5), tmp_path=tmp_path)


def test_unknown_sizes():
    inputs = keras.Input((None, None, None, 4))
    layer = DSTSConv3D(3, dilation_rate=2)
    model = keras.Model(inputs, layer(inputs))
    for shape in [(1, 3, 8, 8, 4), (2, 5, 6, 10, 4)]:
        x = _random(shape)
        np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(layer(x)), atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: spatiotemporal_conv(4, "conv2plus1d"),
        lambda: DSTSConv3D(0),
        lambda: ParallelSTSConv3D(4, dilation_rate=0),
        lambda: SequentialSTSConv3D(4, kernel_size=(3, 3, 3)),
        lambda: DSTSConv3D(4)(_random((1, 2, 4, 4, 1))),  # one channel cannot be split
    ],
)
def test_bad_arguments_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


@pytest.mark.parametrize("conv_type,dilation", [(t, 2) for t in CONV_TYPES] + [("standard", 1)])
def test_litert_builtins_only(conv_type, dilation):
    inputs = keras.Input((4, 12, 12, 4))
    layer = spatiotemporal_conv(5, conv_type, dilation_rate=dilation)
    model = keras.Model(inputs, layer(inputs))
    # Only the undilated standard conv may (and does) use CONV_3D, which is a builtin.
    ops = assert_litert_matches(model, _random((1, 4, 12, 12, 4)), forbidden=() if dilation == 1 else ("CONV_3D",))
    assert ("CONV_3D" in ops) == (conv_type == "standard" and dilation == 1)
