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
(tests/export/test_tflite.py, `test_int8_file_that_litert_cannot_load_is_refused`); every zoo model's loads.
"""
import json

import numpy as np
import pytest

from liverzoo import export, inference, lite, models
from liverzoo.benchmarks.export import fine_tuned_model

#: Per mode: the largest max |p_tflite - p_keras|, the smallest argmax agreement and
#: foreground Dice of the masks.
LIMITS = {
    "none": {"max_abs_prob_diff": 1e-4},
    "fp16": {"max_abs_prob_diff": 1e-2},
    "dynamic": {"argmax_agreement": 0.98, "foreground_dice": 0.9},
    "int8": {"argmax_agreement": 0.98, "foreground_dice": 0.9},
}
MIN_FOREGROUND = 0.01


def _check_saved_model(model, inputs, path, problems):
    import tensorflow as tf

    export.export_saved_model(model, path)
    loaded = tf.saved_model.load(str(path))
    name = export.input_name(inputs.shape[1:])
    expected = inference.keras_predict_fn(model)(inputs)
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
    mask = inference.keras_predict_fn(model)(inputs).argmax(-1)
    # The Keras mask must hold foreground and background for the Dice checks to mean something.
    assert MIN_FOREGROUND <= np.mean(mask > 0) <= 1 - MIN_FOREGROUND, np.bincount(mask.ravel())

    problems = []
    _check_saved_model(model, inputs, tmp_path / "saved_model", problems)
    with export.TFLiteExporter(model) as exporter:
        for mode in export.QUANTIZE_MODES:
            data = exporter.convert(mode, num_calibration=8)  # int8: calibrated on the demo CT
            _check_tflite(model, inputs, mode, data, tmp_path / f"{name}_{mode}.tflite", problems)
    assert not problems, f"{name}: " + "; ".join(problems)
