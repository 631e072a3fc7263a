"""One loader for every model format, and segmentation of CT files with it.

`load_segmenter(path)` takes a `.keras` file, a SavedModel folder (`liverzoo.export`) or a
`.tflite` file and returns a `Segmenter`: the model's spec (zoo name when known, kind "2d"/"3d",
preprocessing preset, input shape, the in-plane size its training run recorded) and a
`predict(batch) -> probabilities` function. The `.tflite` branch imports nothing of TensorFlow
(LiteRT through `liverzoo.lite`), so the phone-side path stays TF-free.

`segment_files` is what tools/predict.py runs: NIfTI files, a folder of them or a DICOM
series in, one uint8 mask per case out (see docs/inference.md).

Example:
    >>> from liverzoo import runtime
    >>> segmenter = runtime.load_segmenter("runs/x/best.keras", "residual_unet")
    >>> probs = segmenter.predict(batch)                      # (B, H, W, T) -> (B, H, W, C)
    >>> mask = segmenter.segment(io.load_volume("ct.nii.gz"))  # uint8 (X, Y, Z)
"""
import dataclasses
import json
import os
import sys
import time
import warnings

import numpy as np

from liverzoo.errors import ConfigError, DataError
from liverzoo.layout import layout_of

MODEL_FORMATS = ("keras", "saved_model", "tflite")


@dataclasses.dataclass
class Segmenter:
    """A loaded model and what preprocessing it needs.

    Attributes:
        path: the model file or folder.
        format: "keras", "saved_model" or "tflite".
        predict: `predict(batch float32) -> float32 probabilities`, batch `(B,) + input_shape`.
        input_shape: per-example input shape (`None` for free dimensions).
        name: zoo model name, when known.
        kind: "2d" or "3d" (`liverzoo.layout`).
        preset: preprocessing preset, None when unknown.
        inplane_size: the working in-plane size the training run recorded (config.json beside a
            `.keras` checkpoint), None for the preset's.
        inplane_spacing: the working plane's mm per pixel the training run recorded (it wins
            over `inplane_size`), None when the run used a fixed size.
        run_config: where the working plane came from (the run's config.json, or a `.tflite`
            file's metadata), or None.
        num_classes: classes the file's metadata declares, or None.
        model: the `keras.Model`, `liverzoo.lite.LiteModel` or loaded SavedModel.
        unknown: why the preprocessing is unknown (for the error), None when it is known.
        zoo_defaults: a `.keras` file without its run's config.json, segmented with the zoo
            model's preprocessing because nothing else names one.
    """

    path: str
    format: str
    predict: object
    input_shape: tuple
    name: str = None
    kind: str = None
    preset: str = None
    inplane_size: int = None
    inplane_spacing: float = None
    run_config: str = None
    num_classes: int = None
    model: object = None
    unknown: str = None
    zoo_defaults: bool = False

    def require_preprocessing(self, hint="pass --model (model= in Python)"):
        """`self`, or ConfigError naming the file when its kind or preset is unknown."""
        if self.kind is None or self.preset is None:
            raise ConfigError(f"{self.path}: {self.unknown}; {hint}")
        return self

    def segment(self, ct, **kwargs):
        """`liverzoo.inference.segment` with this model (kwargs: postprocess, inplane_size, ...)."""
        from liverzoo import inference

        self.require_preprocessing()
        kwargs.setdefault("inplane_size", self.inplane_size)
        kwargs.setdefault("inplane_spacing", self.inplane_spacing)
        if self.num_classes is not None:
            kwargs.setdefault("num_classes", self.num_classes)
        return inference.segment(self.predict, ct, kind=self.kind, preset=self.preset,
                                 input_shape=self.input_shape, **kwargs)


