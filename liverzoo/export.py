"""Export zoo models for servers (SavedModel) and phones (TFLite, builtin ops only).

Inference-only export: `inference_model` keeps `model.outputs[0]` (deep-supervision heads
dropped) and every exported graph is traced with `training=False` (dropout and batch-norm
updates inactive). Both formats go through Keras' `ExportArchive` (the Keras 3 path to a
SavedModel; `TFLiteConverter.from_concrete_functions` on a Keras 3 model leaves the
weights as uninitialised resource variables, cf. tensorflow/tensorflow#63867).

- SavedModel: signature `"segment"` (also the `serving_default`), input `ct_stack`
  `(B, H, W, T)` for 2D/2.5D models or `ct_subvolume` `(B, D, H, W, 1)` for 3D ones, output
  `probabilities`; batch size free, for TF Serving.
- TFLite: same signature with batch 1 and static shapes; `quantize` = `"none"`, `"fp16"`
  (float16 weights), `"dynamic"` (int8 weights, float activations) or `"int8"` (full-integer,
  calibrated on real CT slice stacks, int8 input and output tensors so integer-only
  accelerators run the whole graph; `liverzoo.lite.LiteModel` (de)quantizes at the edges).
  Only `TFLITE_BUILTINS` (`TFLITE_BUILTINS_INT8` for int8) are allowed: an op that would need
  Flex (SELECT_TF_OPS) raises `ConfigError` naming the op and the layer. The zoo metadata
  (model, kind, preset, input shape, stack size) is embedded in the file (`liverzoo.lite`).
- `verify_tflite` runs the file in LiteRT on real CT and writes a JSON report beside it.

Background: 002_7138868b57b69ed8.txt (Pandey et al.) aims at mobile diagnosis;
001_bb2d5e6c0ac559d5.txt and 004_e35520e2e41b14d6.txt at light 3D networks. See
docs/export.md.

Example:
    >>> from liverzoo import export, models
    >>> model = models.build("residual_unet", input_shape=(64, 64, 1))
    >>> export.export_saved_model(model, "/tmp/residual_unet_savedmodel")
    >>> data = export.convert_tflite(model, quantize="int8")
    >>> export.write_tflite(data, "/tmp/residual_unet_int8.tflite")
    >>> report = export.verify_tflite("/tmp/residual_unet_int8.tflite", model,
    ...                               export.demo_inputs((64, 64, 1), "residual_unet"))
"""
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from liverzoo import lite
from liverzoo.errors import ConfigError, DataError
from liverzoo.lite import SIGNATURE, OUTPUT_NAME, float_ops, read_metadata, tflite_ops  # noqa: F401

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
CLASS_NAMES = ("background", "liver", "tumor")
METADATA_VERSION = 1


def input_name(input_shape):
    """The serving input's name for a per-example shape: `ct_stack` (2D) or `ct_subvolume` (3D).

    Args:
        input_shape: shape without the batch axis, `(H, W, T)` or `(D, H, W, 1)`.

    Returns:
        "ct_stack" or "ct_subvolume".

    Example:
        >>> input_name((256, 256, 7))
        'ct_stack'
    """
    if len(input_shape) == 3:
        return "ct_stack"
    if len(input_shape) == 4:
        return "ct_subvolume"
    raise ConfigError(f"input_shape {tuple(input_shape)}: expected (H, W, T) or (D, H, W, 1)")


def inference_model(model):
    """The inference-only model: one input, `model.outputs[0]`, layers shared with `model`.

    Deep-supervision heads (`outputs[1:]`) are not part of the returned graph; dropout is
    inactive wherever this module traces it (`training=False`).

    Args:
        model: a functional `keras.Model` (zoo builder output or a loaded `.keras` file).

    Returns:
        `keras.Model` with a single output, named like `model`.

    Example:
        >>> lv = models.build("lv_net", input_shape=(16, 32, 32, 1))   # 5 outputs
        >>> len(inference_model(lv).outputs)
        1
    """
    import keras

    if not getattr(model, "outputs", None):
        raise ConfigError(f"model {model.name!r}: export needs a functional Keras model")
    if len(model.inputs) != 1:
        raise ConfigError(f"model {model.name!r}: expected one input, found {len(model.inputs)}")
    # A single-tensor input (not a list) so that callers pass a plain array.
    return keras.Model(model.inputs[0], model.outputs[0], name=model.name)


