"""liverzoo.export.tflite: builtin-only conversion, refusals, int8 I/O, metadata, atomic writes."""
import numpy as np
import pytest

from liverzoo import export, inference, lite, models
from liverzoo.errors import ConfigError
from tests.export.helpers import _random_stacks, _two_head_model


def test_flex_op_is_refused_naming_op_and_layer():
    import keras

    x = keras.Input((4, 8, 8, 1))
    h = keras.layers.MaxPooling3D(2, name="pool3d")(keras.layers.Conv3D(2, 1, name="proj")(x))
    model = keras.Model(x, keras.layers.UpSampling3D(2)(h), name="with_maxpool3d")
    with pytest.raises(ConfigError, match=r"'with_maxpool3d'.*MaxPool3D \(layer 'pool3d'\).*SELECT_TF_OPS"):
        export.convert_tflite(model, metadata={})


def test_grouped_conv3d_is_refused_before_conversion():
    import keras

    x = keras.Input((4, 8, 8, 4))
    model = keras.Model(x, keras.layers.Conv3D(4, 3, groups=4, padding="same", name="dw3d")(x))
    with pytest.raises(ConfigError, match="layer 'dw3d'.*groups=4.*fails at run time in LiteRT"):
        export.convert_tflite(model, metadata={})


def test_int8_file_that_litert_cannot_load_is_refused():
    """Instance norm over a 1x1 map: zero calibrated range, LiteRT's int8 ADD aborts in Prepare."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((16, 16, 1))
    h = keras.layers.Conv2D(8, 16, strides=16)(keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x))
    h = keras.layers.GroupNormalization(groups=-1, epsilon=1e-5)(h)
    out = keras.layers.Conv2D(3, 1, activation="softmax")(keras.layers.UpSampling2D(16)(h))
    model = keras.Model(x, out, name="norm_1x1")
    with pytest.raises(ConfigError, match="int8 TFLite file for 'norm_1x1' does not load in LiteRT"):
        export.convert_tflite(model, "int8", _random_stacks((16, 16, 1), 8), metadata={})
    assert export.convert_tflite(model, "dynamic", metadata={})  # the float-activation file loads


def test_op_lists_equal_the_interpreters_own(tmp_path):
    """tflite_ops / float_ops (read from the flatbuffer) vs what LiteRT reports at run time."""
    import keras
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = keras.Input((4, 8, 8, 1))
    h = keras.layers.Conv3D(4, 3, padding="same", activation="relu")(x)
    model = keras.Model(x, keras.layers.Conv3D(3, 1, activation="softmax")(h), name="conv3d_net")
    data = export.convert_tflite(model, "int8", _random_stacks((4, 8, 8, 1), 4), metadata={})
    interpreter = Interpreter(model_content=data,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    assert lite.tflite_ops(data) == sorted({op["op_name"] for op in ops})
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    in_float = {op["op_name"] for op in ops if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
                and tensors[op["outputs"][0]]["dtype"] == np.float32}
    # The convs keep their built-in activations, so lite_compatible leaves them stock CONV_3D,
    # which has no int8 kernel: the one float op.
    assert lite.float_ops(data) == sorted(in_float) == ["CONV_3D"]


def test_int8_file_has_int8_io_and_lite_model_dequantizes(tmp_path):
    model = _two_head_model()
    calibration = _random_stacks((16, 16, 3), 16, seed=1)
    path = export.write_tflite(export.convert_tflite(model, "int8", calibration, metadata={}), tmp_path / "q.tflite")
    runner = lite.LiteModel(path)
    assert runner.quantized
    assert runner._input["dtype"] == np.int8 and runner._output["dtype"] == np.int8
    x = _random_stacks((16, 16, 3), 2, seed=2)
    probs = runner.predict(x)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=0.02)
    # Wrong scale or zero point would put these far apart.
    assert np.abs(probs - inference.keras_predict_fn(model)(x)).mean() < 0.02


def test_zoo_metadata_and_shape_checks(tmp_path):
    import keras
    import tensorflow as tf

    model = models.build("residual_unet", input_shape=(32, 32, 1))
    meta = export.zoo_metadata(model)
    assert meta == {**meta, "model": "residual_unet", "kind": "2d", "preset": "residual_unet",
                    "input_shape": [32, 32, 1], "stack_size": 1, "num_classes": 3, "input": "ct_stack",
                    "signature": "segment", "output": "probabilities"}
    free = keras.Model(inp := keras.Input((None, None, 1)), keras.layers.Conv2D(3, 1)(inp), name="free")
    with pytest.raises(ConfigError, match=r"takes inputs of shape \(None, None, 1\): pass a static input_shape"):
        export.zoo_metadata(free)
    assert export.zoo_metadata(free, input_shape=(24, 24, 1))["input_shape"] == [24, 24, 1]
    export.export_saved_model(free, tmp_path / "free")  # a SavedModel keeps free dimensions
    spec = tf.saved_model.load(str(tmp_path / "free")).signatures["segment"].structured_input_signature[1]
    assert spec["ct_stack"].shape.as_list() == [None, None, None, 1]
    with pytest.raises(ConfigError, match="was built for inputs"):
        export.convert_tflite(model, input_shape=(64, 64, 1))
    with pytest.raises(ConfigError, match=r"--quantize='int4'"):
        export.convert_tflite(model, "int4")


def test_outputs_replace_existing_ones_atomically(tmp_path, caplog):
    model = _two_head_model()
    target = tmp_path / "sm"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with caplog.at_level("INFO", logger="tensorflow"):
        export.export_saved_model(model, target)
    # TensorFlow's "Assets written to: <the temporary folder>" would name a path that is gone.
    assert not [r for r in caplog.records if "Assets written" in r.getMessage()]
    assert (target / "saved_model.pb").is_file() and not (target / "stale.txt").exists()
    (tmp_path / "m.tflite").write_bytes(b"old")
    export.write_tflite(b"TFL3-new", tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == b"TFL3-new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]  # no temporary names left


def test_int8_is_calibrated_on_the_runs_working_plane(monkeypatch):
    """Metadata naming a run's inplane_spacing (from its config.json) reaches the demo-CT calibration."""
    import keras

    from liverzoo.export import tflite

    calls = []

    def recording(representative_data, input_shape, preset, **kwargs):
        calls.append(kwargs)
        return _random_stacks(input_shape, 4)

    monkeypatch.setattr(tflite, "calibration_inputs", recording)
    x = keras.Input((16, 16, 1))
    model = keras.Model(x, keras.layers.Conv2D(3, 3, padding="same", activation="softmax")(x), name="tiny")
    export.convert_tflite(model, "int8", metadata={"preset": "residual_unet", "inplane_spacing": 3.0})
    export.convert_tflite(model, "int8", metadata={"preset": "residual_unet", "inplane_size": 128})
    assert [call["inplane_spacing"] for call in calls] == [3.0, None]


def test_output_under_a_file_is_one_data_error(tmp_path):
    from liverzoo.errors import DataError

    (tmp_path / "file.tflite").write_bytes(b"x")
    with pytest.raises(DataError, match="x.tflite: cannot write there"):
        export.write_tflite(b"TFL3", tmp_path / "file.tflite" / "x.tflite")
    with pytest.raises(DataError, match="sm: cannot write there"):
        export.export_saved_model(_two_head_model(), tmp_path / "file.tflite" / "sm")


def test_missing_checkpoint_is_named_as_missing(tmp_path):
    from liverzoo.errors import DataError

    with pytest.raises(DataError, match=r"--model_path=.*nope.keras: no such file$"):
        export.export_model(str(tmp_path / "x.tflite"), model_path=str(tmp_path / "nope.keras"))
