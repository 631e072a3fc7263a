"""liverzoo.export: every zoo model to SavedModel and to TFLite in all four modes, verified.

The sweep (one test per registered model, so pytest-xdist spreads the models over workers)
takes each model at its test size, briefly fine-tuned on the demo's LiTS 117 training slab
(`liverzoo.benchmarks.export.fine_tuned_model`: fresh random weights give near-tied scores
whose argmax is noise), and checks on real CT slices of that slab:

- SavedModel: reloaded with `tf.saved_model.load`, the "segment" and "serving_default"
  signatures give the Keras probabilities (1e-5);
- TFLite none / fp16 / dynamic / int8 (int8 calibrated on the embedded demo CT, the
  default), each run in LiteRT on real CT stacks: builtin ops only, the zoo metadata, fp32
  within 1e-4 and fp16 within 1e-2 of the Keras probabilities, dynamic and int8 masks
  agreeing with the Keras mask on >= 98 % of voxels with a foreground Dice >= 0.9; the
  Keras mask must hold foreground (>= 1 % of voxels) so the Dice means something.

An int8 file that LiteRT cannot load is refused by the export with a clear error
(`test_int8_file_that_litert_cannot_load_is_refused`); every zoo model's loads.
"""
import json

import numpy as np
import pytest

from liverzoo import export, lite, models
from liverzoo.benchmarks.export import fine_tuned_model
from liverzoo.errors import ConfigError, DataError

#: Per mode: the largest max |p_tflite - p_keras|, the smallest argmax agreement and
#: foreground Dice of the masks.
LIMITS = {
    "none": {"max_abs_prob_diff": 1e-4},
    "fp16": {"max_abs_prob_diff": 1e-2},
    "dynamic": {"argmax_agreement": 0.98, "foreground_dice": 0.9},
    "int8": {"argmax_agreement": 0.98, "foreground_dice": 0.9},
}
MIN_FOREGROUND = 0.01


@pytest.fixture(scope="session")
def demo_cases():
    from liverzoo.data import demo

    return demo.demo_cases()


def _check_saved_model(model, inputs, path, problems):
    import tensorflow as tf

    export.export_saved_model(model, path)
    loaded = tf.saved_model.load(str(path))
    name = export.input_name(inputs.shape[1:])
    expected = export.keras_predict(model, inputs)
    for key in (export.SIGNATURE, "serving_default"):
        out = loaded.signatures[key](**{name: tf.constant(inputs)})[export.OUTPUT_NAME].numpy()
        if np.abs(out - expected).max() > 1e-5:
            problems.append(f"SavedModel signature {key}: max |dp| {np.abs(out - expected).max():.2g} > 1e-5")


def _check_tflite(model, inputs, mode, data, path, problems):
    name, spec = model.name, models.SPECS[model.name]
    path.write_bytes(data)
    report = export.verify_tflite(path, model, inputs)
    assert json.loads(path.with_suffix(".verify.json").read_text()) == report
    print(f"{name} {mode}: {report['size_bytes']:,} B, max |dp| {report['max_abs_prob_diff']:.2g}, "
          f"agreement {report['argmax_agreement']:.4f}, Dice {report['dice']}, float ops {report['float_ops']}")
    if not report["builtin_only"] or any(op.startswith("CUSTOM:") for op in lite.tflite_ops(data)):
        problems.append(f"{mode}: non-builtin ops {report['ops']}")
    expected = {"model": name, "kind": spec.kind, "preset": spec.preset, "quantize": mode,
                "input_shape": list(inputs.shape[1:])}
    if {k: report["metadata"].get(k) for k in expected} != expected:
        problems.append(f"{mode}: metadata {report['metadata']}")
    limits = LIMITS[mode]
    figures = {"max_abs_prob_diff": report["max_abs_prob_diff"], "argmax_agreement": report["argmax_agreement"],
               "foreground_dice": report["dice"]["foreground"]}
    for key, limit in limits.items():
        if (figures[key] > limit) if key == "max_abs_prob_diff" else (figures[key] < limit):
            problems.append(f"{mode}: {key} {figures[key]:.4g} beyond {limit}")


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_exports_to_saved_model_and_tflite_in_all_modes(name, demo_cases, tmp_path):
    model, inputs = fine_tuned_model(name, demo_cases, num_inputs=3)
    mask = export.keras_predict(model, inputs).argmax(-1)
    # The Keras mask must hold foreground and background for the Dice checks to mean something.
    assert MIN_FOREGROUND <= np.mean(mask > 0) <= 1 - MIN_FOREGROUND, np.bincount(mask.ravel())

    problems = []
    _check_saved_model(model, inputs, tmp_path / "saved_model", problems)
    with export.TFLiteExporter(model) as exporter:
        for mode in export.QUANTIZE_MODES:
            data = exporter.convert(mode, num_calibration=8)  # int8: calibrated on the demo CT
            _check_tflite(model, inputs, mode, data, tmp_path / f"{name}_{mode}.tflite", problems)
    assert not problems, f"{name}: " + "; ".join(problems)


