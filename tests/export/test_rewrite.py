"""liverzoo.export.rewrite: the inference-only graph; stock Conv3D / Conv3DTranspose become
builtin-2D layers in TFLite files only (lite_compatible)."""
import numpy as np
import pytest

import keras

from liverzoo import export, lite
from liverzoo.layers.conv3d import FoldedConv3D
from liverzoo.layers.conv3d_transpose import FoldedConv3DTranspose
from tests.export.helpers import _random_stacks, _two_head_model

SHAPE = (4, 8, 8, 1)


def _tiny_3d_model():
    """Conv3D down, both transposed-conv kinds of the zoo (V-Net 2/2, 3DYNet 3/2 "same") up."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv3D(4, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv3D(6, 3, strides=2, padding="same", name="down")(x)
    x = keras.layers.Conv3DTranspose(4, 2, strides=2, padding="same", name="up_v")(x)
    x = keras.layers.Conv3D(6, 1, strides=2, name="down2")(x)
    x = keras.layers.Conv3DTranspose(4, 3, strides=2, padding="same", bias_initializer="random_normal", name="up_y")(x)
    x = keras.layers.Conv3D(3, 1, name="logits")(x)
    return keras.Model(inputs, keras.layers.Softmax(name="probs")(x), name="tiny3d")


def _inputs(n=4):
    return np.random.default_rng(1).standard_normal((n,) + SHAPE).astype("float32")


def test_rewritten_model_equals_stock_model():
    model = _tiny_3d_model()
    rewritten = export.lite_compatible(model)
    kinds = {layer.name: type(layer) for layer in rewritten.layers}
    assert kinds["conv"] is FoldedConv3D and kinds["logits"] is FoldedConv3D
    assert kinds["up_v"] is FoldedConv3DTranspose and kinds["up_y"] is FoldedConv3DTranspose
    assert rewritten.get_layer("relu") is model.get_layer("relu")  # other layers are shared
    x = _inputs()
    np.testing.assert_allclose(np.asarray(rewritten(x)), np.asarray(model(x)), atol=1e-5)
    # The model given is left alone (servers export it with the stock layers).
    assert type(model.get_layer("up_y")) is keras.layers.Conv3DTranspose


def test_layers_it_cannot_express_are_kept():
    """A conv with a fused activation or an output-padded transpose stays stock; a 2D model is returned as is."""
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv3D(2, 3, padding="same", activation="relu", name="fused")(inputs)
    x = keras.layers.Conv3DTranspose(2, 3, strides=2, padding="same", output_padding=1, name="padded")(x)
    model = keras.Model(inputs, x)
    rewritten = export.lite_compatible(model)
    assert rewritten is model
    image = keras.Input((8, 8, 1))
    plain = keras.Model(image, keras.layers.Conv2D(2, 3)(image))
    assert export.lite_compatible(plain) is plain


@pytest.fixture(scope="module")
def files():
    model = _tiny_3d_model()
    with export.TFLiteExporter(model, metadata=export.zoo_metadata(model, preset="lv_net")) as exporter:
        data = {mode: exporter.convert(mode, _inputs(8)) for mode in ("none", "int8")}
    return model, data


def test_tflite_files_have_no_3d_ops(files):
    _, data = files
    for mode, flatbuffer in data.items():
        ops = export.tflite_ops(flatbuffer)
        assert not {"CONV_3D", "CONV_3D_TRANSPOSE"} & set(ops), (mode, ops)
    assert export.float_ops(data["int8"]) == []


def test_fp32_file_equals_keras(files, tmp_path):
    model, data = files
    path = export.write_tflite(data["none"], tmp_path / "tiny3d.tflite")
    x = _inputs()
    np.testing.assert_allclose(lite.LiteModel(path).predict(x), np.asarray(model(x)), atol=1e-4)


def test_inference_model_drops_heads_and_dropout(tmp_path):
    import tensorflow as tf

    model = _two_head_model()
    x = _random_stacks((16, 16, 3))
    infer = export.inference_model(model)
    assert len(infer.outputs) == 1 and infer.name == "two_heads"
    expected = np.asarray(model(x, training=False)[0])
    np.testing.assert_allclose(np.asarray(infer(x, training=False)), expected, atol=1e-6)
    assert "aux" not in [layer.name for layer in infer.layers]

    export.export_saved_model(model, tmp_path / "sm")
    segment = tf.saved_model.load(str(tmp_path / "sm")).signatures["segment"]
    assert list(segment.structured_input_signature[1]) == ["ct_stack"]
    first, second = (segment(ct_stack=tf.constant(x))["probabilities"].numpy() for _ in range(2))
    np.testing.assert_array_equal(first, second)  # dropout off: deterministic
    np.testing.assert_allclose(first, expected, atol=1e-5)

    path = export.write_tflite(export.convert_tflite(model, metadata={}), tmp_path / "m.tflite")
    runner = lite.LiteModel(path)
    assert runner.input_shape == (16, 16, 3) and runner.output_shape == (16, 16, 3)
    np.testing.assert_allclose(runner.predict(x), expected, atol=1e-5)


def _concat_norm_model():
    """Two branches of very different ranges joined and batch-normalised (a U-Net's long skip)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 2))
    skip = keras.layers.Conv2D(3, 3, padding="same", name="skip")(image)
    deep = keras.layers.Conv2D(5, 3, padding="same", kernel_initializer=keras.initializers.Constant(3.0),
                               name="deep")(image)
    x = keras.layers.Concatenate(name="concat")([deep, skip])
    x = keras.layers.BatchNormalization(name="norm")(x)
    x = keras.layers.Conv2D(3, 1, name="logits")(x)
    model = keras.Model(image, keras.layers.Softmax(name="probs")(x), name="concat_norm")
    rng = np.random.default_rng(2)
    norm = model.get_layer("norm")
    gamma, beta, mean, var = norm.get_weights()
    norm.set_weights([rng.uniform(0.5, 2, gamma.shape), rng.normal(size=beta.shape),
                      rng.normal(size=mean.shape), rng.uniform(0.5, 4, var.shape)])
    return model


def test_batch_norm_after_concat_moves_in_front_of_it():
    """Same function in float; the batch norm is applied per input (NormalizedConcatenate)."""
    from liverzoo.layers import NormalizedConcatenate

    model = _concat_norm_model()
    rewritten = export.lite_compatible(model)
    assert isinstance(rewritten.get_layer("concat"), NormalizedConcatenate)
    assert isinstance(rewritten.get_layer("norm"), keras.layers.Identity)
    assert type(model.get_layer("concat")) is keras.layers.Concatenate  # the model given is left alone
    x = np.random.default_rng(3).standard_normal((3, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(np.asarray(rewritten(x)), np.asarray(model(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(export.lite_compatible(model)(x)), np.asarray(model(x)), atol=1e-6)


def test_concat_read_by_more_than_the_norm_is_kept():
    image = keras.Input((8, 8, 2))
    joined = keras.layers.Concatenate(name="concat")([image, image])
    out = keras.layers.Add()([keras.layers.BatchNormalization(name="norm")(joined), joined])
    model = keras.Model(image, out)
    assert export.lite_compatible(model) is model