def lite_compatible(model):
    """The model with stock 3D convolutions replaced by builtin-2D equivalents, for TFLite.

    TFLite's CONV_3D and CONV_3D_TRANSPOSE have no int8 kernel and XNNPACK does not run them:
    int8 files keep those weights in float and LiteRT runs them on slow reference kernels.
    Training keeps the stock layers (cuDNN); the TFLite export clones the model with
    `keras.layers.Conv3D` -> `liverzoo.layers.conv3d.FoldedConv3D` and
    `keras.layers.Conv3DTranspose` -> `liverzoo.layers.conv3d_transpose.FoldedConv3DTranspose`
    (same function, same weights). Layers that those cannot express (groups > 1,
    channels_first, an activation inside the conv, a dilated or output-padded transpose,
    a layer used more than once) are kept as they are.

    Args:
        model: functional Keras model.

    Returns:
        A functional `keras.Model` sharing every other layer (and its weights) with `model`;
        `model` itself when nothing is replaced.

    Example:
        >>> lite = lite_compatible(models.build("vnet", input_shape=(16, 16, 16, 1)))
        >>> any(isinstance(layer, keras.layers.Conv3D) for layer in lite.layers)
        False
    """
    import keras

    from liverzoo.layers.conv3d import FoldedConv3D
    from liverzoo.layers.conv3d_transpose import FoldedConv3DTranspose

    def replacement(layer):
        if len(layer._inbound_nodes) != 1 or layer.data_format != "channels_last":
            return None
        config = layer.get_config()
        if config.get("activation") not in (None, "linear"):
            return None
        common = dict(
            filters=layer.filters, kernel_size=layer.kernel_size, strides=layer.strides, padding=layer.padding,
            use_bias=layer.use_bias, name=layer.name, dtype=layer.dtype_policy,
        )
        if isinstance(layer, keras.layers.Conv3DTranspose):
            if layer.output_padding is not None or max(layer.dilation_rate) > 1:
                return None
            return FoldedConv3DTranspose(**common)
        if isinstance(layer, keras.layers.Conv3D) and layer.groups == 1:
            return FoldedConv3D(dilation_rate=layer.dilation_rate, **common)
        return None

    stock_3d = (keras.layers.Conv3D, keras.layers.Conv3DTranspose)
    replaced = []

    def clone(layer):
        new = replacement(layer) if isinstance(layer, stock_3d) else None
        if new is None:
            return layer  # shared, weights included
        new.build(layer.input.shape)
        new.set_weights(layer.get_weights())
        replaced.append(new)
        return new

    if not any(isinstance(layer, stock_3d) for layer in model.layers):
        return model
    lite = keras.models.clone_model(model, clone_function=clone)
    return lite if replaced else model


def _input_shape(model, input_shape=None, *, static=True):
    """The per-example input shape used for export (TFLite needs it static)."""
    own = tuple(model.input_shape[1:])
    if input_shape is None:
        input_shape = own
    input_shape = tuple(input_shape)
    if len(input_shape) != len(own) or (static and any(d is None for d in input_shape)):
        raise ConfigError(
            f"model {model.name!r} takes inputs of shape {own}: pass a static input_shape "
            f"of that rank (got {input_shape})"
        )
    if any(m is not None and m != d for m, d in zip(own, input_shape)):
        raise ConfigError(
            f"model {model.name!r} was built for inputs {own}, not {input_shape}: rebuild it "
            "at that size (`models.build(name, input_shape=...)` and `set_weights`)"
        )
    input_name(input_shape)
    return input_shape


