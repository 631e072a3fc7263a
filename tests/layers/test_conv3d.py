"""DepthwiseConv3D and FoldedConv3D against stock Keras Conv3D and a NumPy reference, and in LiteRT.

The LiteRT helpers here (`tflite_convert_builtins`, `tflite_op_names`, `litert_run`) are shared
by the other 3D layer and LW-HCN tests.
"""
import itertools

import numpy as np
import pytest

import keras
import tensorflow as tf

from liverzoo.errors import ConfigError
from liverzoo.layers.conv3d import DepthwiseConv3D, FoldedConv3D, stacked_depth_taps
from tests.layer_test_utils import run_layer_test


# --- LiteRT helpers -------------------------------------------------------------------------


def tflite_convert_builtins(model, input_shape):
    """Converts `model` at a fixed (or partly None) input shape with TFLITE_BUILTINS only."""
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    # Without the trackable object the variables are frozen into constants.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def _operator_names(flatbuffer):
    """Name of each operator code of a .tflite flatbuffer ("CUSTOM:<code>" for custom ops), and the model."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    codes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes < 127 live in the deprecated field; the larger of the two is the real one.
        op = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        codes.append(names[op] if op != schema.BuiltinOperator.CUSTOM else "CUSTOM:" + code.CustomCode().decode())
    return codes, model


def tflite_op_names(flatbuffer):
    """Operator names of a .tflite flatbuffer, read from its schema."""
    return set(_operator_names(flatbuffer)[0])


def tflite_op_counts(flatbuffer):
    """How many operators of each name the first subgraph of a .tflite flatbuffer runs."""
    import collections

    codes, model = _operator_names(flatbuffer)
    graph = model.Subgraphs(0)
    return collections.Counter(codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength()))


def litert_run(flatbuffer, x):
    """Runs a one-input, one-output .tflite model in LiteRT (resizing the input to x.shape)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def assert_litert_matches(model, x, *, input_shape=None, atol=1e-4, forbidden=("CONV_3D",)):
    """Converts with builtins only, checks the op list, runs in LiteRT, compares with Keras."""
    flatbuffer = tflite_convert_builtins(model, input_shape or x.shape)
    ops = tflite_op_names(flatbuffer)
    assert not any(op.startswith("CUSTOM") for op in ops), ops
    assert not ops & set(forbidden), ops
    np.testing.assert_allclose(litert_run(flatbuffer, x), np.asarray(model(x, training=False)), atol=atol)
    return ops


# --- NumPy reference ------------------------------------------------------------------------


