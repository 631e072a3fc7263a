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
import collections
import dataclasses
import glob
import hashlib
import json
import os
import zlib

import numpy as np
import tensorflow as tf

from liverzoo.data import case_pool, io, preprocess
from liverzoo.data.sampling import stack_offsets
from liverzoo.data.splits import split_cases
from liverzoo.errors import ConfigError, DataError

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


def _check_compression(compression):
    if compression in (None, "", "none", "NONE"):
        return None
    if compression != "GZIP":
        raise ConfigError(f"compression must be 'GZIP' or None, got {compression!r}")
    return "GZIP"


def shard_name(split, index, count, compression):
    """File name of shard `index` of `count` of a split, e.g. `train-00000-of-00004.tfrecord.gz`."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if compression else "")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _dataset_preset(cases, splits, preset, skip_bad, skipped, progress, pool):
    """For nnU-Net's CT normalisation: statistics over the training cases' foreground."""
    preset = preprocess.get_preset(preset)
    if preset.normalization != "ct_percentile":
        return preset
    samples = []
    jobs = [(c.case_id, (c,)) for c in cases if splits[c.case_id] == "train"]
    step = None if progress is None else (lambda k, n, case_id: progress(k, n, f"{case_id} (intensity statistics)"))
    for case_id, result in pool.map(_case_samples, jobs, step):
        if isinstance(result, DataError):
            if not skip_bad:
                raise result
            skipped[case_id] = str(result)
            continue
        samples.append(result)
    return preprocess.with_ct_statistics(preset, samples)


def _case_samples(case):
    """Foreground intensity samples of one case (run in a worker process)."""
    volume = case.load()
    _require_label(volume, case.case_id)
    return preprocess.foreground_samples(volume.array, volume.label, seed=zlib.crc32(case.case_id.encode()))


def _require_label(volume, case_id):
    if volume.label is None:
        raise DataError(f"{volume.path}: case {case_id} has no label")


def write_dataset(cases, output_dir, *, preset, num_shards=4, val_fraction=0.2, seed=0, compression="GZIP",
                  inplane_size=None, target_spacing=None, split=None, skip_bad=False, progress=None,
                  num_workers=1, pool=None):
    """Preprocesses labelled cases and writes them as sharded TFRecords plus a manifest.

    Each case is stored once (see tfrecords/README.md). Cases are split into train and
    validation by case (never by slice), deterministically from `seed`; each split goes to
    its own shards (`train-00000-of-0000N.tfrecord.gz`, `val-...`). `manifest.json` beside
    the shards lists cases, split, shard, slice counts, label voxel counts and the exact
    preprocessing. Every file is written under a temporary name and renamed only when all
    cases are done, so a failure leaves no partial shard or manifest; shards of an earlier
    manifest in the folder that the new one does not list are removed. The same inputs and
    seed give byte-identical files.

    Args:
        cases: labelled `CTVolume`s with `case_id` set (e.g. `demo.demo_cases()`), or
            objects with `case_id` and `load() -> CTVolume` (e.g. `io.CaseSource` from
            `io.find_cases`), which are loaded one at a time.
        output_dir: destination folder (created if missing).
        preset: name in `preprocess.PRESETS` or a `Preset`.
        num_shards: shards per split (fewer if a split has fewer cases).
        val_fraction: share of cases for validation.
        seed: split and foreground-coordinate seed.
        compression: "GZIP" or None.
        inplane_size: overrides the preset's in-plane size (0: keep the slices as they are).
        target_spacing: overrides the preset's target spacing `(x, y, z)` mm.
        split: optional `{case_id: "train" | "val"}` replacing the seeded split.
        skip_bad: skip cases that raise `DataError` (listed in the manifest's "skipped")
            instead of stopping.
        progress: optional `callable(index, total, case_id)` called before each case
            (with workers: before waiting for it).
        num_workers: processes preprocessing cases at once (see `case_pool.CasePool`);
            1 works in this process. A worker that fails other than with DataError, or
            dies, stops the writer with a DataError naming the case.
        pool: optional object with `CasePool`'s `map` and `with` protocol used instead of
            a pool of `num_workers` (e.g. `beam_pipeline.BeamPool`: cases on Apache Beam);
            the files are the same.

    Returns:
        The manifest dict (also written to `output_dir/manifest.json`).

    Raises:
        ConfigError: bad preset, compression, shard or worker count, or split.
        DataError: a bad case (unless `skip_bad`), no usable cases, or an unwritable folder.

    Example:
        >>> from liverzoo.data import io
        >>> manifest = write_dataset(io.find_cases("LiTS"), "tfrecords/lits",
        ...                          preset="ds_nnunet", num_shards=16)  # doctest: +SKIP
    """
    base_preset = preprocess.get_preset(preset)
    compression = _check_compression(compression)
    if not (isinstance(num_shards, (int, np.integer)) and num_shards >= 1):
        raise ConfigError(f"num_shards must be a positive integer, got {num_shards!r}")
    case_pool.check_num_workers(num_workers)
    cases = [_InMemoryCase(c) if isinstance(c, io.CTVolume) else c for c in cases]
    ids = [c.case_id for c in cases]
    if not cases:
        raise DataError("no cases to write")
    if len(set(ids)) != len(ids):
        raise DataError("case ids are not unique: " + ", ".join(sorted({i for i in ids if ids.count(i) > 1})))
    splits = split_cases(ids, val_fraction, seed)
    if split is not None:
        bad = {k: v for k, v in split.items() if k not in splits or v not in _SPLITS}
        if bad:
            raise ConfigError(f"split: unknown case ids or split names {bad}")
        splits.update(split)
    io.check_output_dir(output_dir)
    cases = sorted(cases, key=lambda c: c.case_id)
    skipped = {}
    # One pool for both passes over the cases: each worker imports TensorFlow once.
    with case_pool.CasePool(min(num_workers, len(cases)), output_dir) if pool is None else pool as pool:
        effective = _dataset_preset(cases, splits, base_preset, skip_bad, skipped, progress, pool)
        effective = dataclasses.replace(
            effective,
            inplane_size=effective.inplane_size if inplane_size is None else (inplane_size or None),
            target_spacing=effective.target_spacing if target_spacing is None else tuple(target_spacing))

        slots = {s: min(num_shards, sum(1 for c in cases if splits[c.case_id] == s)) for s in _SPLITS}
        temps = {(s, i): os.path.join(output_dir, f".{s}-{i:05d}.tmp-{os.getpid()}")
                 for s in _SPLITS for i in range(slots[s])}
        manifest_tmp = os.path.join(output_dir, f".{MANIFEST_NAME}.tmp-{os.getpid()}")
        writers, entries, shard_of = {}, [], {}
        try:
            options = tf.io.TFRecordOptions(compression_type=compression or "")
            for key, tmp in temps.items():
                writers[key] = tf.io.TFRecordWriter(tmp, options)
            position = {s: 0 for s in _SPLITS}
            jobs = [(c.case_id, (c, effective, seed)) for c in cases if c.case_id not in skipped]
            step = _ProgressOverAll(progress, cases)
            for case_id, result in pool.map(_prepare_case, jobs, step):
                if isinstance(result, DataError):
                    if not skip_bad:
                        raise result
                    skipped[case_id] = str(result)
                    continue
                entry, record = result
                s = splits[case_id]
                key = (s, position[s] % slots[s])
                position[s] += 1
                writers[key].write(record)
                entries.append(dict(entry, split=s))
                shard_of[case_id] = key
            step(None, None, None)
            for writer in writers.values():
                writer.close()
            if not entries:
                reasons = "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items())[:3])
                raise DataError(f"{output_dir}: no usable cases ({len(skipped)} skipped: {reasons})")
            # Shards left empty by skipped cases are dropped; the names count the others.
            used = {s: min(slots[s], position[s]) for s in _SPLITS}
            names = {(s, i): shard_name(s, i, used[s], compression) for s in _SPLITS for i in range(used[s])}
            for entry in entries:
                entry["shard"] = names[shard_of[entry["case_id"]]]
            manifest = {
                "format_version": FORMAT_VERSION,
                "preset": effective.to_dict(),
                "compression": compression,
                "seed": seed,
                "val_fraction": val_fraction,
                "num_shards": num_shards,
                "splits": {s: [e["case_id"] for e in entries if e["split"] == s] for s in _SPLITS},
                "shards": [{"file": name, "split": key[0],
                            "cases": [e["case_id"] for e in entries if e["shard"] == name],
                            "bytes": os.path.getsize(temps[key]), "sha256": _sha256(temps[key])}
                           for key, name in names.items()],
                "cases": entries,
                "skipped": [{"case_id": k, "error": v} for k, v in sorted(skipped.items())],
            }
            with open(manifest_tmp, "w") as f:
                json.dump(manifest, f, indent=1, sort_keys=True)
                f.write("\n")
            old = _old_shards(output_dir)
            for key, name in names.items():
                os.replace(temps[key], os.path.join(output_dir, name))
            os.replace(manifest_tmp, os.path.join(output_dir, MANIFEST_NAME))
            for name in old - set(names.values()):
                if os.path.isfile(os.path.join(output_dir, name)):
                    os.remove(os.path.join(output_dir, name))
            for key in set(temps) - set(names):
                os.remove(temps[key])
            return manifest
        except BaseException:
            for writer in writers.values():
                writer.close()
            for tmp in [*temps.values(), manifest_tmp]:
                if os.path.exists(tmp):
                    os.remove(tmp)
            raise


class _ProgressOverAll:
    """Progress over every case, also those the statistics pass skipped (never sent to a worker)."""

    def __init__(self, progress, cases):
        self.progress, self.ids, self.next = progress, [c.case_id for c in cases], 0

    def __call__(self, _, __, case_id):
        """Reports up to and including `case_id` (None: up to the end)."""
        if self.progress is None:
            return
        stop = len(self.ids) if case_id is None else self.ids.index(case_id, self.next) + 1
        for k in range(self.next, stop):
            self.progress(k, len(self.ids), self.ids[k])
        self.next = stop


class _InMemoryCase:
    """A loaded `CTVolume` in the `case_id` + `load()` shape `write_dataset` iterates."""

    def __init__(self, volume):
        if not volume.case_id:
            raise ConfigError(f"{volume.path}: a CTVolume passed to write_dataset needs a case_id")
        self.case_id, self._volume = volume.case_id, volume

    def load(self):
        return self._volume


def _old_shards(output_dir):
    try:
        with open(os.path.join(output_dir, MANIFEST_NAME)) as f:
            return {s["file"] for s in json.load(f)["shards"] if "/" not in s["file"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _prepare_case(case, preset, seed):
    """Loads, preprocesses and encodes one case; returns (manifest entry, record bytes)."""
    volume = case.load()
    _require_label(volume, case.case_id)
    image, label, spacing = preprocess.prepare_volume(volume.array, volume.spacing, preset, volume.label)
    pad_value = float(preprocess.apply_preset(np.full((2, 2, 2), preprocess.AIR_HU, np.float32), preset)[0, 0, 0])
    if preset.normalization in ("zscore", "equalize"):
        pad_value = float(image.min())  # per-volume normalisations: air maps to the minimum
    record = encode_case(case.case_id, image, label, spacing, pad_value, seed)
    entry = {
        "case_id": case.case_id,
        "image": os.path.basename(str(volume.path)),
        "label": os.path.basename(str(volume.label_path or "")),
        "source_shape": [int(n) for n in volume.array.shape],
        "source_spacing": [round(float(v), 6) for v in volume.spacing],
        "shape": [int(n) for n in image.shape],
        "spacing": [round(float(v), 6) for v in spacing],
        "num_slices": int(image.shape[2]),
        "pad_value": pad_value,
        "label_voxels": {str(c): int(n) for c, n in enumerate(np.bincount(label.ravel(), minlength=3)[:3])},
    }
    return entry, record


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


# --- Parsing: sampling stacks and patches in graph ops ----------------------------------------

# Columns of the per-sample uniform draws.
_U_USE_FG, _U_CLASS, _U_COORD, _U_SLICE, _U_STRIDE, _U_AXIS = 0, 1, 2, 3, 4, 5
_NUM_U = 8


def _uniform_int(u, lo, hi):
    """Integer in [lo, hi] from u in [0, 1)."""
    return lo + tf.minimum(tf.cast(tf.floor(u * tf.cast(hi - lo + 1, tf.float32)), tf.int32), hi - lo)


def _bounds(n, size):
    """Origin range [lo, hi] of a patch of `size` in an axis of `n` (centred if n < size)."""
    lo = tf.minimum(0, tf.math.floordiv(n - size, 2))
    return lo, tf.maximum(n - size, lo)


def _foreground_center(case, u):
    """(use_fg, centre (3,)): a stored labelled voxel, class drawn first (nnU-Net style)."""
    n1, n2 = case["fg_counts"][0], case["fg_counts"][1]
    pick_tumor = (n2 > 0) & ((n1 == 0) | (u[_U_CLASS] >= 0.5))
    start = tf.where(pick_tumor, n1, 0)
    count = tf.where(pick_tumor, n2, n1)
    k = start + _uniform_int(u[_U_COORD], 0, tf.maximum(count, 1) - 1)
    return (n1 + n2) > 0, case["fg_coords"][k]


def crop_or_pad(x, origin, size, pad_value):
    """TF version of `sampling.crop_or_pad` on the leading len(size) axes of `x`.

    Slices the in-bounds part, then pads with `pad_value`; origins may be negative or run
    past the end.
    """
    k = len(size)
    ndim_rest = x.shape.rank - k
    shape = tf.shape(x)[:k]
    size = tf.constant(size, tf.int32)
    start = tf.maximum(origin, 0)
    stop = tf.minimum(origin + size, shape)
    extent = tf.maximum(stop - start, 0)
    part = tf.slice(x, tf.concat([start, tf.zeros([ndim_rest], tf.int32)], 0),
                    tf.concat([extent, tf.fill([ndim_rest], -1)], 0))
    before = start - origin
    after = size - extent - before
    paddings = tf.concat([tf.stack([before, after], axis=1), tf.zeros([ndim_rest, 2], tf.int32)], 0)
    return tf.pad(part, paddings, constant_values=tf.cast(pad_value, x.dtype))


@dataclasses.dataclass
class StackSampler:
    """2.5D: `(H, W, T)` stacks around a centre slice (Eq. 1 of 000_ebe0050d52f538d0.txt).

    Attributes:
        stack_size: T (odd); 1 gives single slices for 2D models.
        mode: "dense" (stride 1), "sparse" (stride `sparse_stride`), or "dense_sparse"
            (each stack dense or sparse with probability 1/2: the DS step of DSD training).
        sparse_stride: s of sparse stacks (the paper uses 2).
        foreground_fraction: share of stacks centred on a labelled voxel's slice.
        patch_size: optional `(h, w)` in-plane crop (foreground-centred like the slice).
    """

    stack_size: int = 7
    mode: str = "dense"
    sparse_stride: int = 2
    foreground_fraction: float = 0.5
    patch_size: tuple = None

    def __post_init__(self):
        self._offsets = tf.constant(stack_offsets(self.stack_size, 1), tf.int32)
        stack_offsets(self.stack_size, self.sparse_stride)  # validates

    def _stride(self, u):
        if self.mode == "dense":
            return tf.constant(1, tf.int32)
        if self.mode == "sparse":
            return tf.constant(self.sparse_stride, tf.int32)
        return tf.where(u[_U_STRIDE] < 0.5, 1, self.sparse_stride)

    def extract(self, case, centre, stride, origin):
        """The stack at slice `centre[0]` with `stride`, cropped at in-plane `origin`."""
        depth = tf.shape(case["image"])[0]
        index = tf.clip_by_value(centre[0] + self._offsets * stride, 0, depth - 1)
        image = tf.gather(case["image"], index)  # (T, H, W)
        label = case["label"][centre[0]]
        if self.patch_size is not None:
            image = tf.transpose(crop_or_pad(tf.transpose(image, (1, 2, 0)), origin, self.patch_size,
                                             case["pad_value"]), (2, 0, 1))
            label = crop_or_pad(label, origin, self.patch_size, 0)
        meta = {"case_id": case["case_id"], "slice": centre[0], "stride": stride, "origin": origin}
        return tf.transpose(image, (1, 2, 0)), tf.cast(label, tf.int32), meta

    def sample(self, case, u):
        """One random stack from uniforms `u` (shape (8,))."""
        shape = tf.shape(case["image"])
        use_fg, fg = _foreground_center(case, u)
        use_fg = use_fg & (u[_U_USE_FG] < self.foreground_fraction)
        z = tf.where(use_fg, fg[0], _uniform_int(u[_U_SLICE], 0, shape[0] - 1))
        origin = tf.zeros([2], tf.int32)
        if self.patch_size is not None:
            axes = []
            for a in range(2):
                lo, hi = _bounds(shape[a + 1], self.patch_size[a])
                centred = tf.clip_by_value(fg[a + 1] - self.patch_size[a] // 2, lo, hi)
                axes.append(tf.where(use_fg, centred, _uniform_int(u[_U_AXIS + a], lo, hi)))
            origin = tf.stack(axes)
        return self.extract(case, tf.stack([z]), self._stride(u), origin)

    def sequence(self, case):
        """Every centre slice in order (dense stride; in-plane crop centred)."""
        shape = tf.shape(case["image"])
        origin = tf.zeros([2], tf.int32)
        if self.patch_size is not None:
            origin = tf.stack([tf.math.floordiv(shape[a + 1] - self.patch_size[a], 2) for a in range(2)])
        stride = tf.constant(self.sparse_stride if self.mode == "sparse" else 1, tf.int32)
        centres = tf.range(shape[0])[:, None]
        return tf.data.Dataset.from_tensor_slices(centres).map(lambda c: self.extract(case, c, stride, origin))


@dataclasses.dataclass
class PatchSampler:
    """3D: `(D, H, W, 1)` sub-volumes, foreground-centred with probability `foreground_fraction`.

    Attributes:
        patch_shape: `(D, H, W)` (e.g. (12, 256, 256) LW-HCN, (16, 256, 256) LV-Net), or
            None for the whole volume.
        foreground_fraction: share of patches centred on a labelled voxel.
    """

    patch_shape: tuple = None
    foreground_fraction: float = 0.5

    def extract(self, case, origin):
        """The patch at `origin` (D, H, W), padded with the case's pad value outside."""
        if self.patch_shape is None:
            image, label = case["image"], case["label"]
        else:
            image = crop_or_pad(case["image"], origin, self.patch_shape, case["pad_value"])
            label = crop_or_pad(case["label"], origin, self.patch_shape, 0)
        meta = {"case_id": case["case_id"], "origin": origin}
        return image[..., None], tf.cast(label, tf.int32), meta

    def sample(self, case, u):
        """One random patch from uniforms `u` (shape (8,))."""
        if self.patch_shape is None:
            return self.extract(case, tf.zeros([3], tf.int32))
        shape = tf.shape(case["image"])
        use_fg, fg = _foreground_center(case, u)
        use_fg = use_fg & (u[_U_USE_FG] < self.foreground_fraction)
        axes = []
        for a in range(3):
            lo, hi = _bounds(shape[a], self.patch_shape[a])
            centred = tf.clip_by_value(fg[a] - self.patch_shape[a] // 2, lo, hi)
            axes.append(tf.where(use_fg, centred, _uniform_int(u[_U_AXIS + a], lo, hi)))
        return self.extract(case, tf.stack(axes))

    def sequence(self, case):
        """Patches tiling the whole volume in order (the last one along an axis ends at its end)."""
        if self.patch_shape is None:
            return tf.data.Dataset.from_tensors(self.extract(case, tf.zeros([3], tf.int32)))
        shape = tf.shape(case["image"])
        starts = []
        for a in range(3):
            n, p = shape[a], self.patch_shape[a]
            count = tf.maximum(tf.math.floordiv(n - p + p - 1, p) + 1, 1)
            along = tf.minimum(tf.range(count) * p, n - p)
            starts.append(tf.where(n <= p, tf.math.floordiv(n - p, 2)[None], along))
        grid = tf.meshgrid(*starts, indexing="ij")
        origins = tf.reshape(tf.stack(grid, axis=-1), [-1, 3])
        return tf.data.Dataset.from_tensor_slices(origins).map(lambda o: self.extract(case, o))


# --- Reading ---------------------------------------------------------------------------------


def load_manifest(path):
    """Reads `manifest.json` (given the file or its folder).

    Raises:
        DataError: missing or not a manifest.
    """
    path = os.path.join(path, MANIFEST_NAME) if os.path.isdir(path) else path
    try:
        with open(path) as f:
            manifest = json.load(f)
        manifest["shards"], manifest["cases"]  # noqa: B018 - shape check
    except OSError as e:
        raise DataError(f"{path}: cannot read the manifest ({e.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{path}: not a liverzoo TFRecord manifest") from None
    return manifest


def shard_files(source, split="train"):
    """Resolves shards and the manifest (if any) from a folder, manifest, glob or list.

    Args:
        source: a folder holding `manifest.json`, the manifest itself, a glob pattern of
            shard files, or a list of shard paths.
        split: the split to take from a manifest ("train", "val" or "all").

    Returns:
        `(paths, manifest or None)`.

    Raises:
        DataError: nothing matches, or a shard's size differs from the manifest (truncated).
    """
    manifest, folder = None, None
    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
    elif os.path.isdir(source) or str(source).endswith(".json"):
        manifest = load_manifest(source)
        folder = source if os.path.isdir(source) else os.path.dirname(source)
        if split not in _SPLITS + ("all",):
            raise ConfigError(f"split must be 'train', 'val' or 'all', got {split!r}")
        paths = [os.path.join(folder, s["file"]) for s in manifest["shards"] if split in ("all", s["split"])]
    else:
        paths = sorted(glob.glob(str(source)))
    if not paths:
        raise DataError(f"{source}: no TFRecord shards found" + (f" for split {split!r}" if manifest else ""))
    folder = folder or os.path.dirname(paths[0])
    if manifest is None and os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
        manifest = load_manifest(folder)
    _check_sizes(paths, manifest)
    return paths, manifest


def _check_sizes(paths, manifest):
    expected = {s["file"]: s for s in manifest["shards"]} if manifest else {}
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"{path}: shard listed in the manifest is missing")
        info = expected.get(os.path.basename(path))
        if info is not None and os.path.getsize(path) != info["bytes"]:
            raise DataError(f"{path}: shard is truncated or was modified ({os.path.getsize(path)} bytes, "
                            f"manifest says {info['bytes']})")


def verify_shards(paths, manifest=None):
    """Checks shards fully; DataError names the first bad one.

    With a manifest, compares each shard's sha256; without, reads every record (TFRecord
    CRCs, and GZIP's) through TensorFlow.
    """
    expected = {s["file"]: s["sha256"] for s in manifest["shards"]} if manifest else {}
    for path in paths:
        want = expected.get(os.path.basename(path))
        if want is not None:
            if _sha256(path) != want:
                raise DataError(f"{path}: shard is corrupt (sha256 differs from the manifest)")
            continue
        try:
            for _ in tf.data.TFRecordDataset(path, compression_type=_compression_of(path)):
                pass
        except tf.errors.OpError as e:
            raise DataError(f"{path}: shard is truncated or corrupt ({e.message.splitlines()[0]})") from None


def _compression_of(path):
    return "GZIP" if str(path).endswith(".gz") else ""


def _records(paths, shuffle, seed, repeat, deterministic):
    files = tf.data.Dataset.from_tensor_slices([str(p) for p in paths])
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    compression = {_compression_of(p) for p in paths}
    if len(compression) != 1:
        raise DataError(f"{paths[0]}: shards mix GZIP and uncompressed files")
    compression = compression.pop()
    return files.interleave(lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
                            cycle_length=min(len(paths), 4), block_length=1,
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def make_dataset(file_pattern, *, mode="dense", stack_size=7, sparse_stride=2, patch_shape=None, batch_size=16,
                 shuffle=True, repeat=True, foreground_fraction=0.5, augment=None, seed=None, samples_per_case=64,
                 split="train", cases_in_flight=4, shuffle_buffer=64, include_metadata=False, verify=False,
                 drop_remainder=None):
    """A tf.data pipeline of training batches from TFRecord shards.

    2.5D modes yield `image (B, H, W, T)` float32 with `label (B, H, W)` int32 of the centre
    slice; "volume" yields `image (B, D, H, W, 1)` with `label (B, D, H, W)`. Each decoded
    case gives `samples_per_case` random samples (or, with `samples_per_case=None`, every
    centre slice / a tiling of the volume in order), interleaved over `cases_in_flight`
    cases, then shuffled, batched and prefetched. Graph ops only.

    Args:
        file_pattern: folder with manifest.json, manifest path, glob of shards, or list.
        mode: "dense", "sparse", "dense_sparse" (Eq. 1 of 000_ebe0050d52f538d0.txt with
            s = 1, 2, or either with probability 1/2) or "volume".
        stack_size: T of 2.5D stacks (odd; 1 for 2D models).
        sparse_stride: s of sparse stacks.
        patch_shape: 2.5D: optional `(h, w)` in-plane crop; volume: `(D, H, W)` or None for
            whole volumes.
        batch_size: examples per batch.
        shuffle: shuffle shards and examples.
        repeat: repeat forever (training); otherwise one pass.
        foreground_fraction: share of samples centred on a labelled voxel.
        augment: optional `callable(image, label) -> (image, label)` in TF ops, applied per
            example before batching.
        seed: makes sampling, shuffling and order deterministic; None for speed.
        samples_per_case: random samples drawn from each decoded case, or None for all.
        split: split read from a manifest/folder ("train", "val", "all").
        cases_in_flight: decoded cases sampled at once (bounds memory: each is a whole volume).
        shuffle_buffer: examples in the shuffle buffer.
        include_metadata: also yield a dict (case_id, slice, stride, origin) per example.
        verify: check every shard fully first (`verify_shards`); without it only shard
            sizes are checked against the manifest. TensorFlow's own errors for a corrupt
            record met during iteration do not name the file.
        drop_remainder: drop a last partial batch (default: when repeating).

    Returns:
        A `tf.data.Dataset` of `(image, label)` (or `(image, label, meta)`).

    Raises:
        ConfigError: bad mode, stack size or patch shape.
        DataError: no shards, or a shard truncated / corrupt according to the manifest.

    Example:
        >>> ds = make_dataset("tfrecords/demo", mode="dense_sparse", stack_size=7, batch_size=16)  # doctest: +SKIP
        >>> image, label = next(iter(ds))  # doctest: +SKIP
        >>> image.shape, label.shape  # doctest: +SKIP
        (TensorShape([16, 256, 256, 7]), TensorShape([16, 256, 256]))
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if patch_shape is not None:
        patch_shape = tuple(int(p) for p in patch_shape)
        want = 3 if mode == "volume" else 2
        if len(patch_shape) != want or min(patch_shape) < 1:
            raise ConfigError(f"patch_shape for mode {mode!r} must be {want} positive sizes, got {patch_shape}")
    if samples_per_case is not None and samples_per_case < 1:
        raise ConfigError(f"samples_per_case must be positive or None, got {samples_per_case}")
    if mode == "volume":
        sampler = PatchSampler(patch_shape, foreground_fraction)
    else:
        sampler = StackSampler(stack_size, mode, sparse_stride, foreground_fraction, patch_shape)
    paths, manifest = shard_files(file_pattern, split)
    if verify:
        verify_shards(paths, manifest)
    deterministic = seed is not None
    decoder = Decoder()
    records = _records(paths, shuffle, seed, repeat, deterministic)
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    cases = tf.data.Dataset.zip(records, seeds).map(lambda r, s: (decoder.decode(r), s),
                                                  num_parallel_calls=2, deterministic=deterministic)

    def per_case(case, case_seed):
        if samples_per_case is None:
            return sampler.sequence(case)
        u = tf.random.stateless_uniform([samples_per_case, _NUM_U], seed=case_seed)
        return tf.data.Dataset.from_tensor_slices(u).map(lambda row: sampler.sample(case, row))

    examples = cases.interleave(per_case, cycle_length=cases_in_flight, block_length=1,
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    examples = examples.map(_set_static_shape(mode, stack_size, patch_shape, manifest),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if augment is not None:
        examples = examples.map(lambda x, y, m: (*augment(x, y), m), num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=deterministic)
    if not include_metadata:
        examples = examples.map(lambda x, y, m: (x, y))
    if shuffle:
        examples = examples.shuffle(shuffle_buffer, seed=seed)
    examples = examples.batch(batch_size, drop_remainder=repeat if drop_remainder is None else drop_remainder,
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    return examples.with_options(options).prefetch(tf.data.AUTOTUNE)


def _set_static_shape(mode, stack_size, patch_shape, manifest):
    """Static shapes for batching: the patch shape, or the manifest's common in-plane size."""
    hw = [None, None]
    shapes = {tuple(c["shape"]) for c in manifest["cases"]} if manifest else set()
    if mode == "volume":
        full = shapes.pop() if len(shapes) == 1 else None
        dhw = list(patch_shape) if patch_shape else ([full[2], full[0], full[1]] if full else [None] * 3)
    else:
        inplane = {s[:2] for s in shapes}
        if patch_shape:
            hw = list(patch_shape)
        elif len(inplane) == 1:
            hw = list(inplane.pop())

    def fn(image, label, meta):
        if mode == "volume":
            return tf.ensure_shape(image, dhw + [1]), tf.ensure_shape(label, dhw), meta
        return tf.ensure_shape(image, hw + [stack_size]), tf.ensure_shape(label, hw), meta

    return fn


def read_cases(source, split="val"):
    """Yields whole preprocessed cases of a split, for whole-volume validation.

    Args:
        source: folder with manifest.json, the manifest, a glob of shards, or a list.
        split: "train", "val" or "all" (used with a manifest).

    Yields:
        `PreprocessedCase(case_id, image (X, Y, Z) float32, label (X, Y, Z) uint8, spacing)`.

    Raises:
        DataError: a shard is missing, truncated or corrupt; the message names it.

    Example:
        >>> for case in read_cases("tfrecords/demo", split="val"):  # doctest: +SKIP
        ...     probs = predict_volume(model, case.image)
    """
    paths, _ = shard_files(source, split)
    decode = tf.function(Decoder().decode)
    for path in paths:
        try:
            for record in tf.data.TFRecordDataset(path, compression_type=_compression_of(path)):
                case = decode(record)
                yield PreprocessedCase(case["case_id"].numpy().decode(),
                                       np.transpose(case["image"].numpy(), (1, 2, 0)),
                                       np.transpose(case["label"].numpy(), (1, 2, 0)),
                                       case["spacing"].numpy().astype(np.float64))
        except tf.errors.OpError as e:
            raise DataError(f"{path}: shard is truncated or corrupt ({e.message.splitlines()[0]})") from None
