"""Segmentation with a `.tflite` file using only `ai_edge_litert`, NumPy and nibabel.

This module never imports TensorFlow: it is the code path a phone app's inference loop
mirrors (load the flatbuffer, read the zoo metadata, preprocess with the model's preset,
feed batch-1 inputs to the interpreter, de-quantize, stitch the volume). It reuses the
TF-free `liverzoo.data.io`, `liverzoo.data.preprocess` and `liverzoo.inference`.

The zoo metadata travels inside the `.tflite` file, as a JSON entry named `"liverzoo"` in
the flatbuffer's `metadata` table (see docs/export.md), so the file alone says how to
preprocess its input: model name, kind ("2d"/"3d"), preset, input shape, stack size.

Example:
    >>> from liverzoo import lite
    >>> model = lite.LiteModel("residual_unet_int8.tflite")
    >>> probs = model.predict(batch)              # (B, H, W, T) float32 -> (B, H, W, C)
    >>> lite.segment_nifti("residual_unet_int8.tflite", "ct.nii.gz", "mask.nii.gz")
"""
import json
import os

import numpy as np

from liverzoo.errors import ConfigError, DataError

METADATA_NAME = "liverzoo"
SIGNATURE = "segment"
OUTPUT_NAME = "probabilities"


def _schema():
    # The TFLite flatbuffer schema ships with ai_edge_litert; import lazily so that
    # `import liverzoo.lite` stays cheap.
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read_bytes(tflite):
    """`tflite` is the file's bytes or its path."""
    if isinstance(tflite, (bytes, bytearray, memoryview)):
        return bytes(tflite)
    path = os.fspath(tflite)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such .tflite file")
    with open(path, "rb") as f:
        return f.read()


def _root(data, where):
    schema = _schema()
    if len(data) < 8 or not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise DataError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    return schema.Model.GetRootAs(data, 0)


def tflite_ops(tflite):
    """Names of the operators a TFLite model uses, read from its flatbuffer.

    Builtin operators are named as in the TFLite schema (`"CONV_2D"`, `"SOFTMAX"`); custom
    operators (Flex ops included, e.g. `"FlexMaxPool3D"`) by their custom code, prefixed
    `"CUSTOM:"`, so a builtin-only check is `not any(op.startswith("CUSTOM:") ...)`.

    Args:
        tflite: the model's bytes, or the path of a `.tflite` file.

    Returns:
        Sorted list of distinct operator names used by the model's operators.

    Example:
        >>> tflite_ops(open("m.tflite", "rb").read())
        ['CONV_2D', 'DEPTHWISE_CONV_2D', 'RESIZE_BILINEAR', 'SOFTMAX']
    """
    return sorted({name for name, _, _ in _operators(tflite, "tflite_ops")})


def _operators(tflite, where):
    """Yields (operator name, Operator, SubGraph) for every operator of every subgraph."""
    model = _root(_read_bytes(tflite), where)
    names = _opcode_names(model)
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for i in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(i)
            yield names[op.OpcodeIndex()], op, subgraph


def _opcode_names(model):
    schema = _schema()
    by_code = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = []
    for i in range(model.OperatorCodesLength()):
        opcode = model.OperatorCodes(i)
        # Codes < 127 live in the deprecated int8 field, newer ones in the int32 field.
        code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            names.append("CUSTOM:" + (opcode.CustomCode() or b"?").decode())
        else:
            names.append(by_code.get(code, f"BUILTIN_{code}"))
    return names


def float_ops(tflite):
    """Operators that compute in float32 inside a model (for int8 files: what stayed float).

    A full-integer model has none but the QUANTIZE/DEQUANTIZE at its edges; TFLite kernels
    without an int8 version (CONV_3D, for one) are left in float by the converter, with
    DEQUANTIZE/QUANTIZE around them. The verification report lists them.

    Args:
        tflite: the model's bytes, or the path of a `.tflite` file.

    Returns:
        Sorted list of distinct operator names whose first output tensor is float32.

    Example:
        >>> float_ops("unet3d_int8.tflite")
        ['CONV_3D']
    """
    float32 = _schema().TensorType.FLOAT32
    return sorted({
        name for name, op, subgraph in _operators(tflite, "float_ops")
        if name not in ("QUANTIZE", "DEQUANTIZE") and op.OutputsLength() > 0
        and subgraph.Tensors(op.Outputs(0)).Type() == float32
    })


