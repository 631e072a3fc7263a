"""Callbacks of a training run: whole-volume validation, TensorBoard, the stage of each epoch.

`ValidationCallback` segments every validation case after an epoch (through
`liverzoo.inference.segment`, on the case's own grid, as `tools/predict.py` does, when the raw
CT is at hand), scores liver and tumor Dice per case, and keeps `best.keras`,
`last.keras`, `best.json` and `validation.jsonl`; `TensorBoardLogger` writes the epoch
logs and an overlay image; `StageLogger` records each epoch's sampling mode.
"""
import json
import os
import pathlib
import time

import keras
import numpy as np

from liverzoo.data.io import atomic_write
from liverzoo.training.precise_bn import batchnorm_step, recompute_batchnorm_statistics


def case_dice(probs, label):
    """Liver and tumor Dice of one whole case from class probabilities `(X, Y, Z, C)`.

    Returns:
        `(liver_dice, tumor_dice)` of the argmax labels (`mask_dice`).
    """
    return mask_dice(np.argmax(probs, axis=-1), label)


def mask_dice(pred, label):
    """Liver and tumor Dice of one whole case from predicted labels `(X, Y, Z)`.

    Liver is every voxel labelled liver or tumor (LiTS); an empty reference and empty
    prediction give 1.0 (`liverzoo.metrics.dice`).

    Returns:
        `(liver_dice, tumor_dice)`.
    """
    from liverzoo import metrics

    return metrics.dice(pred >= 1, label >= 1), metrics.dice(pred == 2, label == 2)


def _overlay(image, label):
    """RGB uint8 slice: grey CT with liver in green and tumor in red."""
    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[label == 1] = 0.6 * rgb[label == 1] + 0.4 * np.array([0.0, 1.0, 0.0])
    rgb[label == 2] = 0.4 * rgb[label == 2] + 0.6 * np.array([1.0, 0.0, 0.0])
    return (rgb * 255).astype(np.uint8)


