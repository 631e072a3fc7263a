"""`export_model`: a checkpoint or a zoo model to a verified file, what tools/export.py runs."""
import os

from liverzoo.errors import ConfigError, DataError
from liverzoo.export.calibration import demo_inputs
from liverzoo.export.saved_model import export_saved_model
from liverzoo.export.tflite import QUANTIZE_MODES, convert_tflite, write_tflite, zoo_metadata
from liverzoo.export.verify import verify_tflite
from liverzoo.lite import SIGNATURE

FORMATS = ("saved_model", "tflite")
#: Lowest argmax agreement with Keras a quantized file may verify at (below: refused).
MIN_AGREEMENT = 0.98


def parse_input_shape(text):
    """`"H,W,T"` or `"D,H,W,1"` as a tuple of positive ints (a tuple is returned as is)."""
    if not isinstance(text, str):
        return tuple(text)
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ConfigError(f"--input_shape={text!r}: expected H,W,T or D,H,W,1 positive integers")
    return shape


def _check_options(output, format, quantize, representative_data):
    if format not in FORMATS:
        raise ConfigError(f"--format={format!r}: expected saved_model or tflite")
    if quantize not in QUANTIZE_MODES:
        raise ConfigError(f"--quantize={quantize!r}: expected none, fp16, dynamic or int8")
    if format == "tflite" and not output.endswith(".tflite"):
        raise ConfigError(f"--output={output}: a TFLite file must end in .tflite")
    if format == "saved_model" and quantize != "none":
        raise ConfigError("--quantize applies to --format=tflite only")
    if representative_data and quantize != "int8":
        raise ConfigError("--representative_data is for --quantize=int8 only")


def _load(model_path, model, input_shape, preset):
    """(Keras model, export input shape or None for the model's own, the training run's working
    plane `{"inplane_size", "inplane_spacing"}` and, unless `preset` is given, its recorded
    preset, to store in the file's metadata)."""
    if (model_path is None) == (model is None):
        raise ConfigError("give exactly one of --model_path (a .keras checkpoint) or --model (a zoo name)")
    if model is not None:
        from liverzoo import models

        kwargs = {} if input_shape is None else {"input_shape": parse_input_shape(input_shape)}
        return models.build(model, **kwargs), None, {}
    if not os.path.exists(model_path):
        raise DataError(f"--model_path={model_path}: no such file")
    if not os.path.isfile(model_path) or not model_path.endswith(".keras"):
        raise DataError(f"--model_path={model_path}: not a .keras file")
    from liverzoo import runtime

    # The file keeps the checkpoint's input; the run's working plane (config.json beside the
    # checkpoint) goes into the metadata, so that an app draws CT at the scale it was trained at.
    segmenter = runtime.load_segmenter(model_path, preset=preset, inplane_size=0)
    size, spacing, _ = runtime.training_plane(model_path)
    plane = {k: v for k, v in (("inplane_size", size), ("inplane_spacing", spacing)) if v is not None}
    if preset is None and segmenter.preset is not None:
        plane["preset"] = segmenter.preset  # the run's (config.json), else the zoo model's
    keras_model = segmenter.model
    return keras_model, None if input_shape is None else parse_input_shape(input_shape), plane