def embed_metadata(tflite_bytes, metadata):
    """Returns the model with `metadata` (a JSON-able dict) stored in its flatbuffer.

    The dict goes, as UTF-8 JSON, into a new buffer referenced by a `metadata` entry named
    `"liverzoo"` (an existing entry of that name is replaced). Any flatbuffers reader, on a
    phone too, finds it there; the interpreter ignores it.

    Args:
        tflite_bytes: a TFLite model.
        metadata: JSON-serializable dict.

    Returns:
        The new model bytes.

    Example:
        >>> data = embed_metadata(data, {"model": "residual_unet", "kind": "2d"})
        >>> read_metadata(data)["kind"]
        '2d'
    """
    import flatbuffers

    schema = _schema()
    data = _read_bytes(tflite_bytes)
    _root(data, "embed_metadata")
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode("utf-8"), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    kept = [m for m in (model.metadata or []) if _decode(m.name) != METADATA_NAME]
    model.metadata = kept + [entry]
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _decode(name):
    return name.decode() if isinstance(name, bytes) else name


def read_metadata(tflite):
    """The zoo metadata stored by `embed_metadata`, or `{}` when the file has none.

    Args:
        tflite: the model's bytes, or the path of a `.tflite` file.

    Returns:
        dict (model, kind, preset, input_shape, stack_size, num_classes, quantize, ...).

    Example:
        >>> read_metadata("residual_unet.tflite")["preset"]
        'residual_unet'
    """
    data = _read_bytes(tflite)
    model = _root(data, str(tflite) if not isinstance(tflite, (bytes, bytearray)) else "read_metadata")
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _decode(entry.Name()) == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
            return json.loads(raw.decode("utf-8"))
    return {}


