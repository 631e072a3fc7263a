"""DST-ASPP (LW-HCN Eq. (7)): branch structure, receptive field, parameter count, export."""
import itertools

import numpy as np
import pytest

import keras

from liverzoo.errors import ConfigError
from liverzoo.layers.aspp3d import apply_dst_aspp
from liverzoo.layers.sts import CONV_TYPES
from tests.layers.test_conv3d import assert_litert_matches


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _aspp_model(input_shape, filters=4, **kwargs):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, apply_dst_aspp(inputs, filters, **kwargs))


def _expected_support(rates, conv_type):
    """Offsets (dz, dy, dx) an impulse reaches through the linear module, per branch of Eq. (7)."""
    support = {(0, 0, 0)}  # the 1x1x1 branch
    for r in rates:
        plane = {(0, a * r, b * r) for a, b in itertools.product((-1, 0, 1), repeat=2)}
        depth = {(t, 0, 0) for t in (-1, 0, 1)}
        if conv_type == "dsts":  # spatial and temporal halves side by side
            support |= plane | depth
        elif conv_type == "standard":  # full 3x3x3 kernel dilated in the plane only
            support |= {(t, y, x) for t in (-1, 0, 1) for _, y, x in plane}
    return support


@pytest.mark.parametrize("conv_type", ["dsts", "standard"])
def test_impulse_response_has_the_branch_receptive_fields(conv_type):
    """Without norm/activation the module is linear; an impulse lights up exactly the union of
    the 1x1x1 branch and the atrous kernels at rates 2, 4, 6 in the plane (depth undilated)."""
    rates = (2, 4, 6)
    model = _aspp_model((5, 17, 17, 2), rates=rates, conv_type=conv_type, norm=None, activation=None)
    for w in model.weights:  # positive weights: no accidental cancellations
        w.assign(np.abs(np.asarray(w)) + 0.1)
    x = np.zeros((1, 5, 17, 17, 2), "float32")
    x[0, 2, 8, 8, :] = 1.0
    response = np.abs(np.asarray(model(x))[0]).sum(axis=-1)
    bias_only = np.abs(np.asarray(model(np.zeros_like(x)))[0]).sum(axis=-1)
    lit = {(z - 2, y - 8, x_ - 8) for z, y, x_ in zip(*np.nonzero(np.abs(response - bias_only) > 1e-6))}
    assert lit == _expected_support(rates, conv_type)


def test_parameter_count_of_eq7():
    """1x1x1 branch C*F, three DSTS branches (6C + C*F each, k = 3), fusion 4F*F; biases without norm."""
    c, f = 8, 6
    model = _aspp_model((3, 8, 8, c), filters=f, norm=None, activation=None)
    expected = (c * f + f) + 3 * (6 * c + c * f + f) + (4 * f * f + f)
    assert model.count_params() == expected


@pytest.mark.parametrize("conv_type", CONV_TYPES)
def test_shapes_and_unknown_sizes(conv_type):
    model = _aspp_model((None, None, None, 6), filters=5, conv_type=conv_type, rates=(2, 3))
    assert model.output_shape == (None, None, None, None, 5)
    names = {layer.name for layer in model.layers}
    assert {"aspp_1x1_conv", "aspp_rate2_conv", "aspp_rate3_conv", "aspp_fuse_conv"} <= names
    assert model.predict(_random((2, 3, 6, 10, 6)), verbose=0).shape == (2, 3, 6, 10, 5)


def test_reload_safe_mode(tmp_path):
    model = _aspp_model((3, 8, 8, 4))
    x = _random((2, 3, 8, 8, 4))
    model.save(tmp_path / "aspp.keras")
    reloaded = keras.models.load_model(tmp_path / "aspp.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-6)


@pytest.mark.parametrize("rates", [(), (2, 0), (2.5,)])
def test_bad_rates_raise_config_error(rates):
    with pytest.raises(ConfigError, match="rates"):
        _aspp_model((3, 8, 8, 4), rates=rates)


def test_litert_builtins_only():
    assert_litert_matches(_aspp_model((4, 16, 16, 4)), _random((1, 4, 16, 16, 4)))
