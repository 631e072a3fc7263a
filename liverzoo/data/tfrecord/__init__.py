"""Sharded TFRecords of preprocessed CT cases: writer, schema (decoder), samplers, reader.

The record schema is documented in tfrecords/README.md. In short: one `tf.train.Example`
per case holding the whole preprocessed volume (float32, `(D, H, W)` = `(Z, X, Y)`), its
labels (uint8), spacing, a pad value and a class-balanced list of labelled voxel
coordinates for foreground-aware sampling. The reader decodes a case once and draws many
2.5D stacks or 3D patches from it, in graph ops only (no `py_function`), so decoding cost
is shared and memory stays at a few decoded cases.

Layers of the reader, kept apart as in Model Garden's `segmentation_input_3d.py`:
`Decoder.decode` knows the schema; `StackSampler` / `PatchSampler` know shapes and
sampling; `make_dataset` wires files, interleave, shuffle, batch and prefetch.
"""
from liverzoo.data.splits import split_cases  # noqa: F401  (kept importable from here)
from liverzoo.data.tfrecord.reader import (  # noqa: F401
    load_manifest, make_dataset, read_cases, shard_files, verify_shards,
)
from liverzoo.data.tfrecord.sampling import PatchSampler, StackSampler, crop_or_pad  # noqa: F401
from liverzoo.data.tfrecord.schema import (  # noqa: F401
    FORMAT_VERSION, MANIFEST_NAME, MAX_COORDS_PER_CLASS, MODES, Decoder, PreprocessedCase, encode_case,
    foreground_coords,
)
from liverzoo.data.tfrecord.writer import shard_name, write_dataset  # noqa: F401
