"""Writing: cases preprocessed once into sharded TFRecords plus a manifest (`write_dataset`)."""
import dataclasses
import hashlib
import json
import os
import zlib

import numpy as np
import tensorflow as tf

from liverzoo.data import case_pool, io, preprocess
from liverzoo.data.splits import split_cases
from liverzoo.data.tfrecord.schema import _SPLITS, FORMAT_VERSION, MANIFEST_NAME, encode_case
from liverzoo.errors import ConfigError, DataError


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
    for _, result in _good_results(pool.map(_case_samples, jobs, step), skip_bad, skipped):
        samples.append(result)
    return preprocess.with_ct_statistics(preset, samples)


def _good_results(results, skip_bad, skipped):
    """The `(case_id, result)` pairs of a pool's results whose case did not fail; a failed case
    (a DataError result) stops the writer, or with `skip_bad` is recorded in `skipped`."""
    for case_id, result in results:
        if isinstance(result, DataError):
            if not skip_bad:
                raise result
            skipped[case_id] = str(result)
            continue
        yield case_id, result


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
            for case_id, (entry, record) in _good_results(pool.map(_prepare_case, jobs, step), skip_bad, skipped):
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
    pad_value = preprocess.air_value(preset, image)
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


