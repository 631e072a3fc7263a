"""Export a checkpoint (or a zoo model with fresh weights) to SavedModel or TFLite.

    python tools/export.py --model_path=runs/x/best.keras --format=tflite --quantize=int8 \
        --output=exported/residual_unet_int8.tflite
    python tools/export.py --model=lv_net --input_shape=16,128,128,1 --format=saved_model \
        --output=exported/lv_net

TFLite files are verified in LiteRT on the embedded real demo CT (JSON report beside the
file, `x.verify.json`) unless --noverify. Outputs are written under a temporary name and
renamed when complete. See docs/export.md (`liverzoo.export.export_model` does the work).
"""
import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

from liverzoo import export, models  # noqa: E402  (after TensorFlow is imported quietly)

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A .keras checkpoint (e.g. runs/x/best.keras).")
flags.DEFINE_enum("model", None, sorted(models.MODELS), "A zoo model name, built with fresh weights (instead of "
                  "--model_path).")
flags.DEFINE_string("input_shape", None, "Input shape without batch, e.g. 128,128,7 or 16,128,128,1 "
                    "(with --model; default: the model's default; with --model_path: the checkpoint's).")
flags.DEFINE_enum("format", "tflite", export.FORMATS, "What to write.")
flags.DEFINE_enum("quantize", "none", export.QUANTIZE_MODES, "TFLite quantization.")
flags.DEFINE_string("representative_data", None, "int8 calibration data: the user's TFRecord shards (a folder "
                    "with manifest.json, the manifest or a glob; same preset as the model). Default: the "
                    "embedded real demo CT, preprocessed with the model's preset.")
flags.DEFINE_string("preset", None, "Preprocessing preset stored in the file (default: the training run's, else the zoo model's).")
flags.DEFINE_string("output", None, "Output .tflite file or SavedModel folder.")
flags.DEFINE_bool("verify", True, "Run the TFLite file in LiteRT on real CT and write x.verify.json.")
flags.DEFINE_integer("num_verify", 8, "Real CT inputs used by the verification.", lower_bound=1)
flags.DEFINE_float("min_agreement", export.MIN_AGREEMENT, "Refuse a quantized (fp16/dynamic/int8) file whose "
                   "argmax agreement with Keras on the verification CT is below this: exit 1, no file.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_bool("force", False, "Keep a quantized file that verifies below --min_agreement (with a warning).")
flags.mark_flags_as_required(["output"])


def main(argv):
    from liverzoo.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    export.export_model(FLAGS.output, model_path=FLAGS.model_path, model=FLAGS.model, input_shape=FLAGS.input_shape,
                        format=FLAGS.format, quantize=FLAGS.quantize, representative_data=FLAGS.representative_data,
                        preset=FLAGS.preset, verify=FLAGS.verify, num_verify=FLAGS.num_verify,
                        min_agreement=FLAGS.min_agreement, force=FLAGS.force)


if __name__ == "__main__":
    cli.run(main)
