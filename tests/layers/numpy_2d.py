"""NumPy references of the 2D blocks (conv, norm, activation, depth-to-space, bilinear) for the layer tests."""
import numpy as np

RNG = np.random.default_rng(0)


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
