"""Export a checkpoint (or a zoo model with fresh weights) to SavedModel or TFLite.

    python tools/export.py --model_path=runs/x/best.keras --format=tflite --quantize=int8 \
        --output=exported/residual_unet_int8.tflite
    python tools/export.py --model=lv_net --input_shape=16,128,128,1 --format=saved_model \
        --output=exported/lv_net

TFLite files are verified in LiteRT on the embedded real demo CT (JSON report beside the
file, `x.verify.json`) unless --noverify. Outputs are written under a temporary name and
renamed when complete. See docs/export.md.
"""
import os

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

FLAGS = flags.FLAGS
flags.DEFINE_string("model_path", None, "A .keras checkpoint (e.g. runs/x/best.keras).")
flags.DEFINE_string("model", None, "A zoo model name, built with fresh weights (instead of --model_path).")
flags.DEFINE_string("input_shape", None, "Input shape without batch, e.g. 128,128,7 or 16,128,128,1 "
                    "(with --model; default: the model's default; with --model_path: the checkpoint's).")
flags.DEFINE_string("format", "tflite", "What to write: saved_model or tflite.")
flags.DEFINE_string("quantize", "none", "TFLite quantization: none, fp16, dynamic or int8.")
flags.DEFINE_string("representative_data", None, "int8 calibration data: the user's TFRecord shards (a folder "
                    "with manifest.json, the manifest or a glob; same preset as the model). Default: the "
                    "embedded real demo CT, preprocessed with the model's preset.")
flags.DEFINE_string("preset", None, "Preprocessing preset stored in the file (default: the zoo model's).")
flags.DEFINE_string("output", None, "Output .tflite file or SavedModel folder.")
flags.DEFINE_bool("verify", True, "Run the TFLite file in LiteRT on real CT and write x.verify.json.")
flags.DEFINE_integer("num_verify", 8, "Real CT inputs used by the verification.")


def _parse_shape(text):
    from liverzoo.errors import ConfigError

    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ConfigError(f"--input_shape={text!r}: expected H,W,T or D,H,W,1 positive integers")
    return shape


def _load_model():
    from liverzoo.errors import ConfigError, DataError

    if (FLAGS.model_path is None) == (FLAGS.model is None):
        raise ConfigError("give exactly one of --model_path (a .keras checkpoint) or --model (a zoo name)")
    if FLAGS.model is not None:
        from liverzoo import models

        kwargs = {} if FLAGS.input_shape is None else {"input_shape": _parse_shape(FLAGS.input_shape)}
        return models.build(FLAGS.model, **kwargs), None
    if not os.path.isfile(FLAGS.model_path) or not FLAGS.model_path.endswith(".keras"):
        raise DataError(f"--model_path={FLAGS.model_path}: not a .keras file")
    import keras

    import liverzoo.layers  # noqa: F401  (registers the custom layers for loading)

    try:
        model = keras.models.load_model(FLAGS.model_path, safe_mode=True, compile=False)
    except Exception as e:  # corrupt archive, unknown layer, ...
        raise DataError(f"--model_path={FLAGS.model_path}: cannot load: {str(e).splitlines()[0]}") from None
    shape = None if FLAGS.input_shape is None else _parse_shape(FLAGS.input_shape)
    return model, shape


def main(argv):
    from absl import logging

    from liverzoo.errors import ConfigError

    logging.set_verbosity(logging.WARNING)  # TF's SavedModel writer logs every step at INFO

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.format not in ("saved_model", "tflite"):
        raise ConfigError(f"--format={FLAGS.format!r}: expected saved_model or tflite")
    if FLAGS.quantize not in ("none", "fp16", "dynamic", "int8"):
        raise ConfigError(f"--quantize={FLAGS.quantize!r}: expected none, fp16, dynamic or int8")
    if not FLAGS.output:
        raise ConfigError("--output is required (a .tflite file or a SavedModel folder)")
    if FLAGS.format == "tflite" and not FLAGS.output.endswith(".tflite"):
        raise ConfigError(f"--output={FLAGS.output}: a TFLite file must end in .tflite")
    if FLAGS.format == "saved_model" and FLAGS.quantize != "none":
        raise ConfigError("--quantize applies to --format=tflite only")
    if FLAGS.representative_data and FLAGS.quantize != "int8":
        raise ConfigError("--representative_data is for --quantize=int8 only")
    model, input_shape = _load_model()
    from liverzoo import export

    if FLAGS.format == "saved_model":
        export.export_saved_model(model, FLAGS.output, input_shape=input_shape)
        print(f"wrote SavedModel {FLAGS.output} (signature '{export.SIGNATURE}')")
        return
    metadata = export.zoo_metadata(model, preset=FLAGS.preset, input_shape=input_shape)
    if metadata["preset"] is None and (FLAGS.verify or (FLAGS.quantize == "int8" and not FLAGS.representative_data)):
        raise ConfigError(
            f"model {model.name!r} is not a zoo name, so its preprocessing is unknown: pass --preset "
            "(needed for the demo CT used by int8 calibration and verification)"
        )
    data = export.convert_tflite(model, FLAGS.quantize, FLAGS.representative_data,
                                 metadata=metadata, input_shape=input_shape)
    export.write_tflite(data, FLAGS.output)
    print(f"wrote {FLAGS.output} ({len(data):,} bytes, {FLAGS.quantize})")
    if FLAGS.verify:
        inputs = export.demo_inputs(metadata["input_shape"], metadata["preset"], num_samples=FLAGS.num_verify)
        report = export.verify_tflite(FLAGS.output, model, inputs)
        print(
            f"verified in LiteRT on {report['num_inputs']} demo CT inputs: max |dp| "
            f"{report['max_abs_prob_diff']:.2g}, argmax agreement {report['argmax_agreement']:.4f}, "
            f"foreground Dice {report['dice']['foreground']:.4f}; ops: {', '.join(report['ops'])}"
        )


if __name__ == "__main__":
    cli.run(main)
