"""TFLite conversion with builtin ops only (batch 1, static shapes) and the zoo metadata.

`quantize` = "none", "fp16" (float16 weights), "dynamic" (int8 weights, float activations)
or "int8" (full-integer, calibrated on real CT slice stacks, int8 input and output tensors so
integer-only accelerators run the whole graph; `liverzoo.lite.LiteModel` (de)quantizes at the
edges). Only `TFLITE_BUILTINS` (`TFLITE_BUILTINS_INT8` for int8) are allowed: an op that would
need Flex (SELECT_TF_OPS) raises `ConfigError` naming the op and the layer. Each file is
loaded once in LiteRT in a child process before it is returned. The zoo metadata (model,
kind, preset, input shape, stack size) is embedded in the file (`liverzoo.lite`).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

from liverzoo import lite
from liverzoo._keras_internals import flatten_layers
from liverzoo.data import io
from liverzoo.errors import ConfigError
from liverzoo.export.calibration import calibration_inputs
from liverzoo.export.rewrite import inference_model, lite_compatible
from liverzoo.export.saved_model import check_input_shape, input_name, write_archive
from liverzoo.layout import layout_of
from liverzoo.lite import OUTPUT_NAME, SIGNATURE, tflite_ops
from liverzoo.quiet import silenced_stderr

QUANTIZE_MODES = ("none", "fp16", "dynamic", "int8")
CLASS_NAMES = ("background", "liver", "tumor")
METADATA_VERSION = 1


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
    input_shape = check_input_shape(model, input_shape)
    layout = layout_of(input_shape)
    kind = layout.name
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
        "stack_size": int(layout.stack(input_shape)),
        "num_classes": num_classes,
        "classes": list(CLASS_NAMES[:num_classes]) if num_classes <= len(CLASS_NAMES) else None,
        "signature": SIGNATURE,
        "input": input_name(input_shape),
        "output": OUTPUT_NAME,
    }


def _check_layers(model):
    """Layers known to convert but fail in LiteRT, caught before conversion."""
    import keras

    for layer in flatten_layers(model, include_self=False):
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
    layer_names = {layer.name for layer in flatten_layers(model, include_self=False)}
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
        self.input_shape = check_input_shape(model, input_shape)
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
            write_archive(lite_model, self._tmp, self.input_shape, 1)
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
            # A run trained at a working plane (metadata from its config.json) is calibrated
            # on inputs at that scale, the inputs the runtime will feed it.
            calibration = calibration_inputs(representative_data, self.input_shape,
                                             self.metadata.get("preset"), num_samples=num_calibration,
                                             inplane_spacing=self.metadata.get("inplane_spacing"))
            key = input_name(self.input_shape)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: ({key: x[None]} for x in calibration)
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        try:
            with silenced_stderr(), warnings.catch_warnings():
                # The converter's C++ log lines and deprecation warnings; the error keeps them.
                warnings.simplefilter("ignore")
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
    io.atomic_write_bytes(os.fspath(path), data)
    return path
