"""Export zoo models for servers (SavedModel) and phones (TFLite, builtin ops only).

Inference-only export: `inference_model` keeps `model.outputs[0]` (deep-supervision heads
dropped) and every exported graph is traced with `training=False` (dropout and batch-norm
updates inactive). One module per step:

- `saved_model`: the SavedModel for TF Serving, signature `"segment"` (also
  `serving_default`), input `ct_stack` `(B, H, W, T)` or `ct_subvolume` `(B, D, H, W, 1)`,
  output `probabilities`, batch size free.
- `tflite`: batch-1 TFLite files in four `QUANTIZE_MODES` ("none", "fp16", "dynamic", "int8"),
  builtin ops only (an op needing Flex is refused naming the op and the layer), checked to
  load in LiteRT, with the zoo metadata embedded (`liverzoo.lite`).
- `rewrite`: the inference-only graph and the Conv3D -> folded-2D rewrite of TFLite files.
- `calibration`: real CT inputs for int8 calibration and verification.
- `verify`: `verify_tflite` runs a file in LiteRT on real CT and writes a JSON report beside it;
  `verify_volumes` segments whole CT volumes with the file and with its checkpoint.
- `pipeline`: `export_model`, what tools/export.py runs.

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
from liverzoo.export.calibration import calibration_inputs, demo_inputs, sample_inputs
from liverzoo.export.pipeline import FORMATS, MIN_AGREEMENT, ExportRefused, export_model
from liverzoo.export.rewrite import inference_model, lite_compatible
from liverzoo.export.saved_model import export_saved_model, input_name
from liverzoo.export.tflite import (
    CLASS_NAMES, METADATA_VERSION, QUANTIZE_MODES, TFLiteExporter, convert_tflite, write_tflite, zoo_metadata,
)
from liverzoo.export.verify import verify_tflite, verify_volumes
from liverzoo.lite import OUTPUT_NAME, SIGNATURE, float_ops, read_metadata, tflite_ops

__all__ = [
    "CLASS_NAMES", "FORMATS", "MIN_AGREEMENT", "METADATA_VERSION", "OUTPUT_NAME", "ExportRefused", "QUANTIZE_MODES", "SIGNATURE", "TFLiteExporter",
    "calibration_inputs", "convert_tflite", "demo_inputs", "export_model", "export_saved_model", "float_ops",
    "inference_model", "input_name", "lite_compatible", "read_metadata", "sample_inputs", "tflite_ops",
    "verify_tflite", "verify_volumes", "write_tflite", "zoo_metadata",
]