class LiteModel:
    """A `.tflite` segmentation model run in LiteRT (XNNPACK on CPU), TensorFlow-free.

    Inputs and outputs follow docs/design.md: `(B, H, W, T)` slice stacks or
    `(B, D, H, W, 1)` sub-volumes in, softmax probabilities out. The file has a fixed batch
    of 1; `predict` loops over the batch. Full-integer (int8) files take and return int8
    tensors; `predict` quantizes the input and de-quantizes the output with the tensors'
    own scale and zero point, so callers always see float32.

    Args:
        path: the `.tflite` file.
        num_threads: CPU threads for the interpreter (XNNPACK).

    Attributes:
        input_shape: per-example input shape (no batch axis), e.g. `(256, 256, 7)`.
        output_shape: per-example output shape, e.g. `(256, 256, 3)`.
        metadata: the zoo metadata embedded by liverzoo.export (`{}` for a foreign file).
        quantized: True when the input tensor is int8/uint8.

    Example:
        >>> model = LiteModel("lv_net_fp16.tflite", num_threads=2)
        >>> model.input_shape
        (16, 128, 128, 1)
        >>> probs = model.predict(np.zeros((2,) + model.input_shape, np.float32))
    """

    def __init__(self, path, num_threads=2):
        from ai_edge_litert.interpreter import Interpreter

        self.path = os.fspath(path)
        self.num_threads = num_threads
        data = _read_bytes(self.path)
        _root(data, self.path)  # so that a file that is not TFLite is named in the error
        self.metadata = read_metadata(data)
        try:
            self._interpreter = Interpreter(model_content=data, num_threads=num_threads)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise DataError(f"{self.path}: LiteRT cannot load the model: {e}") from e
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        signatures = self._interpreter.get_signature_list()
        if SIGNATURE in signatures:
            runner = self._interpreter.get_signature_runner(SIGNATURE)
            inputs = list(runner.get_input_details().values())
            out = runner.get_output_details()
            outputs = [out[OUTPUT_NAME]] if OUTPUT_NAME in out else list(out.values())
        if len(inputs) != 1:
            raise DataError(f"{self.path}: expected one input tensor, found {len(inputs)}")
        self._input, self._output = inputs[0], outputs[0]
        if self._input["shape"][0] != 1:
            raise DataError(f"{self.path}: expected a batch-1 input, found shape {list(self._input['shape'])}")
        self.input_shape = tuple(int(d) for d in self._input["shape"][1:])
        self.output_shape = tuple(int(d) for d in self._output["shape"][1:])
        self.quantized = np.dtype(self._input["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8))

    def predict(self, batch):
        """Probabilities for a batch of inputs.

        Args:
            batch: float array `(B,) + input_shape` (preprocessed as the model's preset says).

        Returns:
            float32 array `(B,) + output_shape`.
        """
        batch = np.asarray(batch, dtype=np.float32)
        if batch.shape[1:] != self.input_shape:
            raise ConfigError(
                f"{self.path}: input of shape {batch.shape} does not fit the model's "
                f"(B,) + {self.input_shape}"
            )
        out = np.empty((len(batch),) + self.output_shape, np.float32)
        for i in range(len(batch)):
            self._interpreter.set_tensor(self._input["index"], _quantize(batch[i : i + 1], self._input))
            self._interpreter.invoke()
            out[i] = _dequantize(self._interpreter.get_tensor(self._output["index"]), self._output)[0]
        return out

    __call__ = predict


def _quantize(x, detail):
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _dequantize(q, detail):
    if np.dtype(detail["dtype"]) == np.float32:
        return q
    scale, zero_point = detail["quantization"]
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def segment_nifti(tflite_path, nifti_in, nifti_out, *, kind=None, preset=None, num_threads=2,
                  postprocess=True, return_mask=False, **predict_kwargs):
    """Segments a CT volume with a `.tflite` file and writes the mask, without TensorFlow.

    The steps a phone app mirrors: read the zoo metadata from the file, load the CT
    (`liverzoo.data.io.load_volume`: NIfTI or DICOM folder, canonical orientation),
    preprocess with the model's preset, run overlapping batch-1 inputs through LiteRT
    (`liverzoo.runtime.load_segmenter`: `LiteModel.predict` in `liverzoo.inference.segment`),
    resample to the CT grid, argmax, post-process, and write a uint8 mask with the input's
    affine and shape (atomically). A NIfTI input is read, segmented, post-processed and
    written slab by slab (`liverzoo.streaming`, `liverzoo.maskfile`): peak memory does not
    grow with the number of slices unless `return_mask` asks for the whole mask.

    Args:
        tflite_path: a `.tflite` file written by `liverzoo.export` (or any file, with
            `kind` and `preset` given).
        nifti_in: CT NIfTI file (or DICOM series folder).
        nifti_out: output mask NIfTI path.
        kind: "2d" or "3d"; default from the file's metadata.
        preset: preprocessing preset name; default from the file's metadata.
        num_threads: LiteRT CPU threads.
        postprocess: the opening, largest liver component, holes filled, tumor inside the
            liver (`liverzoo.inference.segment`).
        return_mask: return the whole mask as an array (memory for every voxel).
        **predict_kwargs: passed to `liverzoo.inference.segment` (opening_mm, opening_keep_ml, liver_threshold)
            and on to `liverzoo.inference.predict_volume` (stride, window, step, weighting,
            batch_size, tta_flip, progress).

    Returns:
        Voxels per label `[background, liver, tumor]` (int64 array), or with `return_mask` the
        uint8 `(X, Y, Z)` mask in canonical orientation.

    Raises:
        ConfigError: the file has no metadata and `kind`/`preset` are not given.
        DataError: unreadable model or CT.

    Example:
        >>> segment_nifti("residual_unet_int8.tflite", "ct.nii.gz", "mask.nii.gz")
    """
    from liverzoo import runtime
    from liverzoo.data import io

    segmenter = runtime.load_segmenter(tflite_path, kind=kind, preset=preset, num_threads=num_threads)
    segmenter.require_preprocessing("pass kind= and preset=")
    ct = runtime.open_volume(nifti_in)  # a NIfTI file is read slab by slab (liverzoo.streaming)
    with segmenter.segment(ct, postprocess=postprocess, as_file=True, **predict_kwargs) as mask:
        io.save_mask(mask, ct, nifti_out)
        return np.asarray(mask) if return_mask else mask.counts()