def load_segmenter(path, model=None, *, kind=None, preset=None, inplane_size=None, inplane_spacing=None,
                   num_threads=2, warn=True):
    """Loads a `.keras` file, a SavedModel folder or a `.tflite` file for segmentation.

    Args:
        path: the model file or folder.
        model: zoo name giving kind and preset when the file does not (a SavedModel never
            does; a `.keras` file does when its model keeps a zoo name).
        kind: "2d" or "3d", overriding the file's and the zoo's.
        preset: preprocessing preset, overriding the file's and the zoo's.
        inplane_size: working in-plane size, overriding the training run's (whose
            config.json is then not read; 0 keeps the CT's plane).
        inplane_spacing: working plane's mm per pixel, overriding the training run's (and
            any size).
        num_threads: LiteRT CPU threads for a `.tflite` file.
        warn: `warnings.warn` when a `.keras` file has no run config.json beside it and no
            preprocessing is given: it is then segmented with the zoo model's defaults, which
            differ from the demo's (`Segmenter.zoo_defaults` says so either way).

    Returns:
        A `Segmenter` (its `preset` is None when nothing names it; `segment` then refuses).

    Raises:
        ConfigError: no such file, unknown format, unknown zoo name.
        DataError: the file cannot be read as a model.

    Example:
        >>> load_segmenter("residual_unet_int8.tflite").preset
        'residual_unet'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"{path}: no such file or folder")
    if path.endswith(".tflite"):
        segmenter = _load_tflite(path, num_threads)
    elif os.path.isdir(path):
        segmenter = _load_saved_model(path)
    elif path.endswith(".keras"):
        segmenter = _load_keras(path, read_run_config=inplane_size is None and inplane_spacing is None,
                                read_preset=preset is None)
    else:
        raise ConfigError(f"{path}: unknown model format; expected a .keras file, a SavedModel folder "
                          "or a .tflite file")
    recorded_preset = segmenter.preset  # a .keras file's: its run's config.json's, read by _load_keras
    spec = None
    if model is not None and (segmenter.kind is None or segmenter.preset is None or segmenter.format != "tflite"):
        spec = zoo_spec(model)  # imports TensorFlow: a complete .tflite file skips it
    elif segmenter.format == "keras":
        from liverzoo.models import SPECS

        spec = SPECS.get(segmenter.name)
    if spec is not None:
        segmenter.name = model or segmenter.name
        segmenter.kind = segmenter.kind or spec.kind
        segmenter.preset = segmenter.preset or spec.preset
    elif segmenter.format == "keras":
        segmenter.unknown = f"model {segmenter.name!r} is not a zoo name"
    segmenter.kind = kind or segmenter.kind or _layout_name(segmenter.input_shape)
    segmenter.preset = preset or segmenter.preset
    if inplane_size is not None or inplane_spacing is not None:
        segmenter.inplane_size, segmenter.inplane_spacing, segmenter.run_config = inplane_size, inplane_spacing, None
    given = preset is not None or inplane_size is not None or inplane_spacing is not None
    segmenter.zoo_defaults = (segmenter.format == "keras" and not given and segmenter.run_config is None
                              and recorded_preset is None)
    if segmenter.zoo_defaults and warn:
        warnings.warn(f"preset {segmenter.preset}: {_zoo_defaults_warning(path, cli=False)}", stacklevel=2)
    return segmenter


def _zoo_defaults_warning(path, cli):
    """What a `.keras` file away from its run's config.json is segmented with, and what to do."""
    demo, give = (("--preset=residual_unet_window --inplane_spacing=3", "pass --preset and --inplane_spacing") if cli
                  else ("preset='residual_unet_window', inplane_spacing=3", "pass preset= and inplane_spacing="))
    return (f"no config.json beside {path}, so these are the zoo model's defaults; if it was trained otherwise "
            f"(the demo: {demo}), {give} or keep the checkpoint beside its run's config.json")


def zoo_spec(name):
    """The `liverzoo.models.SPECS` entry called `name`, or ConfigError listing the names."""
    from liverzoo.models import SPECS

    if name not in SPECS:
        raise ConfigError(f"--model {name!r}: not a zoo model; valid names: {', '.join(sorted(SPECS))}")
    return SPECS[name]


def _layout_name(input_shape):
    try:
        return layout_of(input_shape).name
    except ConfigError:
        return None