def _write_archive(model, path, input_shape, batch_size):
    """SavedModel with the `segment` endpoint; the batch axis is `batch_size` (None = free).

    The signature's input is named after the TensorSpec (`ct_stack` / `ct_subvolume`).
    """
    import keras
    import tensorflow as tf

    infer = inference_model(model)
    spec = tf.TensorSpec((batch_size,) + tuple(input_shape), tf.float32, name=input_name(input_shape))

    def segment(images):
        return {OUTPUT_NAME: infer(images, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(infer)
    archive.add_endpoint(SIGNATURE, segment, input_signature=[spec])
    archive.write_out(path, verbose=False)


def export_saved_model(model, path, *, input_shape=None):
    """Writes a SavedModel for TF Serving with the signature `"segment"`.

    The signature (also registered as `serving_default`) takes `ct_stack` `(B, H, W, T)` or
    `ct_subvolume` `(B, D, H, W, 1)` float32, preprocessed as the model's preset says, and
    returns `{"probabilities": (B, ..., num_classes)}`. The folder is written under a
    temporary name beside `path` and renamed when complete (an existing folder is replaced).

    Args:
        model: functional Keras model (deep-supervision outputs are dropped).
        path: destination folder.
        input_shape: per-example shape; defaults to the model's own (`None` dimensions
            stay free in the signature).

    Returns:
        `path`.

    Example:
        >>> export_saved_model(model, "exported/residual_unet")
        >>> tf.saved_model.load("exported/residual_unet").signatures["segment"](ct_stack=x)
    """
    path = os.fspath(path)
    input_shape = _input_shape(model, input_shape, static=False)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        _write_archive(model, tmp, input_shape, None)
        _replace_folder(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_folder(tmp, path):
    """Renames folder `tmp` to `path`, replacing an existing folder without a half-written state."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"--output {path}: exists and is not a folder")
        old = tmp + "-old"
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)


def zoo_metadata(model, *, name=None, preset=None, input_shape=None):
    """The metadata embedded in exported TFLite files (what an app needs to preprocess).

    Args:
        model: the Keras model.
        name: zoo model name; defaults to `model.name` (the builders' default names).
        preset: preprocessing preset; defaults to `SPECS[name].preset` for zoo models.
        input_shape: per-example input shape; defaults to the model's own.

    Returns:
        dict with `model`, `kind`, `preset`, `input_shape`, `stack_size` (T for 2D models,
        D for 3D), `num_classes`, `classes`, `signature`, `input`, `output`, `version`.

    Example:
        >>> zoo_metadata(models.build("ds_nnunet", input_shape=(64, 64, 7)))["stack_size"]
        7
    """
    from liverzoo import models

    name = name or model.name
    input_shape = _input_shape(model, input_shape)
    kind = "2d" if len(input_shape) == 3 else "3d"
    spec = models.SPECS.get(name)
    if spec is not None and spec.kind != kind:
        raise ConfigError(f"model {name!r} is a {spec.kind} model but takes inputs {input_shape}")
    if preset is None and spec is not None:
        preset = spec.preset
    num_classes = int(inference_model(model).output_shape[-1])
    return {
        "version": METADATA_VERSION,
        "model": name,
        "kind": kind,
        "preset": preset,
        "input_shape": [int(d) for d in input_shape],
        "stack_size": int(input_shape[-1] if kind == "2d" else input_shape[0]),
        "num_classes": num_classes,
        "classes": list(CLASS_NAMES[:num_classes]) if num_classes <= len(CLASS_NAMES) else None,
        "signature": SIGNATURE,
        "input": input_name(input_shape),
        "output": OUTPUT_NAME,
    }


def _check_layers(model):
    """Layers known to convert but fail in LiteRT, caught before conversion."""
    import keras

    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv3D) and getattr(layer, "groups", 1) > 1:
            raise ConfigError(
                f"layer {layer.name!r} of {model.name!r} is a Conv3D with groups={layer.groups}: "
                "TFLite's CONV_3D has no groups and fails at run time in LiteRT; use "
                "liverzoo.layers' depthwise 3D layer instead"
            )


_FLEX_LIST = re.compile(r"TF Select ops: ([^\n]+)")
_LOCATION = re.compile(r'"([\w./-]+)/([\w-]+)@__inference')


def _flex_error(model, message):
    """ConfigError naming the ops that need Flex and, where the graph location shows it, the layer."""
    ops = []
    for match in _FLEX_LIST.finditer(message):
        ops += [op.strip() for op in match.group(1).split(",") if op.strip()]
    ops = list(dict.fromkeys(ops))
    layer_names = {layer.name for layer in model._flatten_layers(include_self=False, recursive=True)}
    where = {}
    for path, op in _LOCATION.findall(message):
        if op in ops and op not in where:
            # Keras name scopes uniquify with a `_N` suffix: "functional_1/pool3d_1/MaxPool3D".
            for part in reversed(path.split("/")):
                for candidate in (part, re.sub(r"_\d+$", "", part)):
                    if candidate in layer_names:
                        where[op] = candidate
                        break
                if op in where:
                    break
    named = ", ".join(f"{op} (layer {where[op]!r})" if op in where else op for op in ops)
    return ConfigError(
        f"cannot export {model.name!r} to TFLite with builtin ops only: {named} would need "
        "Flex (SELECT_TF_OPS), which phone runtimes do not have; build that part from "
        "TFLite builtins (liverzoo.layers)"
    )


def convert_tflite(model, quantize="none", representative_data=None, *, metadata=None,
                   input_shape=None, num_calibration=32):
    """Converts a model to a TFLite flatbuffer with builtin ops only (batch 1, static shapes).

    Args:
        model: functional Keras model (deep-supervision outputs are dropped).
        quantize: "none" (float32), "fp16" (float16 weights), "dynamic" (int8 weights,
            float activations) or "int8" (full-integer, int8 input and output tensors).
        representative_data: int8 calibration inputs: None for the embedded real demo CT
            preprocessed with the model's preset (1 or T channels as the model takes them),
            a TFRecord file pattern (the user's shards, `liverzoo.data.tfrecord`), or an
            array / iterable of per-example inputs.
        metadata: zoo metadata to embed; defaults to `zoo_metadata(model)`. "quantize" is
            added.
        input_shape: per-example input shape; defaults to the model's own.
        num_calibration: number of calibration inputs for int8.

    Returns:
        The `.tflite` bytes.

    Raises:
        ConfigError: unknown `quantize`; an op would need Flex (names the op and the layer);
            a layer known to fail in LiteRT; a file LiteRT cannot load.

    Example:
        >>> data = convert_tflite(model, quantize="fp16")
        >>> tflite_ops(data)
        ['CONV_2D', 'DEQUANTIZE', ...]
    """
    with TFLiteExporter(model, input_shape=input_shape, metadata=metadata) as exporter:
        return exporter.convert(quantize, representative_data, num_calibration=num_calibration)


class TFLiteExporter:
    """One batch-1 SavedModel of a model, converted to as many TFLite variants as asked.

    `convert_tflite` for several quantization modes without tracing and writing the
    intermediate SavedModel again for each (the benchmark and the tests convert every zoo
    model four times). Use as a context manager; the temporary SavedModel is removed on exit.

    Args:
        model: functional Keras model (deep-supervision outputs are dropped).
        input_shape: per-example input shape; defaults to the model's own.
        metadata: zoo metadata to embed; defaults to `zoo_metadata(model)`.

    Example:
        >>> with TFLiteExporter(model) as exporter:
        ...     files = {q: exporter.convert(q) for q in QUANTIZE_MODES}
    """

    def __init__(self, model, *, input_shape=None, metadata=None):
        self.model = model
        self.input_shape = _input_shape(model, input_shape)
        self.metadata = dict(metadata or zoo_metadata(model, input_shape=self.input_shape))
        self._tmp = None

    def __enter__(self):
        _check_layers(self.model)
        self._tmp = tempfile.mkdtemp(prefix="liverzoo-tflite-")
        from liverzoo.layers.conv3d import stacked_depth_taps

        # Stock Conv3D / Conv3DTranspose have no int8 or XNNPACK kernels in LiteRT; folded
        # 3D convs stacked over depth taps round once per layer in an int8 file.
        lite_model = lite_compatible(inference_model(self.model))
        with stacked_depth_taps(lite_model):
            _write_archive(lite_model, self._tmp, self.input_shape, 1)
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def convert(self, quantize="none", representative_data=None, *, num_calibration=32):
        """The `.tflite` bytes for one quantization mode (see `convert_tflite`)."""
        import tensorflow as tf

        if quantize not in QUANTIZE_MODES:
            raise ConfigError(f"--quantize={quantize!r}: expected one of {', '.join(QUANTIZE_MODES)}")
        if self._tmp is None:
            raise RuntimeError("TFLiteExporter.convert() outside its `with` block")
        name = self.model.name
        converter = tf.lite.TFLiteConverter.from_saved_model(self._tmp, signature_keys=[SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            calibration = calibration_inputs(representative_data, self.input_shape,
                                             self.metadata.get("preset"), num_samples=num_calibration)
            key = input_name(self.input_shape)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ({key: x[None]} for x in calibration)
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        try:
            with _quiet_converter():
                data = converter.convert()
        except Exception as e:  # ConverterError: the message lists the offending ops
            message = str(e)
            if "TF Select ops" in message or "ERROR_NEEDS_FLEX_OPS" in message:
                raise _flex_error(self.model, message) from None
            first = next((line for line in message.splitlines() if "error" in line), message[:300])
            raise ConfigError(f"TFLite conversion of {name!r} failed: {first.strip()}") from e
        custom = [op for op in tflite_ops(data) if op.startswith("CUSTOM:")]
        if custom:
            raise ConfigError(f"TFLite file for {name!r} needs non-builtin ops: {', '.join(custom)}")
        data = lite.embed_metadata(data, dict(self.metadata, quantize=quantize))
        _check_loads(data, f"the {quantize} TFLite file for {name!r}")
        return data


# LiteRT aborts the whole process (not an exception) on some malformed quantized graphs,
# so the first load happens in a child process.
_LOAD_CHECK = (
    "import sys\n"
    "from ai_edge_litert.interpreter import Interpreter\n"
    "Interpreter(model_path=sys.argv[1], num_threads=1).allocate_tensors()\n"
)


def _check_loads(data, what):
    """Raises ConfigError when LiteRT cannot allocate the model (checked in a subprocess)."""
    with tempfile.TemporaryDirectory(prefix="liverzoo-check-") as tmp:
        path = os.path.join(tmp, "model.tflite")
        with open(path, "wb") as f:
            f.write(data)
        proc = subprocess.run([sys.executable, "-c", _LOAD_CHECK, path], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("INFO:")]
        how = "aborted" if proc.returncode < 0 else "failed"
        raise ConfigError(
            f"{what} does not load in LiteRT (allocate_tensors {how}"
            + (f": {lines[-1].strip()}" if lines else "")
            + "). Known causes with int8: a tensor whose calibrated range is degenerate (e.g. "
            "instance normalisation over a 1x1 feature map at this input size) or a LiteRT "
            "kernel bug; try a larger input_shape, or --quantize=dynamic / fp16"
        )


@contextlib.contextmanager
def _quiet_converter():
    """Holds back the converter's C++ log lines and deprecation warnings (the error keeps them)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def write_tflite(data, path):
    """Writes `.tflite` bytes atomically (temporary name in the folder, then rename).

    Args:
        data: the bytes from `convert_tflite`.
        path: destination file.

    Returns:
        `path`.

    Example:
        >>> write_tflite(convert_tflite(model), "residual_unet.tflite")
    """
    _atomic_write(os.fspath(path), data)
    return path


def _atomic_write(path, data):
    """Writes bytes or text to `path` through `liverzoo.data.io.atomic_write` (temp name, rename)."""
    from liverzoo.data import io

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = data if isinstance(data, bytes) else data.encode("utf-8")

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(payload)

    io.atomic_write(path, write)


def demo_inputs(input_shape, preset, *, num_samples=16):
    """Real CT model inputs from the embedded demo cases (see `sample_inputs`).

    Args:
        input_shape: per-example model input shape, `(H, W, T)` or `(D, H, W, 1)`.
        preset: name in `liverzoo.data.preprocess.PRESETS`.
        num_samples: number of inputs (spread over the demo cases).

    Returns:
        float32 array `(num_samples,) + input_shape`.

    Example:
        >>> demo_inputs((64, 64, 7), "ds_nnunet", num_samples=4).shape
        (4, 64, 64, 7)
    """
    from liverzoo.data import demo

    return sample_inputs(demo.demo_cases(), input_shape, preset, num_samples=num_samples)[0]


def sample_inputs(cases, input_shape, preset, *, num_samples=16):
    """Model inputs (and labels) from real CT cases, preprocessed as the model expects.

    Each case goes through `preprocess.prepare_volume` with `preset` (padding, in-plane size
    of the model, intensity); then slice stacks `(H, W, T)` (T adjacent slices, edges
    repeated, `sampling.extract_stack`) or sub-volumes `(D, H, W, 1)` are taken at evenly
    spaced slice positions. Used to calibrate int8, to verify exported files and to
    fine-tune the test models.

    Args:
        cases: `liverzoo.data.io.CTVolume`s (`array`, `spacing`, `label` or None).
        input_shape: per-example model input shape.
        preset: name in `liverzoo.data.preprocess.PRESETS`.
        num_samples: number of inputs, spread over the cases.

    Returns:
        `(images float32 (N,) + input_shape, labels int32 (N, H, W) / (N, D, H, W) or None)`;
        labels are the centre slice's for stacks, None when a case has no label.

    Example:
        >>> images, labels = sample_inputs([ct], (8, 32, 32, 1), "lv_net", num_samples=2)
        >>> images.shape, labels.shape
        ((2, 8, 32, 32, 1), (2, 8, 32, 32))
    """
    from liverzoo.data import preprocess, sampling

    if preset is None:
        raise ConfigError("no preprocessing preset known for this model: pass preset=")
    preprocess.get_preset(preset)
    input_shape = tuple(input_shape)
    is_2d = len(input_shape) == 3
    height, width = input_shape[:2] if is_2d else input_shape[1:3]
    depth = input_shape[-1] if is_2d else input_shape[0]
    images, labels = [], []
    for k, case in enumerate(cases):
        count = num_samples // len(cases) + (k < num_samples % len(cases))
        if count == 0:
            continue
        image, label, _ = preprocess.prepare_volume(
            case.array, case.spacing, preset, case.label, inplane_size=height if height == width else 0
        )
        if image.shape[:2] != (height, width):
            image = preprocess.resize_inplane(image, (height, width))
            label = None if label is None else preprocess.resize_inplane(label, (height, width), order=0)
        num_slices = image.shape[2]
        for centre in np.linspace(0, num_slices - 1, count + 2)[1:-1].round().astype(int):
            if is_2d:
                images.append(sampling.extract_stack(image, centre, depth))
                labels.append(None if label is None else label[:, :, centre])
            else:
                index = np.clip(np.arange(depth) + centre - depth // 2, 0, num_slices - 1)
                images.append(np.transpose(image[:, :, index], (2, 0, 1))[..., None])
                labels.append(None if label is None else np.transpose(label[:, :, index], (2, 0, 1)))
    images = np.stack(images).astype(np.float32)
    if any(label is None for label in labels):
        return images, None
    return images, np.stack(labels).astype(np.int32)


def calibration_inputs(representative_data, input_shape, preset, *, num_samples=32):
    """Per-example float32 inputs for int8 calibration (see `convert_tflite`).

    Args:
        representative_data: None (demo CT), a TFRecord file pattern, or an array/iterable
            of inputs shaped `input_shape` or `(1,) + input_shape`.
        input_shape: per-example model input shape.
        preset: preprocessing preset (used for the demo CT).
        num_samples: at most this many inputs.

    Returns:
        float32 array `(N,) + input_shape`, N >= 1.

    Example:
        >>> calibration_inputs("tfrecords/demo/train-*.tfrecord", (64, 64, 7), None).shape
        (32, 64, 64, 7)
    """
    input_shape = tuple(input_shape)
    if representative_data is None:
        return demo_inputs(input_shape, preset, num_samples=num_samples)
    if isinstance(representative_data, (str, os.PathLike)):
        items = _tfrecord_inputs(os.fspath(representative_data), input_shape, num_samples, preset)
        where = f"--representative_data={os.fspath(representative_data)}"
    else:
        items, where = representative_data, "representative_data"
    out = []
    for item in items:
        item = np.asarray(item, np.float32)
        if item.shape == (1,) + input_shape:
            item = item[0]
        if item.shape != input_shape:
            raise DataError(f"{where}: input of shape {item.shape}, the model takes {input_shape}")
        out.append(item)
        if len(out) == num_samples:
            break
    if not out:
        raise DataError(f"{where}: no calibration inputs")
    return np.stack(out)


def _tfrecord_inputs(pattern, input_shape, num_samples, preset):
    """Inputs sampled from the user's TFRecord shards (`liverzoo.data.tfrecord`)."""
    from liverzoo.data import tfrecord

    flag = f"--representative_data={pattern}"
    _, manifest = tfrecord.shard_files(pattern, split="all")
    written = ((manifest or {}).get("preset") or {}).get("name")
    if preset is not None and written is not None and written != preset:
        raise DataError(f"{flag}: shards were preprocessed with preset {written!r}, the model takes {preset!r}")
    if len(input_shape) == 3:
        kwargs = dict(mode="dense", stack_size=input_shape[-1], patch_shape=input_shape[:2])
    else:
        kwargs = dict(mode="volume", patch_shape=input_shape[:3])
    dataset = tfrecord.make_dataset(pattern, batch_size=1, shuffle=True, repeat=True, seed=0, split="all",
                                    samples_per_case=max(1, num_samples // 4), **kwargs)
    for images, _ in dataset.take(num_samples):
        yield np.asarray(images)[0]


def keras_predict(model, inputs, batch_size=4):
    """The Keras reference of a verification: segmentation probabilities, `training=False`.

    Args:
        model: the Keras model (deep-supervision heads are ignored).
        inputs: float32 `(N,) + input_shape`.
        batch_size: inputs per call.

    Returns:
        float32 `(N, ..., num_classes)` probabilities of `model.outputs[0]`.

    Example:
        >>> keras_predict(model, demo_inputs((32, 32, 1), "residual_unet", num_samples=2)).shape
        (2, 32, 32, 3)
    """
    infer = inference_model(model)
    return np.concatenate([
        np.asarray(infer(inputs[i : i + batch_size], training=False))
        for i in range(0, len(inputs), batch_size)
    ])


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
    from liverzoo import metrics

    tflite_path = os.fspath(tflite_path)
    runner = lite.LiteModel(tflite_path, num_threads=num_threads)
    inputs = np.asarray(inputs, np.float32)
    expected = keras_predict(keras_model, inputs)
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
    _atomic_write(os.fspath(report_path), json.dumps(report, indent=2) + "\n")
    return report


def _fractions(mask, num_classes):
    counts = np.bincount(mask.ravel(), minlength=num_classes)
    return [float(c) for c in counts / counts.sum()]