def write_text_atomic(path, text):
    """Writes `text` to `path` through a temporary file beside it (`liverzoo.data.io.atomic_write`)."""
    atomic_write(path, lambda tmp: pathlib.Path(tmp).write_text(text))


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` name in the same folder."""
    atomic_write(path, model.save)


class ValidationCallback(keras.callbacks.Callback):
    """Whole-volume validation after each epoch; keeps best.keras and last.keras.

    Dice is computed per validation case on the whole volume (liverzoo.inference stitches
    the model's predictions), then averaged over cases; `val_liver_dice` and
    `val_tumor_dice` are added to the epoch logs (so TensorBoard and history.csv get them).

    Args:
        inner: the zoo model (saved as best/last).
        config: the `ResolvedConfig`.
        val_files: validation shard paths (whole cases are read one at a time).
        work_dir: this process's folder: `model_dir` on the chief, else a worker folder.
        chief: whether this process writes the shared files.
        log: printing function.
        bn_batches: iterator of training batches for `recompute_batchnorm_statistics`
            (None: keep the running averages).
        val_cases: loaders of the raw validation CTs (`liverzoo.training.data.validation_cases`):
            when given, each is segmented on its own grid by `liverzoo.inference.segment` with
            post-processing, as `tools/predict.py` does, and scored there; else the preprocessed
            validation shards are scored at the working resolution.
        plane: the run's `(inplane_size, inplane_spacing)` (`liverzoo.training.data.data_plane`),
            for `segment`.
    """

    def __init__(self, inner, config, val_files, work_dir, chief, log=print, bn_batches=None, val_cases=None,
                 plane=(None, None)):
        super().__init__()
        self.val_cases, (self.inplane_size, self.inplane_spacing) = val_cases, plane
        self.inner, self.config, self.val_files, self.chief, self.log = inner, config, list(val_files), chief, log
        self.bn_batches = bn_batches
        self.work_dir = work_dir
        self.best_path = os.path.join(work_dir, "best.json")
        self.best = None
        self.tumor_labelled = False  # set by evaluate(): any validation case with tumor voxels
        self.last_scores = None
        self.last_overlay = (None, None)
        self._predict = None
        self._bn_step = None

    def on_train_begin(self, logs=None):
        if os.path.isfile(self.best_path):
            with open(self.best_path) as f:
                self.best = json.load(f)

    def evaluate(self):
        """`{"cases": {id: {"liver_dice", "tumor_dice"}}, "liver_dice", "tumor_dice"}` (means)."""
        from liverzoo import inference
        from liverzoo.data import tfrecord

        # One traced function for the whole run (a new one per epoch would retrace).
        self._predict = self._predict or inference.keras_predict_fn(self.inner)
        cases, overlay = {}, None
        layout, shape = self.config.layout, tuple(self.config.input_shape)
        step = max(layout.stack(shape) // 2, 1) if layout.is_volume else 10
        tile = layout.plane(shape)
        num_classes = self.inner.outputs[0].shape[-1]
        for load in self.val_cases or ():
            ct = load()
            mask = inference.segment(self._predict, ct, kind=layout.name, preset=self.config.preset,
                                     input_shape=shape, inplane_size=self.inplane_size,
                                     inplane_spacing=self.inplane_spacing, step=step,
                                     num_classes=num_classes)
            liver, tumor = mask_dice(mask, ct.label)
            cases[ct.case_id] = {"liver_dice": float(liver), "tumor_dice": float(tumor)}
            self.tumor_labelled = self.tumor_labelled or bool(np.any(ct.label == 2))
            if overlay is None:
                z = int(np.argmax((ct.label == 2).sum((0, 1)) * 10 + (ct.label == 1).sum((0, 1))))
                overlay = np.concatenate([_overlay(ct.array[:, :, z], ct.label[:, :, z]),
                                          _overlay(ct.array[:, :, z], mask[:, :, z])], axis=1)
        for case in () if self.val_cases else tfrecord.read_cases(self.val_files, split="all"):
            # A case smaller in-plane than the model's input is padded with its air value.
            size = case.image.shape[:2]
            pad = [(0, max(t - n, 0)) for t, n in zip(tile, size)] + [(0, 0)]
            image = np.pad(case.image, pad, constant_values=case.image.min()) if any(p[1] for p in pad) else case.image
            probs = inference.predict_volume(self._predict, image, kind=layout.name, input_shape=shape,
                                             step=step, num_classes=self.inner.outputs[0].shape[-1])
            probs = probs[: size[0], : size[1]]
            liver, tumor = case_dice(probs, case.label)
            cases[case.case_id] = {"liver_dice": float(liver), "tumor_dice": float(tumor)}
            self.tumor_labelled = self.tumor_labelled or bool(np.any(case.label == 2))
            if overlay is None:
                z = int(np.argmax((case.label == 2).sum((0, 1)) * 10 + (case.label == 1).sum((0, 1))))
                pred = np.argmax(probs[:, :, z], axis=-1)
                overlay = np.concatenate([_overlay(case.image[:, :, z], case.label[:, :, z]),
                                          _overlay(case.image[:, :, z], pred)], axis=1)
        if not cases:
            return None, None
        scores = {"cases": cases,
                  "liver_dice": float(np.mean([c["liver_dice"] for c in cases.values()])),
                  "tumor_dice": float(np.mean([c["tumor_dice"] for c in cases.values()]))}
        return scores, overlay

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.config.epochs
        if (epoch + 1) % self.config.val_every and not last:
            if logs is not None and (self.val_cases or self.val_files):
                # NaN keeps every epoch's logs the same keys (History, CSVLogger), unvalidated.
                logs["val_liver_dice"] = logs["val_tumor_dice"] = float("nan")
            return
        start = time.time()
        if self.bn_batches is not None:
            self._bn_step = self._bn_step or batchnorm_step(self.inner)
            batches = (next(self.bn_batches) for _ in range(self.config.precise_bn_batches))
            recompute_batchnorm_statistics(self.inner, batches, self._bn_step)
        scores, overlay = self.evaluate()
        if scores is None:
            return
        self.last_scores = dict(scores, epoch=epoch + 1)
        if logs is not None:
            logs["val_liver_dice"] = scores["liver_dice"]
            logs["val_tumor_dice"] = scores["tumor_dice"]
        per_case = ", ".join(f"{k} {v['liver_dice']:.3f}/{v['tumor_dice']:.3f}" for k, v in scores["cases"].items())
        self.log(f"epoch {epoch + 1}: validation Dice liver {scores['liver_dice']:.4f} "
                 f"tumor {scores['tumor_dice']:.4f} "
                 f"(per case liver/tumor: {per_case}; {time.time() - start:.1f} s)")
        self.last_overlay = (epoch + 1, overlay)
        if self.chief:
            with open(os.path.join(self.work_dir, "validation.jsonl"), "a") as f:
                f.write(json.dumps(self.last_scores, sort_keys=True) + "\n")
        self._save("last.keras")
        # Tumor first only when a validation case has tumor: on tumor-free cases tumor Dice is
        # 1 or 0 by whether any false-positive voxel exists, and ranking on it picked a demo
        # epoch with held-out liver Dice 0.770 over one with 0.917.
        def key(s):
            return (s["tumor_dice"], s["liver_dice"]) if self.tumor_labelled else (s["liver_dice"],)

        # Every worker has the same weights and scores, so all take the same decision.
        if self.best is None or key(scores) > key(self.best):
            self.best = {"epoch": epoch + 1, "tumor_dice": scores["tumor_dice"], "liver_dice": scores["liver_dice"],
                         "cases": scores["cases"]}
            self._save("best.keras")
            write_text_atomic(self.best_path, json.dumps(self.best, indent=1, sort_keys=True))

    def _save(self, name):
        # Under MultiWorkerMirroredStrategy saving may run collective ops, so every worker
        # saves (as TF's multi-worker guide does); only the chief keeps its file.
        path = os.path.join(self.work_dir, name)
        save_model_atomic(self.inner, path)
        if not self.chief:
            os.remove(path)


class TensorBoardLogger(keras.callbacks.Callback):
    """TensorBoard event files of the epoch logs and of the validation overlays.

    Written with `tf.summary.write` and the scalars/images plugin metadata, which is core
    TensorFlow: Keras' TensorBoard callback needs the `tensorboard` package just to write
    (`tf.summary.scalar` lives there). View with `pip install tensorboard` and
    `tensorboard --logdir MODEL_DIR/logs`: `train/` holds the loss, `validation/` the
    per-case-averaged Dice and an image per epoch (CT with reference | prediction; liver
    green, tumor red).

    Args:
        log_dir: MODEL_DIR/logs.
        validation: the `ValidationCallback` whose overlay is written.
    """

    def __init__(self, log_dir, validation=None):
        super().__init__()
        self.log_dir, self.validation = log_dir, validation
        self._writers = {}

    def _write(self, run, tag, tensor, step, plugin):
        import tensorflow as tf

        from liverzoo import _keras_internals

        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        with self._writers[run].as_default():
            tf.summary.write(tag, tensor, step=step, metadata=_keras_internals.summary_metadata(plugin))

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        for key, value in (logs or {}).items():
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._write(run, f"epoch_{name}", tf.constant(float(value), tf.float32), epoch + 1, "scalars")
        step, overlay = getattr(self.validation, "last_overlay", (None, None))
        if overlay is not None and step == epoch + 1:
            height, width = overlay.shape[:2]
            image = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(overlay)])
            self._write("validation", "overlay_reference_vs_prediction", image, step, "images")
        for writer in self._writers.values():
            writer.flush()


class StageLogger(keras.callbacks.Callback):
    """Records the sampling mode of each epoch in the logs (`sampling`: 0 dense, 1 sparse, 2 dense_sparse)."""

    CODES = {"dense": 0, "sparse": 1, "dense_sparse": 2, "volume": 3}

    def __init__(self, sampling):
        super().__init__()
        self.sampling = sampling

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sampling"] = float(self.CODES[self.sampling])
