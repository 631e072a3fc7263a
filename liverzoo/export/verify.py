"""Verification of a `.tflite` file: LiteRT on real inputs against the Keras model, as JSON."""
import json
import os

import numpy as np

from liverzoo import lite
from liverzoo.data import io
from liverzoo.errors import DataError
from liverzoo.export.tflite import CLASS_NAMES
from liverzoo.lite import float_ops, tflite_ops


def verify_tflite(tflite_path, keras_model, inputs, *, num_threads=2, report_path=None):
    """Runs a `.tflite` file in LiteRT on real inputs and compares it with the Keras model.

    The report (also written, atomically, as JSON beside the file: `x.tflite` ->
    `x.verify.json`) holds: `max_abs_prob_diff` and `mean_abs_prob_diff` of the
    probabilities, `argmax_agreement` (fraction of voxels whose class agrees), `dice` of the
    exported model's masks vs the Keras masks (`foreground` = any non-background class, and
    per class), the class fractions of both masks, `size_bytes`, `ops`, `builtin_only`,
    `float_ops` (int8 files: operators left in float) and the embedded metadata.

    Args:
        tflite_path: the `.tflite` file.
        keras_model: the Keras model it was exported from.
        inputs: float32 `(N,) + input_shape` real CT inputs (e.g. `demo_inputs`).
        num_threads: LiteRT CPU threads.
        report_path: where to write the JSON; default beside the file.

    Returns:
        The report dict.

    Example:
        >>> report = verify_tflite("m_int8.tflite", model, demo_inputs((64, 64, 1), "residual_unet"))
        >>> report["argmax_agreement"] >= 0.98
        True
    """
    from liverzoo import inference, metrics

    tflite_path = os.fspath(tflite_path)
    runner = lite.LiteModel(tflite_path, num_threads=num_threads)
    inputs = np.asarray(inputs, np.float32)
    predict = inference.keras_predict_fn(keras_model)
    expected = np.concatenate([predict(inputs[i : i + 4]) for i in range(0, len(inputs), 4)])
    got = runner.predict(inputs)
    if got.shape != expected.shape:
        raise DataError(f"{tflite_path}: output shape {got.shape}, Keras gives {expected.shape}")
    diff = np.abs(got - expected)
    keras_mask, lite_mask = expected.argmax(-1), got.argmax(-1)
    num_classes = expected.shape[-1]
    dice = {"foreground": float(metrics.dice(lite_mask > 0, keras_mask > 0))}
    for c in range(1, num_classes):
        label = CLASS_NAMES[c] if c < len(CLASS_NAMES) else f"class_{c}"
        dice[label] = float(metrics.dice(lite_mask == c, keras_mask == c))
    ops = tflite_ops(tflite_path)
    metadata = runner.metadata
    report = {
        "file": os.path.basename(tflite_path),
        "size_bytes": os.path.getsize(tflite_path),
        "quantize": metadata.get("quantize"),
        "num_inputs": int(len(inputs)),
        "input_shape": list(runner.input_shape),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "argmax_agreement": float(np.mean(keras_mask == lite_mask)),
        "dice": dice,
        "keras_class_fractions": _fractions(keras_mask, num_classes),
        "tflite_class_fractions": _fractions(lite_mask, num_classes),
        "ops": ops,
        "builtin_only": not any(op.startswith("CUSTOM:") for op in ops),
        "float_ops": float_ops(tflite_path) if runner.quantized else None,
        "metadata": metadata,
    }
    if report_path is None:
        report_path = os.path.splitext(tflite_path)[0] + ".verify.json"
    io.atomic_write_bytes(os.fspath(report_path), json.dumps(report, indent=2) + "\n")
    return report


def _fractions(mask, num_classes):
    counts = np.bincount(mask.ravel(), minlength=num_classes)
    return [float(c) for c in counts / counts.sum()]
