"""The record schema: constants, one `tf.train.Example` per case (`encode_case`), `Decoder`.

Documented in tfrecords/README.md.
"""
import collections
import zlib

import numpy as np
import tensorflow as tf


FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Labelled voxel coordinates stored per class (liver, tumor) for foreground sampling.
MAX_COORDS_PER_CLASS = 4096
MODES = ("dense", "sparse", "dense_sparse", "volume")
_SPLITS = ("train", "val")

PreprocessedCase = collections.namedtuple("PreprocessedCase", "case_id image label spacing")
PreprocessedCase.__doc__ = """A whole preprocessed case: image `(X, Y, Z)` float32, label `(X, Y, Z)` uint8, spacing (3,) mm."""


# --- Writing ---------------------------------------------------------------------------------


def _bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def _float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in values]))


def foreground_coords(label_dhw, rng, max_per_class=MAX_COORDS_PER_CLASS):
    """Up to `max_per_class` random voxel coordinates `(d, h, w)` of class 1, then of class 2.

    Returns:
        `(coords (N, 3) int64, counts (2,) int64)`: the first `counts[0]` rows are liver, the
        next `counts[1]` tumor.
    """
    parts, counts = [], []
    flat = label_dhw.ravel()
    for cls in (1, 2):
        index = np.flatnonzero(flat == cls)
        if index.size > max_per_class:
            index = np.sort(rng.choice(index, max_per_class, replace=False))
        parts.append(np.stack(np.unravel_index(index, label_dhw.shape), axis=1))
        counts.append(index.size)
    return np.concatenate(parts).astype(np.int64), np.array(counts, np.int64)


def encode_case(case_id, image_xyz, label_xyz, spacing, pad_value, seed=0):
    """Serialises one preprocessed case to a `tf.train.Example` (see tfrecords/README.md).

    Args:
        case_id: unique name of the case.
        image_xyz: `(X, Y, Z)` float32 preprocessed image.
        label_xyz: `(X, Y, Z)` uint8 labels in {0, 1, 2}.
        spacing: `(3,)` voxel size (mm) after preprocessing.
        pad_value: image value that stands for air (used where a patch leaves the volume).
        seed: seeds the choice of stored foreground coordinates.

    Returns:
        bytes, deterministic for the same inputs.
    """
    image = np.ascontiguousarray(np.transpose(image_xyz, (2, 0, 1)), dtype="<f4")
    label = np.ascontiguousarray(np.transpose(label_xyz, (2, 0, 1)), dtype=np.uint8)
    rng = np.random.default_rng([seed, zlib.crc32(case_id.encode())])
    coords, counts = foreground_coords(label, rng)
    feature = {
        "case_id": _bytes_feature([case_id.encode()]),
        "shape": _int_feature(image.shape),
        "spacing": _float_feature(spacing),
        "pad_value": _float_feature([pad_value]),
        "image": _bytes_feature([image.tobytes()]),
        "label": _bytes_feature([label.tobytes()]),
        "fg_coords": _int_feature(coords.ravel()),
        "fg_counts": _int_feature(counts),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)



# --- Schema: decoding ------------------------------------------------------------------------


class Decoder:
    """Knows the record schema: serialized `tf.train.Example` -> dict of tensors.

    `decode(serialized)` returns `case_id` (string), `image` `(D, H, W)` float32, `label`
    `(D, H, W)` uint8, `spacing` (3,) float32 (x, y, z mm), `pad_value` float32, `fg_coords`
    `(N + 1, 3)` int32 (a zero row appended so gathers never see an empty tensor) and
    `fg_counts` (2,) int32 (liver, tumor rows).
    """

    FEATURES = {
        "case_id": tf.io.FixedLenFeature([], tf.string),
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "spacing": tf.io.FixedLenFeature([3], tf.float32),
        "pad_value": tf.io.FixedLenFeature([], tf.float32),
        "image": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.string),
        "fg_coords": tf.io.VarLenFeature(tf.int64),
        "fg_counts": tf.io.FixedLenFeature([2], tf.int64),
    }

    def decode(self, serialized):
        """Parses one record into tensors (graph-safe)."""
        f = tf.io.parse_single_example(serialized, self.FEATURES)
        shape = tf.cast(f["shape"], tf.int32)
        coords = tf.reshape(tf.cast(tf.sparse.to_dense(f["fg_coords"]), tf.int32), [-1, 3])
        return {
            "case_id": f["case_id"],
            "image": tf.reshape(tf.io.decode_raw(f["image"], tf.float32, little_endian=True), shape),
            "label": tf.reshape(tf.io.decode_raw(f["label"], tf.uint8), shape),
            "spacing": f["spacing"],
            "pad_value": f["pad_value"],
            "fg_coords": tf.concat([coords, tf.zeros([1, 3], tf.int32)], axis=0),
            "fg_counts": tf.cast(f["fg_counts"], tf.int32),
        }