def numpy_conv3d(x, kernel, bias, strides, padding, dilation, groups=1):
    """Grouped 3D convolution in float64 with TensorFlow's padding rule (Conv3D's kernel layout)."""
    x = x.astype(np.float64)
    k = kernel.astype(np.float64)
    pads, outs = [], []
    for n, ks, s, r in zip(x.shape[1:4], k.shape[:3], strides, dilation):
        span = (ks - 1) * r + 1
        out = -(-n // s) if padding == "same" else -(-(n - span + 1) // s)
        total = max((out - 1) * s + span - n, 0) if padding == "same" else 0
        pads.append((total // 2, total - total // 2))
        outs.append(out)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    cin_g, n_out = k.shape[3], k.shape[4]
    y = np.zeros((x.shape[0], *outs, n_out))
    for taps in itertools.product(*(range(ks) for ks in k.shape[:3])):
        index = tuple(slice(t * r, t * r + (o - 1) * s + 1, s) for t, r, o, s in zip(taps, dilation, outs, strides))
        patch = xp[(slice(None), *index)].reshape(*y.shape[:4], groups, cin_g)
        w = k[taps].reshape(cin_g, groups, n_out // groups)
        y += np.einsum("bdhwgc,cgn->bdhwgn", patch, w).reshape(y.shape)
    return y + (0 if bias is None else bias)


# --- cases ----------------------------------------------------------------------------------

# kernel_size, strides, dilation_rate, padding, input shape (odd and even sizes)
CONV_CASES = [
    (3, 1, 1, "same", (2, 5, 7, 9, 3)),
    (3, 2, 1, "same", (2, 5, 7, 9, 3)),
    (3, 2, 1, "same", (1, 6, 8, 8, 2)),
    ((1, 3, 3), (1, 2, 2), 1, "valid", (1, 4, 7, 9, 3)),
    ((3, 1, 1), 1, (2, 1, 1), "same", (1, 7, 4, 5, 2)),
    ((3, 1, 1), (2, 1, 1), 1, "same", (1, 7, 3, 3, 2)),
    (5, 1, 1, "same", (1, 6, 7, 8, 2)),
    (3, 1, 2, "valid", (1, 7, 8, 9, 2)),
    (3, 1, (1, 2, 2), "same", (1, 4, 9, 9, 2)),
    ((2, 3, 1), (2, 1, 1), 1, "valid", (1, 7, 8, 9, 2)),
    (1, 2, 1, "same", (1, 5, 5, 6, 2)),
    # Depth below the kernel's span: taps that see only padding are left out (see _live_taps).
    (5, 1, 1, "same", (2, 1, 4, 4, 2)),
    (5, 2, 1, "same", (1, 2, 4, 5, 2)),
    ((3, 3, 3), 1, (2, 1, 1), "same", (1, 2, 4, 4, 2)),
]

ILL_CASES = [
    (DepthwiseConv3D, dict(kernel_size=3, padding="causal")),
    (DepthwiseConv3D, dict(kernel_size=3, strides=2, dilation_rate=2)),
    (DepthwiseConv3D, dict(kernel_size=(3, 3))),
    (DepthwiseConv3D, dict(kernel_size=0)),
    (DepthwiseConv3D, dict(kernel_size=1.5)),  # a float scalar, not a TypeError from tuple()
    (DepthwiseConv3D, dict(kernel_size=3, depth_multiplier=0)),
    (FoldedConv3D, dict(filters=0, kernel_size=3)),
    (FoldedConv3D, dict(filters=4, kernel_size=3, strides=(1, 2, 2), dilation_rate=(1, 2, 2))),
]


def _random(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def _copy_to_stock(layer, stock, x):
    """Builds the stock Keras layer on x and gives it `layer`'s weights."""
    stock.build(x.shape)
    stock.set_weights(layer.get_weights())
    return stock


@pytest.mark.parametrize("depth_multiplier", [1, 2])
@pytest.mark.parametrize("kernel_size,strides,dilation,padding,shape", CONV_CASES)
def test_depthwise_equals_grouped_conv3d_and_numpy(kernel_size, strides, dilation, padding, shape, depth_multiplier):
    x = _random(shape)
    channels = shape[-1]
    layer = DepthwiseConv3D(
        kernel_size,
        strides=strides,
        padding=padding,
        dilation_rate=dilation,
        depth_multiplier=depth_multiplier,
        bias_initializer="random_normal",
    )
    y = np.asarray(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape)
    stock = keras.layers.Conv3D(
        channels * depth_multiplier, kernel_size, strides=strides, padding=padding, dilation_rate=dilation, groups=channels
    )
    np.testing.assert_allclose(y, np.asarray(_copy_to_stock(layer, stock, x)(x)), atol=1e-5)
    kernel, bias = layer.get_weights()
    reference = numpy_conv3d(x, kernel, bias, layer.strides, padding, layer.dilation_rate, groups=channels)
    np.testing.assert_allclose(y, reference, atol=1e-5)


@pytest.mark.parametrize("stacked", [False, True], ids=["tap_sum", "stacked_taps"])
@pytest.mark.parametrize("kernel_size,strides,dilation,padding,shape", CONV_CASES)
def test_folded_conv3d_equals_conv3d_and_numpy(kernel_size, strides, dilation, padding, shape, stacked):
    x = _random(shape)
    layer = FoldedConv3D(
        4, kernel_size, strides=strides, padding=padding, dilation_rate=dilation, bias_initializer="random_normal"
    )
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, layer(inputs))
    if stacked:
        with stacked_depth_taps(model):
            y = np.asarray(layer(x))
        assert not layer._stack_taps  # restored
    else:
        y = np.asarray(layer(x))
    assert y.shape == layer.compute_output_shape(x.shape)
    stock = keras.layers.Conv3D(4, kernel_size, strides=strides, padding=padding, dilation_rate=dilation)
    np.testing.assert_allclose(y, np.asarray(_copy_to_stock(layer, stock, x)(x)), atol=1e-5)
    reference = numpy_conv3d(x, *layer.get_weights(), layer.strides, padding, layer.dilation_rate)
    np.testing.assert_allclose(y, reference, atol=1e-5)


@pytest.mark.parametrize(
    "kernel_size,strides,dilation,depth,live",
    [(5, 1, 1, 1, {2}), (5, 1, 1, 2, {1, 2, 3}), (5, 1, 1, 3, {0, 1, 2, 3, 4}), (5, 2, 1, 2, {1, 2}),
     (3, 1, 2, 2, {1}), (3, 1, 1, None, {0, 1, 2})],
)
def test_taps_that_see_only_padding_are_left_out(kernel_size, strides, dilation, depth, live):
    """Depth 1 at the bottom of LV-Net: 4 of 5 taps read only zeros (a zero int8 range in LiteRT)."""
    layer = DepthwiseConv3D(kernel_size, strides=strides, dilation_rate=dilation, padding="same")
    assert layer._live_taps(depth) == live
    # Brute force: a tap is live when some output position reads a real slice.
    if depth is not None:
        x = np.zeros((1, depth, 3, 3, 1), np.float32)
        layer.build(x.shape)
        for tap in range(kernel_size):
            kernel = np.zeros(layer.kernel.shape, np.float32)
            kernel[tap] = 1.0
            layer.kernel.assign(kernel)
            assert (np.abs(np.asarray(layer(x + 1.0))).max() > 0) == (tap in live), tap


def test_unknown_sizes_give_the_same_outputs():
    """Built on (None, None, None, C), the layers match the static-shape results for several sizes."""
    inputs = keras.Input((None, None, None, 2))
    dw = DepthwiseConv3D(3, strides=2, padding="same", bias_initializer="random_normal")
    conv = FoldedConv3D(3, 3, padding="same", dilation_rate=(1, 2, 2))
    model = keras.Model(inputs, conv(dw(inputs)))
    assert model.output_shape == (None, None, None, None, 3)
    for shape in [(1, 5, 7, 9, 2), (2, 6, 8, 8, 2)]:
        x = _random(shape)
        hidden = numpy_conv3d(x, *dw.get_weights(), (2, 2, 2), "same", (1, 1, 1), groups=2)
        expected = numpy_conv3d(hidden, *conv.get_weights(), (1, 1, 1), "same", (1, 2, 2))
        np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "layer_cls,init_kwargs,shape,expected",
    [
        (
            DepthwiseConv3D,
            dict(kernel_size=(3, 3, 3), strides=(1, 2, 2), padding="same", depth_multiplier=2, use_bias=False),
            (2, 4, 6, 6, 3),
            (2, 4, 3, 3, 6),
        ),
        (
            FoldedConv3D,
            dict(filters=5, kernel_size=(1, 3, 3), dilation_rate=(1, 2, 2), padding="same"),
            (2, 3, 7, 7, 2),
            (2, 3, 7, 7, 5),
        ),
    ],
)
def test_run_layer_test(layer_cls, init_kwargs, shape, expected, tmp_path):
    run_layer_test(layer_cls, init_kwargs, _random(shape), expected, tmp_path=tmp_path)


@pytest.mark.parametrize("layer_cls,init_kwargs", ILL_CASES)
def test_bad_arguments_raise_config_error(layer_cls, init_kwargs):
    with pytest.raises(ConfigError):
        layer_cls(**init_kwargs)


def test_rejects_4d_input():
    with pytest.raises(ConfigError, match="DepthwiseConv3D"):
        DepthwiseConv3D(3)(_random((1, 4, 4, 2)))


LITERT_CASES = [
    (DepthwiseConv3D, dict(kernel_size=3, strides=2, padding="same"), (1, 5, 7, 9, 3)),
    (DepthwiseConv3D, dict(kernel_size=5, padding="same", depth_multiplier=2), (1, 6, 8, 8, 2)),
    (DepthwiseConv3D, dict(kernel_size=(1, 3, 3), padding="same", dilation_rate=(1, 2, 2)), (1, 4, 9, 9, 3)),
    (DepthwiseConv3D, dict(kernel_size=(3, 1, 1), padding="valid"), (1, 6, 5, 5, 3)),
    (FoldedConv3D, dict(filters=4, kernel_size=3, padding="same", dilation_rate=(1, 2, 2)), (1, 4, 9, 9, 3)),
    (FoldedConv3D, dict(filters=4, kernel_size=(3, 1, 1), strides=(2, 1, 1), padding="same"), (1, 7, 5, 5, 3)),
]


@pytest.mark.parametrize("layer_cls,init_kwargs,shape", LITERT_CASES)
def test_litert_builtins_only(layer_cls, init_kwargs, shape):
    """Converts with TFLITE_BUILTINS only, no CONV_3D, and runs in LiteRT within 1e-4 of Keras."""
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, layer_cls(bias_initializer="random_normal", **init_kwargs)(inputs))
    assert_litert_matches(model, _random(shape))


@pytest.mark.parametrize("shape", [(1, 4, 6, 6, 3), (1, None, None, None, 3)])
def test_stacked_depth_taps_make_one_conv2d(shape):
    """Traced in `stacked_depth_taps` (as the TFLite export does), a 3x3x3 FoldedConv3D is one
    CONV_2D over the depth taps stacked along channels, no ADD; outside it, a sum of three.

    A sum of per-tap convolutions rounds every partial sum to int8 in a quantized file
    (5 roundings per layer instead of 1; ynet3d_ee's int8 agreement was 0.964 that way).
    """
    inputs = keras.Input(shape[1:])
    model = keras.Model(inputs, FoldedConv3D(4, 3, padding="same", bias_initializer="random_normal")(inputs))
    with stacked_depth_taps(model):
        counts = tflite_op_counts(tflite_convert_builtins(model, shape))
    assert counts["CONV_2D"] == 1 and counts["ADD"] == 0 and counts["CONCATENATION"] == 1, counts
    counts = tflite_op_counts(tflite_convert_builtins(model, shape))
    assert counts["CONV_2D"] == 3 and counts["ADD"] >= 2, counts


def test_litert_unknown_sizes():
    """A model converted with unknown D, H, W runs in LiteRT at two different sizes."""
    inputs = keras.Input((None, None, None, 2))
    model = keras.Model(inputs, DepthwiseConv3D(3, strides=2, padding="same")(inputs))
    flatbuffer = tflite_convert_builtins(model, (1, None, None, None, 2))
    assert not any(op.startswith("CUSTOM") for op in tflite_op_names(flatbuffer))
    for shape in [(1, 5, 7, 9, 2), (1, 6, 8, 8, 2)]:
        x = _random(shape)
        np.testing.assert_allclose(litert_run(flatbuffer, x), np.asarray(model(x)), atol=1e-4)