def export_model(output, *, model_path=None, model=None, input_shape=None, format="tflite", quantize="none",
                 representative_data=None, preset=None, verify=True, num_verify=8, min_agreement=MIN_AGREEMENT,
                 force=False, log=print):
    """Exports a `.keras` checkpoint, or a zoo model with fresh weights, to SavedModel or TFLite.

    A TFLite file is verified in LiteRT on the embedded real demo CT (`verify_tflite`, JSON
    report beside the file) unless `verify=False`. Outputs are written atomically.

    Args:
        output: `.tflite` file or SavedModel folder.
        model_path: a `.keras` checkpoint (exclusive with `model`).
        model: a zoo model name, built with fresh weights.
        input_shape: per-example input shape, a tuple or "H,W,T" / "D,H,W,1" text; default
            the model's.
        format: "saved_model" or "tflite".
        quantize: one of `QUANTIZE_MODES` (TFLite only).
        representative_data: int8 calibration data (see `convert_tflite`); default the demo CT.
        preset: preprocessing preset stored in the file (default the training run's, from the
            config.json beside the checkpoint, else the zoo model's).
        verify: run the TFLite file in LiteRT and write the report.
        num_verify: real CT inputs used by the verification.
        min_agreement: a quantized file (fp16, dynamic, int8) whose verification's argmax
            agreement with Keras falls below this is refused: its figures are logged, the file
            and its report are removed and `ExportRefused` is raised.
        force: keep a refused file anyway (the error is then a logged warning).
        log: where the summary lines go.

    Returns:
        `output`.

    Raises:
        ConfigError: bad options, or a model that cannot be exported; DataError: bad files;
        ExportRefused (a DataError): a quantized file below `min_agreement`, without `force`.

    Example:
        >>> export_model("ru_int8.tflite", model="residual_unet", input_shape="64,64,1", quantize="int8")
    """
    _check_options(output, format, quantize, representative_data)
    if preset is not None:
        from liverzoo.data.preprocess import preset_option

        preset_option(preset)  # before the model loads: a file with an unknown preset is of no use
    keras_model, input_shape, plane = _load(model_path, model, input_shape, preset)
    if format == "saved_model":
        export_saved_model(keras_model, output, input_shape=input_shape,
                           metadata=_saved_model_metadata(keras_model, preset, plane))
        log(f"wrote SavedModel {output} (signature '{SIGNATURE}')")
        return output
    metadata = dict(zoo_metadata(keras_model, preset=preset, input_shape=input_shape), **plane)
    if metadata["preset"] is None and (verify or (quantize == "int8" and not representative_data)):
        raise ConfigError(
            f"model {keras_model.name!r} is not a zoo name, so its preprocessing is unknown: pass --preset "
            "(needed for the demo CT used by int8 calibration and verification)"
        )
    data = convert_tflite(keras_model, quantize, representative_data, metadata=metadata, input_shape=input_shape)
    write_tflite(data, output)
    log(f"wrote {output} ({len(data):,} bytes, {quantize})")
    if verify:
        inputs = demo_inputs(metadata["input_shape"], metadata["preset"], num_samples=num_verify,
                             inplane_spacing=metadata.get("inplane_spacing"))
        report = verify_tflite(output, keras_model, inputs)
        log(
            f"verified in LiteRT on {report['num_inputs']} demo CT inputs: max |dp| "
            f"{report['max_abs_prob_diff']:.2g}, argmax agreement {report['argmax_agreement']:.4f}, "
            f"foreground Dice {report['dice']['foreground']:.4f}; ops: {', '.join(report['ops'])}"
        )
        _check_agreement(output, quantize, report, min_agreement, force, log)
    return output


def _saved_model_metadata(keras_model, preset, plane):
    """What `liverzoo.runtime` needs to segment with the SavedModel without `--model`: the
    zoo name, input kind, preset (given, the run's, else the zoo model's) and working plane."""
    from liverzoo import models
    from liverzoo.layout import layout_of

    spec = models.SPECS.get(keras_model.name)
    try:
        kind = layout_of(tuple(keras_model.input_shape[1:])).name
    except ConfigError:
        kind = spec.kind if spec is not None else None
    metadata = {"model": keras_model.name, "kind": kind, "preset": spec.preset if spec is not None else None}
    metadata.update(plane)  # the training run's preset and plane (its config.json)
    if preset is not None:
        metadata["preset"] = preset
    return {k: v for k, v in metadata.items() if v is not None}


class ExportRefused(DataError):
    """A quantized file verified below the agreement it must keep with Keras."""


def _check_agreement(output, quantize, report, min_agreement, force, log):
    """Refuses (removes, raises) a quantized file whose argmax agreement is below `min_agreement`."""
    agreement = report["argmax_agreement"]
    if quantize == "none" or agreement >= min_agreement:
        return
    message = (f"{output}: {quantize} file agrees with Keras on {agreement:.4f} of voxels, below --min_agreement="
               f"{min_agreement:g} (max |dp| {report['max_abs_prob_diff']:.2g}, foreground Dice "
               f"{report['dice']['foreground']:.4f})")
    if force:
        log(f"warning: {message}; kept (--force)")
        return
    for path in (output, os.path.splitext(output)[0] + ".verify.json"):
        if os.path.exists(path):
            os.remove(path)
    raise ExportRefused(f"{message}; file not written (--force keeps it, or try another --quantize)")
