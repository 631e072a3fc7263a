"""Reading: manifests, shard lists and checks, `make_dataset` (tf.data) and `read_cases`."""
import glob
import json
import os

import numpy as np
import tensorflow as tf

from liverzoo.data.tfrecord.sampling import _NUM_U, PatchSampler, StackSampler
from liverzoo.data.tfrecord.schema import _SPLITS, MANIFEST_NAME, MODES, Decoder, PreprocessedCase
from liverzoo.data.tfrecord.writer import _sha256
from liverzoo.errors import ConfigError, DataError

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