def _load_tflite(path, num_threads):
    from liverzoo import lite

    model = lite.LiteModel(path, num_threads=num_threads)
    meta = model.metadata
    has_plane = meta.get("inplane_size") is not None or meta.get("inplane_spacing") is not None
    # Files exported from a trainer checkpoint carry the run's working plane (absent: the preset's).
    return Segmenter(path, "tflite", model.predict, model.input_shape, name=meta.get("model"), kind=meta.get("kind"),
                     preset=meta.get("preset"), num_classes=meta.get("num_classes"), model=model,
                     inplane_size=meta.get("inplane_size"), inplane_spacing=meta.get("inplane_spacing"),
                     run_config=f"{path}'s metadata" if has_plane else None,
                     unknown="the file has no liverzoo metadata")


def _load_saved_model(path):
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ConfigError(f"{path}: a folder without saved_model.pb is not a SavedModel")
    import tensorflow as tf

    from liverzoo.lite import OUTPUT_NAME, SIGNATURE

    try:
        loaded = tf.saved_model.load(path)
    except Exception as e:  # TF raises several types for a broken SavedModel
        raise DataError(f"{path}: cannot load the SavedModel ({type(e).__name__}: {_first_line(e)})") from None
    signature = loaded.signatures.get(SIGNATURE) or loaded.signatures.get("serving_default")
    if signature is None:
        raise DataError(f"{path}: no '{SIGNATURE}' or 'serving_default' signature")
    (input_name, spec), = signature.structured_input_signature[1].items()
    outputs = signature.structured_outputs
    output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else sorted(outputs)[0]

    def predict(batch):
        return np.asarray(signature(**{input_name: tf.constant(batch, tf.float32)})[output_name])

    meta = _saved_model_metadata(path)
    has_plane = meta.get("inplane_size") is not None or meta.get("inplane_spacing") is not None
    return Segmenter(path, "saved_model", predict, tuple(spec.shape[1:]), model=loaded, name=meta.get("model"),
                     kind=meta.get("kind"), preset=meta.get("preset"), inplane_size=meta.get("inplane_size"),
                     inplane_spacing=meta.get("inplane_spacing"),
                     run_config=os.path.join(path, SAVED_MODEL_METADATA) if has_plane else None,
                     unknown="a SavedModel without liverzoo's metadata does not name its preprocessing")


#: liverzoo's metadata in a SavedModel folder (model, kind, preset, working plane), written by
#: `liverzoo.export.export_saved_model`: `assets.extra/` is TF Serving's folder for files that
#: TensorFlow does not load.
SAVED_MODEL_METADATA = os.path.join("assets.extra", "liverzoo.json")


def _saved_model_metadata(path):
    """The metadata `liverzoo.export` writes into a SavedModel folder, or {} for one without."""
    from liverzoo.data.preprocess import PRESETS

    file = os.path.join(path, SAVED_MODEL_METADATA)
    if not os.path.isfile(file):
        return {}
    meta = _json_object(file, "the model's metadata")
    if meta.get("preset") is not None and meta["preset"] not in PRESETS:
        raise DataError(f"{file}: unknown preset {meta['preset']!r} (valid: {', '.join(sorted(PRESETS))}); "
                        "fix the file or pass --preset")
    return meta


def _load_keras(path, read_run_config=True, read_preset=True):
    import keras

    import liverzoo.layers  # noqa: F401  (registers the zoo's layers for deserialization)
    import liverzoo.models  # noqa: F401
    from liverzoo import inference

    try:
        # compile=False: inference needs no loss or optimizer, and a trainer checkpoint's
        # loss (liverzoo.losses) must not have to be importable to segment with it.
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises many types for a bad archive
        raise DataError(f"{path}: cannot load the Keras model ({type(e).__name__}: {_first_line(e)})") from None
    size, spacing, config = training_plane(path) if read_run_config else (None, None, None)
    preset = training_preset(path) if read_preset else None
    return Segmenter(path, "keras", inference.keras_predict_fn(model), tuple(model.input_shape[1:]),
                     name=model.name, preset=preset, inplane_size=size, inplane_spacing=spacing, run_config=config,
                     model=model)


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _json_object(file, what, hint=""):
    """The JSON object in `file`; DataError naming the file (and `hint`) when it is not one."""
    try:
        with open(file) as f:
            value = json.load(f)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: cannot read {what} ({type(e).__name__}: {e}){hint}") from None
    return value


