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


def verify_volumes(tflite_path, keras_path, cases, *, num_threads=2, log=None):
    """Whole CT volumes segmented with a `.tflite` file and with its `.keras` checkpoint.

    Both go through `liverzoo.runtime` (what `tools/predict.py` runs: preprocessing, the
    checkpoint's working in-plane size, sliding windows, post-processing, the scan's own
    grid), so the figures are what a user of the file gets, not a per-slice proxy.

    Args:
        tflite_path: the `.tflite` file.
        keras_path: the `.keras` checkpoint it was exported from.
        cases: labelled `liverzoo.data.io.CTVolume`s with `case_id` (e.g. `demo.demo_cases()`).
        num_threads: LiteRT CPU threads.
        log: optional callable given one line per case.

    Returns:
        `{"cases": {case_id: {"agreement", "liver_dice_keras", "liver_dice_tflite",
        "liver_dice_gap"}}, "agreement": voxel agreement over all cases, "worst_agreement",
        "max_liver_dice_gap": largest |tflite - keras| liver Dice}`; liver Dice is of liver
        plus tumor against the case's label.

    Example:
        >>> report = verify_volumes("demo_int8.tflite", "best.keras", demo.demo_cases())
        >>> report["agreement"] >= 0.98
        True
    """
    from liverzoo import metrics, runtime

    keras_segmenter = runtime.load_segmenter(keras_path)
    lite_segmenter = runtime.load_segmenter(tflite_path, inplane_size=keras_segmenter.inplane_size,
                                            inplane_spacing=keras_segmenter.inplane_spacing, num_threads=num_threads)
    rows, same, total = {}, 0, 0
    for case in cases:
        expected, got = keras_segmenter.segment(case), lite_segmenter.segment(case)
        agree = int(np.count_nonzero(expected == got))
        same, total = same + agree, total + expected.size
        row = {"agreement": agree / expected.size}
        if case.label is not None:
            row["liver_dice_keras"] = float(metrics.dice(expected > 0, case.label > 0))
            row["liver_dice_tflite"] = float(metrics.dice(got > 0, case.label > 0))
            row["liver_dice_gap"] = row["liver_dice_tflite"] - row["liver_dice_keras"]
        rows[case.case_id] = row
        if log is not None:
            log(f"{case.case_id}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    gaps = [abs(r["liver_dice_gap"]) for r in rows.values() if "liver_dice_gap" in r]
    return {"cases": rows, "agreement": same / max(total, 1),
            "worst_agreement": min(r["agreement"] for r in rows.values()),
            "max_liver_dice_gap": max(gaps) if gaps else None}


def _fractions(mask, num_classes):
    counts = np.bincount(mask.ravel(), minlength=num_classes)
    return [float(c) for c in counts / counts.sum()]
