"""SavedModel export for TF Serving: signature `"segment"` (also `serving_default`).

Input `ct_stack` `(B, H, W, T)` for 2D/2.5D models or `ct_subvolume` `(B, D, H, W, 1)` for 3D
ones, output `probabilities`; batch size free. Written through Keras' `ExportArchive` (the
Keras 3 path to a SavedModel; `TFLiteConverter.from_concrete_functions` on a Keras 3 model
leaves the weights as uninitialised resource variables, cf. tensorflow/tensorflow#63867), so
the TFLite export goes through the same archive (`write_archive`).
"""
import json
import logging
import os

from liverzoo.errors import ConfigError
from liverzoo.export.rewrite import inference_model
from liverzoo.layout import layout_of
from liverzoo.lite import OUTPUT_NAME, SIGNATURE
from liverzoo.runtime import SAVED_MODEL_METADATA

INPUT_NAMES = {"2d": "ct_stack", "3d": "ct_subvolume"}


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
    return INPUT_NAMES[layout_of(input_shape).name]


def check_input_shape(model, input_shape=None, *, static=True):
    """The per-example input shape used for export (TFLite needs it static); ConfigError if it does not fit."""
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


def write_archive(model, path, input_shape, batch_size):
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
    # tf.saved_model.save logs "Assets written to: <temporary folder>" at INFO whatever
    # `verbose` says (twice in a notebook); the caller reports the file it writes itself.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        archive.write_out(path, verbose=False)
    finally:
        logger.setLevel(level)


def export_saved_model(model, path, *, input_shape=None, metadata=None):
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
        metadata: optional dict written to `liverzoo.runtime.SAVED_MODEL_METADATA` (what `liverzoo.runtime` needs to
            preprocess CT for the model: `model`, `kind`, `preset`, `inplane_size`,
            `inplane_spacing`, as in a `.tflite` file's metadata).

    Returns:
        `path`.

    Example:
        >>> export_saved_model(model, "exported/residual_unet")
        >>> tf.saved_model.load("exported/residual_unet").signatures["segment"](ct_stack=x)
    """
    from liverzoo.data import io

    path = os.fspath(path)
    input_shape = check_input_shape(model, input_shape, static=False)

    def write(tmp):
        write_archive(model, tmp, input_shape, None)
        if metadata:
            os.makedirs(os.path.join(tmp, os.path.dirname(SAVED_MODEL_METADATA)), exist_ok=True)
            with open(os.path.join(tmp, SAVED_MODEL_METADATA), "w") as f:
                json.dump(metadata, f, indent=1, sort_keys=True)

    io.atomic_write_folder(path, write)
    return path