def _run_config(model_path, flag):
    """(path, dict) of the config.json beside a `.keras` checkpoint, or (path, None) where there
    is none; DataError naming the file and `--flag` when it cannot be read as a JSON object."""
    config = os.path.join(os.path.dirname(os.path.abspath(model_path)), "config.json")
    if not model_path.endswith(".keras") or not os.path.isfile(config):
        return config, None
    return config, _json_object(config, f"the run's {flag}", f"; fix the file or pass --{flag}")


def training_plane(model_path):
    """(in-plane size, in-plane spacing, config.json) a trainer checkpoint was trained on, or
    (None, None, None).

    A model sees anatomy at the scale it was trained at: the demo trains on slices at 3 mm a
    pixel (runs from before that: on the whole slice stretched to 128x128), and segmenting on
    the preset's 256 plane would show it everything at another size. Size and spacing come
    from the run's config.json beside a `.keras` file.

    Raises:
        DataError: the config.json cannot be read or holds a bad size or spacing.
    """
    config, run = _run_config(model_path, "inplane_size")
    if run is None:
        return None, None, None
    size, spacing = run.get("inplane_size"), run.get("inplane_spacing")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise DataError(f"{config}: inplane_size must be a non-negative int, got {size!r}; "
                        "fix the file or pass --inplane_size")
    if spacing is not None and (not isinstance(spacing, (int, float)) or isinstance(spacing, bool) or spacing <= 0):
        raise DataError(f"{config}: inplane_spacing must be a positive number of mm, got {spacing!r}; "
                        "fix the file or pass --inplane_spacing")
    if size is None and spacing is None:  # the preset's plane, or a run from before either was recorded
        return None, None, None
    return size, None if spacing is None else float(spacing), config


def training_preset(model_path):
    """The preprocessing preset a trainer checkpoint's run recorded in its config.json, or None
    (no config.json beside it, or none recorded: the zoo model's preset applies).

    The demo trains with a fixed-window variant of the paper's preset (`preprocess.window_variant`);
    segmenting with the paper's would show the model other intensities than it learned.

    Raises:
        DataError: the config.json cannot be read or names an unknown preset.
    """
    from liverzoo.data.preprocess import PRESETS

    config, run = _run_config(model_path, "preset")
    preset = None if run is None else run.get("preset")
    if preset is not None and preset not in PRESETS:
        raise DataError(f"{config}: unknown preset {preset!r} (valid: {', '.join(sorted(PRESETS))}); "
                        "fix the file or pass --preset")
    return preset


# --- Segmenting files -------------------------------------------------------------------------


def find_inputs(path):
    """([(case, input path)], several) for a NIfTI file, a folder of NIfTI files, or a DICOM folder."""
    from liverzoo.data import io

    if os.path.isfile(path):
        if io.nifti_case(path) is None:
            raise ConfigError(f"--input {path}: expected a .nii/.nii.gz file, a folder of them, or a DICOM folder")
        return [(io.nifti_case(path), path)], False
    if not os.path.isdir(path):
        raise ConfigError(f"--input {path}: no such file or folder")
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and io.nifti_case(n)
                   and os.path.isfile(os.path.join(path, n)))
    if names:
        return [(io.nifti_case(n), os.path.join(path, n)) for n in names], True
    # No NIfTI files: a DICOM series folder (load_volume says so if it is not one).
    return [(os.path.basename(os.path.normpath(path)), path)], False


def _is_file_name(output):
    from liverzoo.data import io

    return io.nifti_case(output) is not None or str(output).lower().endswith(".dcm")