# --- Unit tests on small hand-made models (fast) -------------------------------------------


def _two_head_model():
    """2D model with dropout and a deep-supervision head: the export keeps outputs[0] only."""
    import keras

    keras.utils.set_random_seed(1)
    x = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    h = keras.layers.Dropout(0.5)(h)
    main = keras.layers.Conv2D(3, 1, activation="softmax", name="main")(h)
    aux = keras.layers.Conv2D(3, 1, activation="softmax", name="aux")(keras.layers.MaxPooling2D()(h))
    return keras.Model(x, [main, keras.layers.UpSampling2D()(aux)], name="two_heads")


def _random_stacks(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)


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
    assert np.abs(probs - export.keras_predict(model, x)).mean() < 0.02


def test_representative_data_is_checked():
    with pytest.raises(DataError, match=r"representative_data: input of shape \(8, 8, 1\), the model takes"):
        export.calibration_inputs([np.zeros((8, 8, 1))], (16, 16, 1), None)
    with pytest.raises(DataError, match="no calibration inputs"):
        export.calibration_inputs([], (16, 16, 1), None)
    with pytest.raises(ConfigError, match="no preprocessing preset"):
        export.calibration_inputs(None, (16, 16, 1), None)
    with pytest.raises(DataError, match="no TFRecord shards found"):
        export.calibration_inputs("/no/such/shards-*.tfrecord", (16, 16, 1), "residual_unet")
    batch = np.zeros((3, 1, 16, 16, 1), np.float32)  # (1,) + input_shape items are accepted
    assert export.calibration_inputs(batch, (16, 16, 1), None, num_samples=2).shape == (2, 16, 16, 1)


def test_sample_inputs_are_the_preprocessed_stacks(demo_cases):
    from liverzoo.data import preprocess

    case = demo_cases[2]
    image, label, _ = preprocess.prepare_volume(case.array, case.spacing, "ds_nnunet", case.label, inplane_size=32)
    stacks, labels = export.sample_inputs([case], (32, 32, 5), "ds_nnunet", num_samples=3)
    centres = np.linspace(0, image.shape[2] - 1, 5)[1:-1].round().astype(int)
    for stack, lab, centre in zip(stacks, labels, centres):
        np.testing.assert_array_equal(stack, image[:, :, np.clip(np.arange(centre - 2, centre + 3), 0, None)])
        np.testing.assert_array_equal(lab, label[:, :, centre])
    volumes, masks = export.sample_inputs([case], (6, 32, 32, 1), "ds_nnunet", num_samples=1)
    centre = centres[1]
    np.testing.assert_array_equal(volumes[0, ..., 0], np.moveaxis(image[:, :, centre - 3 : centre + 3], 2, 0))
    np.testing.assert_array_equal(masks[0], np.moveaxis(label[:, :, centre - 3 : centre + 3], 2, 0))


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


def test_outputs_replace_existing_ones_atomically(tmp_path):
    model = _two_head_model()
    target = tmp_path / "sm"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    export.export_saved_model(model, target)
    assert (target / "saved_model.pb").is_file() and not (target / "stale.txt").exists()
    (tmp_path / "m.tflite").write_bytes(b"old")
    export.write_tflite(b"TFL3-new", tmp_path / "m.tflite")
    assert (tmp_path / "m.tflite").read_bytes() == b"TFL3-new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite", "sm"]  # no temporary names left


def test_verify_report_is_computed_from_both_models(tmp_path):
    from liverzoo import metrics

    model = _two_head_model()
    x = _random_stacks((16, 16, 3), 4, seed=3)
    path = export.write_tflite(export.convert_tflite(model, "int8", x, metadata={"quantize": "x"}),
                               tmp_path / "m_int8.tflite")
    report = export.verify_tflite(path, model, x)
    got, expected = lite.LiteModel(path).predict(x), export.keras_predict(model, x)
    assert report["max_abs_prob_diff"] == pytest.approx(np.abs(got - expected).max())
    assert report["argmax_agreement"] == pytest.approx(np.mean(got.argmax(-1) == expected.argmax(-1)))
    assert report["dice"]["liver"] == pytest.approx(metrics.dice(got.argmax(-1) == 1, expected.argmax(-1) == 1))
    assert report["size_bytes"] == path.stat().st_size and report["ops"] == lite.tflite_ops(path)
    assert report["quantize"] == "int8" and report["float_ops"] == []
    assert json.loads((tmp_path / "m_int8.verify.json").read_text()) == report
