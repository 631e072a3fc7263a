"""Segment CT volumes: python tools/predict.py --model_path M --input IN --output OUT.

--model_path: a `.keras` file, a SavedModel folder (tools/export.py) or a `.tflite` file
(run in LiteRT through liverzoo.lite, no TensorFlow). --input: a NIfTI file, a folder of
NIfTI files, or a DICOM series folder. --output: the mask file for one input, or a folder
(`CASE.nii.gz` per case). Masks are uint8 (0 background, 1 liver, 2 tumor) with the input's
affine and shape. See docs/inference.md (`liverzoo.runtime.segment_files` does the work).
"""
import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

from liverzoo import inference, models, runtime  # noqa: E402  (after TensorFlow is imported quietly)
from liverzoo.postprocess import OPENING_KEEP_ML, OPENING_MM  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "Model: .keras file, SavedModel folder, or .tflite file.")
flags.DEFINE_enum("model", None, sorted(models.SPECS), "Zoo model name (kind and preprocessing preset) when the "
                  "file does not say.")
flags.DEFINE_string("input", None, "A NIfTI file, a folder of NIfTI files, or a DICOM series folder.")
flags.DEFINE_string("output", None, "Output mask file (.nii/.nii.gz, or .dcm for a DICOM SEG) for one input, "
                    "or a folder.")
flags.DEFINE_enum("output_format", None, ["nifti", "dicom_seg"], "Mask format (default by the output name): "
                  "dicom_seg writes a DICOM SEG that references the input DICOM series.")
flags.DEFINE_bool("save_probabilities", False, "Also write CASE_probabilities.nii.gz (X, Y, Z, C) float32.")
flags.DEFINE_bool("tta", False, "Flip test-time augmentation (average over X, Y and XY flips; 4x slower).")
flags.DEFINE_bool("skip_bad", False, "Skip cases that cannot be read or segmented, list them, go on.")
flags.DEFINE_bool("postprocess", True, "An opening that cuts what joins the liver through a thin bridge, the "
                  "largest liver component, holes filled, tumor only inside the liver.")
flags.DEFINE_float("opening_mm", OPENING_MM, "Radius (mm) of that opening (0: none).", lower_bound=0)
flags.DEFINE_float("opening_keep_ml", OPENING_KEEP_ML, "Pieces the opening cuts off stay when smaller than this "
                   "(mL): the liver's thin edges (0: the plain opening).", lower_bound=0)
flags.DEFINE_float("liver_threshold", None, "Liver where the liver and tumor probabilities together reach this "
                   "(0-1), then liver or tumor by the larger; default: every voxel's most probable class. Below "
                   "0.5 it grows the liver mask, for a model that draws it too small (README: the demo model on "
                   "scans without contrast).")
flags.DEFINE_integer("batch_size", None, "Inputs per model call (default 8 stacks / 1 sub-volume).", lower_bound=1)
flags.DEFINE_integer("stride", 1, "Slice stride of 2.5D stacks (Eq. (1) of the DS nnU-Net paper).", lower_bound=1)
flags.DEFINE_integer("window", 20, "Slices per 3D sub-volume for models with a free depth.", lower_bound=1)
flags.DEFINE_integer("step", 10, "Slices between 3D sub-volume starts.", lower_bound=1)
flags.DEFINE_enum("weighting", "mean", inference.WEIGHTINGS, "How overlapping scores are combined.")
flags.DEFINE_integer("inplane_size", None, "Working in-plane size; 0 keeps the CT's plane (default: the training "
                     "run's, read from the config.json beside a .keras checkpoint, else the preset's).", lower_bound=0)
flags.DEFINE_float("inplane_spacing", None, "Working plane's mm per pixel (overrides --inplane_size; default: the "
                   "training run's, read from the config.json beside a .keras checkpoint).", lower_bound=0.01)
flags.DEFINE_string("preset", None, "Intensity preprocessing preset (default: the file's: a .tflite or SavedModel's "
                    "metadata, the config.json beside a .keras checkpoint, else the zoo model's).")
flags.DEFINE_integer("num_threads", 2, "CPU threads for LiteRT (.tflite models).", lower_bound=1)
flags.mark_flags_as_required(["model_path", "input", "output"])


def main(argv):
    from liverzoo.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    inference.check_liver_threshold(FLAGS.liver_threshold, "--liver_threshold")
    runtime.segment_files(
        FLAGS.model_path, FLAGS.input, FLAGS.output, model=FLAGS.model, preset=FLAGS.preset, save_probabilities=FLAGS.save_probabilities,
        skip_bad=FLAGS.skip_bad, inplane_size=FLAGS.inplane_size,
        inplane_spacing=FLAGS.inplane_spacing, num_threads=FLAGS.num_threads,
        output_format=FLAGS.output_format, postprocess=FLAGS.postprocess, opening_mm=FLAGS.opening_mm,
        opening_keep_ml=FLAGS.opening_keep_ml, liver_threshold=FLAGS.liver_threshold, tta_flip=FLAGS.tta,
        batch_size=FLAGS.batch_size, stride=FLAGS.stride,
        window=FLAGS.window, step=FLAGS.step, weighting=FLAGS.weighting)


if __name__ == "__main__":
    cli.run(main)