def output_paths(cases, output, many, output_format=None):
    """{case: output path}: `output` itself for one input given a .nii[.gz] / .dcm name, else a
    folder with `CASE.nii.gz` (or `CASE.dcm` for `output_format="dicom_seg"`) per case."""
    from liverzoo.data import io

    if _is_file_name(output):
        named = "dicom_seg" if str(output).lower().endswith(".dcm") else "nifti"
        if output_format is not None and output_format != named:
            # A DICOM SEG named .nii.gz (or a NIfTI named .dcm) would mislead every tool that opens it.
            raise ConfigError(f"--output {output}: the name says {named}, --output_format={output_format}; "
                              "name the file .dcm for a DICOM SEG, .nii.gz for NIfTI")
        if many:
            raise ConfigError(f"--output {output}: several inputs need an output folder, not a file")
        # A missing folder is made when the mask is written (as export does), not before.
        io.check_creatable_dir(os.path.dirname(os.path.abspath(output)), "--output")
        return {cases[0][0]: output}
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConfigError(f"--output {output}: exists and is not a folder")
    suffix = ".dcm" if output_format == "dicom_seg" else ".nii.gz"
    return {case: os.path.join(output, f"{case}{suffix}") for case, _ in cases}


def probabilities_path(mask_path):
    """CASE.nii.gz -> CASE_probabilities.nii.gz (CASE.dcm -> CASE_probabilities.dcm) beside it."""
    from liverzoo.data import io

    folder, name = os.path.split(mask_path)
    if name.lower().endswith(".dcm"):
        return os.path.join(folder, name[:-4] + "_probabilities.dcm")
    return os.path.join(folder, io.nifti_case(name) + "_probabilities.nii.gz")


def _write_result(ct, mask, probs, path, output_format, segmenter, model_path):
    """Writes the mask (and probabilities) as NIfTI or, for a DICOM series, as DICOM SEG."""
    from liverzoo.data import io

    if output_format == "dicom_seg":
        from liverzoo.data import dicom_seg

        dicom_seg.write_segmentation(mask, ct, path, model_name=segmenter.name or "liverzoo", model_path=model_path)
        if probs is not None:
            dicom_seg.write_segmentation(probs, ct, probabilities_path(path), model_name=segmenter.name or "liverzoo",
                                         model_path=model_path, fractional=True)
        return
    io.save_mask(mask, ct, path)
    if probs is not None:
        import nibabel as nib

        image = nib.Nifti1Image(np.ascontiguousarray(ct.to_source(probs)), ct.source_affine)
        image.set_qform(ct.source_affine, code=1)  # the same header codes as the mask (nibabel: qform 0, sform 2)
        image.set_sform(ct.source_affine, code=1)
        io.atomic_write(probabilities_path(path), lambda tmp: nib.save(image, tmp))


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


def _preprocessing_line(segmenter, model_path):
    """Says how new CT is drawn for the model and where that came from: a checkpoint copied
    away from its run's config.json is segmented with the zoo model's defaults, which differ
    from the demo's (its fixed-window preset, 3 mm planes), so that case gets a warning."""
    if segmenter.inplane_spacing:
        plane = f"in-plane spacing {segmenter.inplane_spacing:g} mm a pixel"
    elif segmenter.inplane_size == 0:
        plane = "the CT's own plane"
    elif segmenter.inplane_size:
        plane = f"in-plane size {segmenter.inplane_size}"
    else:
        from liverzoo.data.preprocess import get_preset

        size = get_preset(segmenter.preset).inplane_size
        plane = f"in-plane size {size} (the preset's)" if size else "the CT's own plane (the preset's)"
    line = f"preprocessing: preset {segmenter.preset}, {plane}"
    if segmenter.run_config is not None:
        return f"{line} (the training run's: {segmenter.run_config})"
    if segmenter.zoo_defaults:
        return f"{line}; warning: {_zoo_defaults_warning(model_path, cli=True)}"
    return line


def open_volume(path, lazy=True):
    """A NIfTI file as `liverzoo.streaming.NiftiSlabs` (read slab by slab) when `lazy`, else loaded.

    DICOM series folders are always loaded (`liverzoo.data.io.load_volume`).
    """
    from liverzoo import streaming
    from liverzoo.data import io

    if lazy and os.path.isfile(path) and io.nifti_case(path) is not None:
        return streaming.NiftiSlabs(path)
    return io.load_volume(path)


