"""Segment CT volumes: python tools/predict.py --model_path M --input IN --output OUT.

--model_path: a `.keras` file, a SavedModel folder (tools/export.py) or a `.tflite` file
(run in LiteRT through liverzoo.lite, no TensorFlow). --input: a NIfTI file, a folder of
NIfTI files, or a DICOM series folder. --output: the mask file for one input, or a folder
(`CASE.nii.gz` per case). Masks are uint8 (0 background, 1 liver, 2 tumor) with the input's
affine and shape. See docs/inference.md.
"""
import os
import re
import sys
import time

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "Model: .keras file, SavedModel folder, or .tflite file.")
flags.DEFINE_string("model", None, "Zoo model name (kind and preprocessing preset) when the file does not say.")
flags.DEFINE_string("input", None, "A NIfTI file, a folder of NIfTI files, or a DICOM series folder.")
flags.DEFINE_string("output", None, "Output mask file (.nii/.nii.gz) for one input, or a folder.")
flags.DEFINE_bool("save_probabilities", False, "Also write CASE_probabilities.nii.gz (X, Y, Z, C) float32.")
flags.DEFINE_bool("tta", False, "Flip test-time augmentation (average over X, Y and XY flips; 4x slower).")
flags.DEFINE_bool("skip_bad", False, "Skip cases that cannot be read or segmented, list them, go on.")
flags.DEFINE_bool("postprocess", True, "Largest liver component, holes filled, tumor only inside the liver.")
flags.DEFINE_integer("batch_size", None, "Inputs per model call (default 8 stacks / 1 sub-volume).", lower_bound=1)
flags.DEFINE_integer("stride", 1, "Slice stride of 2.5D stacks (Eq. (1) of the DS nnU-Net paper).", lower_bound=1)
flags.DEFINE_integer("window", 20, "Slices per 3D sub-volume for models with a free depth.", lower_bound=1)
flags.DEFINE_integer("step", 10, "Slices between 3D sub-volume starts.", lower_bound=1)
flags.DEFINE_enum("weighting", "mean", ["mean", "gaussian"], "How overlapping scores are combined.")
flags.DEFINE_integer("inplane_size", None, "Working in-plane size; 0 keeps the CT's plane (default: the training "
                     "run's, read from the config.json beside a .keras checkpoint, else the preset's).", lower_bound=0)
flags.DEFINE_integer("num_threads", 2, "CPU threads for LiteRT (.tflite models).", lower_bound=1)

_NIFTI = re.compile(r"^(?P<case>.+?)\.nii(\.gz)?$")


def _is_nifti(path):
    return bool(_NIFTI.match(os.path.basename(path)))


def find_inputs(path):
    """[(case, input path)] for a NIfTI file, a folder of NIfTI files, or a DICOM folder."""
    from liverzoo.errors import ConfigError

    if os.path.isfile(path):
        if not _is_nifti(path):
            raise ConfigError(f"--input {path}: expected a .nii/.nii.gz file, a folder of them, or a DICOM folder")
        return [(_NIFTI.match(os.path.basename(path))["case"], path)], False
    if not os.path.isdir(path):
        raise ConfigError(f"--input {path}: no such file or folder")
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and _is_nifti(n)
                   and os.path.isfile(os.path.join(path, n)))
    if names:
        return [(_NIFTI.match(n)["case"], os.path.join(path, n)) for n in names], True
    # No NIfTI files: a DICOM series folder (load_volume says so if it is not one).
    return [(os.path.basename(os.path.normpath(path)), path)], False


def output_paths(cases, output, many):
    """{case: mask path}: `output` itself for one input given a .nii[.gz] name, else a folder."""
    from liverzoo.errors import ConfigError

    if _is_nifti(output):
        if many:
            raise ConfigError(f"--output {output}: several inputs need an output folder, not a file")
        folder = os.path.dirname(os.path.abspath(output))
        if not os.path.isdir(folder):
            raise ConfigError(f"--output {output}: folder {folder} does not exist")
        return {cases[0][0]: output}
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"--output {output}: exists and is not a folder")
    return {case: os.path.join(output, f"{case}.nii.gz") for case, _ in cases}


