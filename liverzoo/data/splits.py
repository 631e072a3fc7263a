"""Case-level splits: the one train/validation split function, and regrouping shards by fold.

A split is `{case_id: "train" | "val"}`. Cases, not slices, are split, so no slice of a
validation case is ever trained on.
"""
import os

import numpy as np

from liverzoo.errors import ConfigError


def split_cases(case_ids, val_fraction=None, seed=0, *, num_folds=None, fold=0):
    """Deterministic train/validation split by case: `{case_id: "train" | "val"}`.

    The ids are sorted and permuted by a NumPy generator seeded with `seed`; the split is
    independent of the order of `case_ids`. Then either:

    - `val_fraction`: the first `round(val_fraction * n)` cases of the permutation validate
      (at least 1 and at most n - 1 when val_fraction > 0 and n > 1), or
    - `num_folds` (k-fold): the permutation is dealt round-robin into `num_folds` folds (sizes
      differ by at most one, every case validates in exactly one fold) and fold `fold`
      validates.

    Args:
        case_ids: the case ids.
        val_fraction: share of validation cases in [0, 1); None with `num_folds`.
        seed: permutation seed.
        num_folds: number of folds (k-fold), or None.
        fold: the validation fold, 0 <= fold < num_folds.

    Raises:
        ConfigError: a bad fraction, or fewer cases than folds.

    Example:
        >>> split_cases(["a", "b", "c", "d"], 0.25, seed=0)  # doctest: +SKIP
        >>> split_cases(["a", "b", "c", "d"], seed=0, num_folds=2, fold=0)  # doctest: +SKIP
    """
    ids = sorted(case_ids)
    if num_folds is not None:
        if val_fraction is not None:
            raise ConfigError("split_cases takes val_fraction or num_folds, not both")
        if len(ids) < num_folds:
            raise ConfigError(f"--num_folds={num_folds} needs at least {num_folds} cases, the data has {len(ids)}")
        order = np.random.default_rng(seed).permutation(len(ids))
        return {ids[i]: ("val" if k % num_folds == fold else "train") for k, i in enumerate(order)}
    val_fraction = 0.0 if val_fraction is None else val_fraction
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * len(ids)))
    if val_fraction > 0 and len(ids) > 1:
        n_val = min(max(n_val, 1), len(ids) - 1)
    order = np.random.default_rng(seed).permutation(len(ids))
    val = {ids[i] for i in order[:n_val]}
    return {c: "val" if c in val else "train" for c in ids}


def regroup_shards(data, split, out_dir):
    """Regroups existing shards' records by case into one train and one val shard.

    Used for k-fold training on TFRecords written with another split. Reused when both
    files exist (a restarted run).

    Args:
        data: the shards (folder with manifest.json, the manifest, or a glob).
        split: `{case_id: "train" | "val"}` covering every case of the shards.
        out_dir: folder of the regrouped `train.tfrecord.gz` and `val.tfrecord.gz`.

    Returns:
        `{"train": path, "val": path}`.
    """
    from liverzoo.data import io, tfrecord

    os.makedirs(out_dir, exist_ok=True)
    files = {s: os.path.join(out_dir, f"{s}.tfrecord.gz") for s in ("train", "val")}
    if not all(os.path.isfile(f) for f in files.values()):
        paths, _ = tfrecord.shard_files(data, "all")
        io.atomic_write(files["val"], lambda val: io.atomic_write(
            files["train"], lambda train: _write_regrouped(paths, split, {"train": train, "val": val})))
    return files


def _write_regrouped(paths, split, outputs):
    import tensorflow as tf

    from liverzoo.data import tfrecord

    decode = tf.function(tfrecord.Decoder().decode)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {s: tf.io.TFRecordWriter(path, options) for s, path in outputs.items()}
    try:
        for path in paths:
            for record in tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else ""):
                writers[split[decode(record)["case_id"].numpy().decode()]].write(record.numpy())
    finally:
        for writer in writers.values():
            writer.close()