def segment_files(model_path, input_path, output, *, model=None, preset=None, save_probabilities=False,
                  skip_bad=False, inplane_size=None, inplane_spacing=None, num_threads=2, output_format=None,
                  log=print, **segment_kwargs):
    """Segments NIfTI files (or a DICOM series) with a model file and writes uint8 masks.

    Every path is checked before the model loads. Masks (0 background, 1 liver, 2 tumor) get
    the input's affine, shape and axis order; files are written atomically.

    Args:
        model_path: `.keras` file, SavedModel folder or `.tflite` file (`load_segmenter`).
        input_path: a NIfTI file, a folder of NIfTI files, or a DICOM series folder.
        output: the mask file for one input (`.nii[.gz]`, or `.dcm` for a DICOM SEG), or a
            folder (`CASE.nii.gz`, or `CASE.dcm`, per case).
        model: zoo name when the file does not give kind and preset.
        preset: preprocessing preset, overriding the file's (a `.tflite` or SavedModel's
            metadata, the config.json beside a `.keras` checkpoint) and the zoo model's.
        save_probabilities: also write `CASE_probabilities.nii.gz` (X, Y, Z, C) float32.
        skip_bad: skip (and list) cases that cannot be read or segmented instead of failing.
        inplane_size: working in-plane size; default the training run's, else the preset's.
        inplane_spacing: working plane's mm per pixel; default the training run's.
        num_threads: LiteRT threads for a `.tflite` file.
        output_format: "nifti" or "dicom_seg" (`liverzoo.data.dicom_seg`: a SEG that references
            the input DICOM series; probabilities as a FRACTIONAL SEG); default by the output
            name (`.dcm` -> "dicom_seg", else "nifti").
        log: where the summary lines go.
        **segment_kwargs: passed to `liverzoo.inference.segment` (postprocess, opening_mm,
            liver_threshold, tta_flip, batch_size, stride, window, step, weighting).

    Returns:
        The list of skipped cases' error lines.

    Raises:
        ConfigError: bad paths or model; DataError: a case failed (or all were skipped).
    """
    from liverzoo.data import io

    if not os.path.exists(model_path):
        raise ConfigError(f"--model_path {model_path}: no such file or folder")
    from liverzoo.data import dicom_seg

    cases, many = find_inputs(input_path)
    output_format = dicom_seg.output_format(output, output_format)
    outputs = output_paths(cases, output, many, output_format)
    if preset is not None:
        from liverzoo.data.preprocess import preset_option

        preset_option(preset)
    segmenter = load_segmenter(model_path, model, preset=preset, inplane_size=inplane_size,
                               inplane_spacing=inplane_spacing, num_threads=num_threads, warn=False)
    segmenter.require_preprocessing()
    log(_preprocessing_line(segmenter, model_path))
    if not _is_file_name(output):
        io.check_creatable_dir(output, "--output")  # made when the first mask is written, not before
    progress, skipped = Progress(len(cases)), []
    for index, (case, path) in enumerate(cases):
        progress.start(index, case)
        try:
            ct = open_volume(path, lazy=output_format == "nifti" and not save_probabilities)
            if output_format == "dicom_seg":
                dicom_seg.check_reference(ct)  # before the work: a SEG must be able to reference the series
            # A NIfTI mask is kept in a temporary file and written slab by slab (memory flat in Z).
            result = segmenter.segment(ct, return_probabilities=save_probabilities, progress=progress.slices,
                                       as_file=output_format == "nifti" and not save_probabilities, **segment_kwargs)
        except DataError as e:
            if not skip_bad:
                raise DataError(f"case {case}: {e}") from None
            skipped.append(f"case {case}: {e}")
            progress.finish("skipped")
            continue
        mask, probs = result if save_probabilities else (result, None)
        os.makedirs(os.path.dirname(os.path.abspath(outputs[case])), exist_ok=True)
        _write_result(ct, mask, probs, outputs[case], output_format, segmenter, model_path)
        counts = mask.counts() if hasattr(mask, "counts") else np.bincount(np.ravel(mask), minlength=3)
        progress.finish(f"liver {int(counts[1:].sum())} voxels, tumor {int(counts[2])} voxels -> {outputs[case]}")
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if len(skipped) == len(cases):
        raise DataError(f"--input {input_path}: no case could be segmented ({len(skipped)} skipped)")
    log(f"segmented {len(cases) - len(skipped)} case(s), skipped {len(skipped)}")
    return skipped
