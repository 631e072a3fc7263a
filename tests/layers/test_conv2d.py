"""liverzoo/layers/conv2d.py against NumPy references (conv, norm, depth-to-space, bilinear)."""
import numpy as np
import pytest

from liverzoo.errors import ConfigError
from liverzoo.layers import conv2d
from tests.layer_test_utils import run_layer_test

RNG = np.random.default_rng(0)


# ---- NumPy references -------------------------------------------------------------------
def np_conv2d(x, kernel, *, strides=1, dilation=1, depthwise=False):
    """TF 'same'-padded 2D convolution; `depthwise`: kernel (k, k, C, 1), one filter per channel."""
    k = kernel.shape[0]
    span = (k - 1) * dilation + 1
    out_hw = [-(-n // strides) for n in x.shape[1:3]]
    pads = [max((o - 1) * strides + span - n, 0) for o, n in zip(out_hw, x.shape[1:3])]
    xp = np.pad(x, ((0, 0), (pads[0] // 2, pads[0] - pads[0] // 2), (pads[1] // 2, pads[1] - pads[1] // 2), (0, 0)))
    out = 0.0
    for i in range(k):
        for j in range(k):
            patch = xp[
                :,
                i * dilation : i * dilation + (out_hw[0] - 1) * strides + 1 : strides,
                j * dilation : j * dilation + (out_hw[1] - 1) * strides + 1 : strides,
            ]
            out = out + (patch * kernel[i, j, :, 0] if depthwise else patch @ kernel[i, j])
    return out


def np_conv_layer(layer, x, separable):
    """The Conv2D/SeparableConv2D `layer` computed with NumPy from its weights."""
    w = layer.get_weights()
    opts = dict(strides=layer.strides[0], dilation=layer.dilation_rate[0])
    if separable:
        y = np_conv2d(x, w[0], depthwise=True, **opts) @ w[1][0, 0]
    else:
        y = np_conv2d(x, w[0], **opts)
    return y + w[-1] if layer.use_bias else y


def np_norm(layer, x, norm):
    if norm == "batch":
        gamma, beta, mean, var = layer.get_weights()
        return gamma * (x - mean) / np.sqrt(var + layer.epsilon) + beta
    gamma, beta = layer.get_weights()
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return gamma * (x - mean) / np.sqrt(var + 1e-5) + beta


def np_act(x, activation):
    if activation is None:
        return x
    return np.where(x > 0, x, x * {"relu": 0.0, "leaky_relu": 0.01}[activation])


def np_depth_to_space(x, r):
    b, h, w, c = x.shape
    c_out = c // (r * r)
    out = np.zeros((b, h * r, w * r, c_out), x.dtype)
    for i in range(r):
        for j in range(r):
            out[:, i::r, j::r, :] = x[..., (i * r + j) * c_out : (i * r + j + 1) * c_out]
    return out


def np_bilinear(x, f):
    """Half-pixel-centre bilinear upsampling (TF2 resize / TFLite half_pixel_centers)."""
    for axis in (1, 2):
        n = x.shape[axis]
        src = np.clip((np.arange(n * f) + 0.5) / f - 0.5, 0, n - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n - 1)
        shape = [1, 1, 1, 1]
        shape[axis] = -1
        w = (src - lo).reshape(shape)
        x = np.take(x, lo, axis=axis) * (1 - w) + np.take(x, hi, axis=axis) * w
    return x


def randomize(model):
    """Random weights everywhere (BN statistics included, variances positive)."""
    model.set_weights([RNG.uniform(0.5, 1.5, w.shape).astype("float32") if "variance" in v.path
                       else RNG.normal(0, 0.5, w.shape).astype("float32")
                       for v, w in zip(model.weights, model.get_weights())])


def functional(fn, input_shape, **kwargs):
    import keras

    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, fn(inputs, **kwargs))
    randomize(model)
    return model


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


# ---- conv + norm + activation -----------------------------------------------------------
CONV_CASES = [
    # separable, strides, dilation, kernel, norm, activation
    (True, 1, 1, 3, "batch", "relu"),
    (True, 2, 1, 3, "instance", "leaky_relu"),
    (True, 1, 2, 3, None, None),
    (False, 2, 1, 3, "instance", "leaky_relu"),
    (False, 1, 1, 1, "batch", "relu"),
]


@pytest.mark.parametrize("separable,strides,dilation,kernel,norm,activation", CONV_CASES)
def test_conv_norm_act_matches_numpy(separable, strides, dilation, kernel, norm, activation):
    c_in, c_out = 3, 5
    model = functional(conv2d.apply_conv_norm_act, (8, 8, c_in), filters=c_out, kernel_size=kernel,
                       strides=strides, dilation_rate=dilation, separable=separable, norm=norm,
                       activation=activation, name="blk")
    x = RNG.normal(size=(2, 8, 8, c_in)).astype("float32")
    y = np_conv_layer(model.get_layer("blk_conv"), x, separable)
    if norm:
        y = np_norm(model.get_layer("blk_norm"), y, norm)
    y = np_act(y, activation)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), y, rtol=1e-4, atol=1e-4)
    # Parameter count of the paper (000_ebe0050d52f538d0.txt, Sec. III-B): 9c + c*c' vs 9c*c'.
    conv_params = (kernel**2 * c_in + c_in * c_out if separable else kernel**2 * c_in * c_out) + c_out
    assert model.get_layer("blk_conv").count_params() == conv_params


def test_instance_norm_is_per_sample_per_channel():
    layer = conv2d.normalization("instance", name="n")
    x = RNG.normal(3.0, 2.0, size=(2, 6, 6, 4)).astype("float32")
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(1, 2)), 1, atol=1e-3)
    assert [tuple(w.shape) for w in layer.weights] == [(4,), (4,)]


@pytest.mark.parametrize("fn,kwargs,match", [
    (conv2d.normalization, dict(norm="layer", name="n"), "norm"),
    (conv2d.activation_layer, dict(activation="gelu", name="a"), "activation"),
])
def test_unknown_norm_or_activation(fn, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        fn(**kwargs)


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


# ---- bilinear upsampling and softmax head -----------------------------------------------
@pytest.mark.parametrize("factor,in_shape", [(2, (1, 4, 5, 2)), (4, (2, 3, 3, 1)), (8, (1, 2, 2, 3))])
def test_upsample_bilinear_matches_numpy_half_pixel(factor, in_shape):
    import keras

    x = RNG.normal(size=in_shape).astype("float32")
    inputs = keras.Input(in_shape[1:])
    model = keras.Model(inputs, conv2d.upsample_bilinear(inputs, factor, name="up"))
    np.testing.assert_allclose(np.asarray(model(x)), np_bilinear(x, factor), atol=1e-5)


def test_softmax_head_upsamples_logits_then_normalises():
    model = functional(conv2d.apply_softmax_head, (4, 4, 6), num_classes=3, upsample=2, name="head")
    x = RNG.normal(size=(2, 4, 4, 6)).astype("float32")
    logits = np_bilinear(np_conv_layer(model.get_layer("head_logits"), x, False), 2)
    expected = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(x)), expected, atol=1e-5)