def probabilities_path(mask_path):
    """CASE.nii.gz -> CASE_probabilities.nii.gz in the same folder."""
    folder, name = os.path.split(mask_path)
    return os.path.join(folder, _NIFTI.match(name)["case"] + "_probabilities.nii.gz")


def _spec(name):
    from liverzoo.errors import ConfigError
    from liverzoo.models import SPECS

    if name not in SPECS:
        raise ConfigError(f"--model {name!r}: not a zoo model; valid names: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def training_inplane_size(model_path):
    """The in-plane size a trainer checkpoint was trained on (its run's config.json), or None.

    A model sees anatomy at the scale it was trained at: the demo trains on 128x128 slices,
    and segmenting on the preset's 256 plane would show it everything twice as large.
    """
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if not model_path.endswith(".keras") or not os.path.isfile(config):
        return None
    import json

    from liverzoo.errors import DataError

    try:
        with open(config) as f:
            size = json.load(f).get("inplane_size")
    except (OSError, ValueError, AttributeError) as e:
        raise DataError(f"{config}: cannot read the run's inplane_size ({type(e).__name__}: {e}); "
                        "fix the file or pass --inplane_size") from None
    if size is None:  # the preset's plane, or a run from before the size was recorded
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise DataError(f"{config}: inplane_size must be a non-negative int, got {size!r}; "
                        "fix the file or pass --inplane_size")
    print(f"in-plane size {size}, the training run's ({config})")
    return size


def load_model(path, model_name=None, num_threads=2):
    """(predict function or Keras model, segment() keyword arguments) for a model file.

    Args:
        path: `.tflite` file, SavedModel folder, or `.keras` file.
        model_name: zoo name giving kind and preset (required for a SavedModel, and for
            files that do not carry a zoo name or metadata).
        num_threads: LiteRT threads for a `.tflite` file.
    """
    from liverzoo.errors import ConfigError, DataError

    if path.endswith(".tflite"):
        from liverzoo import lite

        if not hasattr(lite, "LiteModel"):
            raise ConfigError(f"--model_path {path}: .tflite needs liverzoo.lite.LiteModel, which is missing")
        model = lite.LiteModel(path, num_threads=num_threads)
        meta = model.metadata
        spec = _spec(model_name) if model_name else None
        kind = meta.get("kind") or (spec and spec.kind)
        preset = meta.get("preset") or (spec and spec.preset)
        if not kind or not preset:
            raise ConfigError(f"--model_path {path}: the file has no liverzoo metadata; pass --model")
        return model, dict(kind=kind, preset=preset, input_shape=model.input_shape)

    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise ConfigError(f"--model_path {path}: a folder without saved_model.pb is not a SavedModel")
        if not model_name:
            raise ConfigError(f"--model_path {path}: a SavedModel does not name its preprocessing; pass --model")
        return _saved_model_fn(path), dict(spec=_spec(model_name))

    import keras

    import liverzoo.layers  # noqa: F401  (registers the zoo's layers for deserialization)
    import liverzoo.models  # noqa: F401

    try:
        # compile=False: inference needs no loss or optimizer, and a trainer checkpoint's
        # loss (liverzoo.losses) must not have to be importable to segment with it.
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a bad archive
        raise DataError(f"--model_path {path}: cannot load the Keras model ({type(e).__name__}: {e})") from None
    if model_name:
        return model, dict(spec=_spec(model_name))
    from liverzoo.models import SPECS

    if model.name not in SPECS:
        raise ConfigError(f"--model_path {path}: model {model.name!r} is not a zoo name; pass --model")
    return model, dict(spec=SPECS[model.name])


def _saved_model_fn(path):
    import numpy as np
    import tensorflow as tf

    from liverzoo.errors import DataError

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # TF raises several types for a broken SavedModel
        raise DataError(f"--model_path {path}: cannot load the SavedModel ({type(e).__name__}: {e})") from None
    signature = loaded.signatures.get("segment") or loaded.signatures.get("serving_default")
    if signature is None:
        raise DataError(f"--model_path {path}: no 'segment' or 'serving_default' signature")
    (input_name, spec), = signature.structured_input_signature[1].items()
    output_name = "probabilities" if "probabilities" in signature.structured_outputs else sorted(
        signature.structured_outputs)[0]

    def predict_fn(batch):
        return np.asarray(signature(**{input_name: tf.constant(batch, tf.float32)})[output_name])

    predict_fn.input_shape = tuple(spec.shape[1:])
    return predict_fn


class Progress:
    """Cases and slices on one stderr line (redrawn on a terminal, start/end lines otherwise)."""

    def __init__(self, total_cases):
        self.total, self.tty = total_cases, sys.stderr.isatty()
        self.case, self.name, self.started = 0, "", time.time()

    def start(self, index, name):
        self.case, self.name, self.started = index + 1, name, time.time()
        if not self.tty:
            print(f"case {self.case}/{self.total} {name}", file=sys.stderr, flush=True)

    def slices(self, done, total):
        if self.tty:
            width = 30
            bar = "#" * (width * done // max(total, 1))
            print(f"\rcase {self.case}/{self.total} {self.name} [{bar:<{width}}] slices {done}/{total}\033[K",
                  end="", file=sys.stderr, flush=True)

    def finish(self, message):
        line = f"case {self.case}/{self.total} {self.name}: {message} ({time.time() - self.started:.1f} s)"
        print(("\r" + line + "\033[K") if self.tty else line, file=sys.stderr, flush=True)


def main(argv):
    from liverzoo.errors import ConfigError, DataError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("model_path", "input", "output"):
        if not FLAGS[name].value:
            raise ConfigError(f"--{name} is required")
    if not os.path.exists(FLAGS.model_path):
        raise ConfigError(f"--model_path {FLAGS.model_path}: no such file or folder")
    cases, many = find_inputs(FLAGS.input)
    outputs = output_paths(cases, FLAGS.output, many)

    from liverzoo.data import io
    from liverzoo.inference import segment

    model, model_kwargs = load_model(FLAGS.model_path, FLAGS.model, FLAGS.num_threads)
    model_kwargs["inplane_size"] = (FLAGS.inplane_size if FLAGS.inplane_size is not None
                                    else training_inplane_size(FLAGS.model_path))
    if not _is_nifti(FLAGS.output):
        os.makedirs(FLAGS.output, exist_ok=True)
    progress, skipped = Progress(len(cases)), []
    for index, (case, path) in enumerate(cases):
        progress.start(index, case)
        try:
            ct = io.load_volume(path)
            result = segment(model, ct, postprocess=FLAGS.postprocess, return_probabilities=FLAGS.save_probabilities,
                             tta_flip=FLAGS.tta, batch_size=FLAGS.batch_size, stride=FLAGS.stride,
                             window=FLAGS.window, step=FLAGS.step, weighting=FLAGS.weighting,
                             progress=progress.slices, **model_kwargs)
        except DataError as e:
            if not FLAGS.skip_bad:
                raise DataError(f"case {case}: {e}") from None
            skipped.append(f"case {case}: {e}")
            progress.finish("skipped")
            continue
        mask, probs = result if FLAGS.save_probabilities else (result, None)
        io.save_mask(mask, ct, outputs[case])
        if probs is not None:
            import nibabel as nib
            import numpy as np

            image = nib.Nifti1Image(np.ascontiguousarray(ct.to_source(probs)), ct.source_affine)
            io.atomic_write(probabilities_path(outputs[case]), lambda tmp, image=image: nib.save(image, tmp))
        progress.finish(f"liver {int((mask >= 1).sum())} voxels, tumor {int((mask == 2).sum())} voxels "
                        f"-> {outputs[case]}")
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) == len(cases):
        raise DataError(f"--input {FLAGS.input}: no case could be segmented ({len(skipped)} skipped)")
    print(f"segmented {len(cases) - len(skipped)} case(s), skipped {len(skipped)}")


if __name__ == "__main__":
    cli.run(main)
