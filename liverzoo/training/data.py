"""Training data: where it comes from (`inspect_data`), its shards (`prepare_data`) and the `tf.data` pipeline.

`--data` is the embedded demo (None), a folder of NIfTI cases or TFRecord shards
(`liverzoo.data.tfrecord`). Demo and NIfTI cases are preprocessed once with the model's
preset into shards under the run's folder; k-fold splits are by case
(`liverzoo.data.splits`).
"""
import dataclasses
import json
import os

from liverzoo.data import splits
from liverzoo.errors import ConfigError, DataError
from liverzoo.training.recipes import SPARSE_STRIDE


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where the training data comes from (checked before anything starts).

    Attributes:
        kind: "demo", "nifti" or "tfrecord".
        path: the folder / manifest / glob (None for the demo).
        case_ids: ids of all cases (train + validation).
        train_files, val_files: shard paths of ready TFRecords (kind "tfrecord", no folds).
        preset: the preset the shards were written with, as their manifest records it (name,
            window, inplane_size, ...; kind "tfrecord" only).
    """

    kind: str
    path: str
    case_ids: tuple
    train_files: tuple = ()
    val_files: tuple = ()
    preset: dict = None


def inspect_data(data):
    """Resolves `--data` without TensorFlow: demo, NIfTI folder or TFRecord shards.

    Raises:
        DataError: the path does not exist, holds no cases, or the shards are incomplete.
    """
    from liverzoo.data import tfrecord

    if data is None:
        from liverzoo.data import demo

        return DataSource("demo", None, tuple(demo.DEMO_SPLIT))
    data = str(data)
    is_shards = data.endswith(".json") or "*" in data or "?" in data or data.endswith((".tfrecord", ".gz"))
    if os.path.isdir(data) and os.path.isfile(os.path.join(data, tfrecord.MANIFEST_NAME)):
        is_shards = True
    if not is_shards:
        if not os.path.isdir(data):
            raise DataError(f"--data={data}: no such folder, TFRecord manifest or shard pattern")
        from liverzoo.data import io

        return DataSource("nifti", data, tuple(c.case_id for c in io.find_cases(data)))
    paths, manifest = tfrecord.shard_files(data, "all")
    if manifest is None:
        raise DataError(f"--data={data}: shards without a manifest.json beside them (the manifest gives the "
                        "train/validation split and the preprocessing)")
    split_of = {s["file"]: s["split"] for s in manifest["shards"]}
    train = tuple(p for p in paths if split_of.get(os.path.basename(p)) == "train")
    val = tuple(p for p in paths if split_of.get(os.path.basename(p)) == "val")
    if not train:
        raise DataError(f"--data={data}: no training shards")
    return DataSource("tfrecord", data, tuple(c["case_id"] for c in manifest["cases"]), train, val,
                      manifest.get("preset") or None)


def run_split(config, source):
    """The run's k-fold split `{case_id: "train" | "val"}`, or None with one fold (the data's own split)."""
    if config.num_folds <= 1:
        return None
    return splits.split_cases(source.case_ids, seed=config.seed, num_folds=config.num_folds, fold=config.fold)


def shard_preset(config, requested, source):
    """The config with the preset TFRecord shards were written with (their manifest's), so that
    config.json, and from it `tools/predict.py` and the exporter, preprocess new CT as the
    model was trained; the config unchanged for other data.

    Args:
        config: the resolved config.
        requested: `--preset` as the user gave it (None: not given).
        source: the `DataSource`.

    Raises:
        ConfigError: `--preset` names another preset than the shards' (their intensities were
            fixed when they were written).
    """
    if source.kind != "tfrecord" or not (source.preset or {}).get("name"):
        return config
    written = source.preset["name"]
    if requested is not None and requested != written:
        raise ConfigError(f"--preset={requested} with TFRecord shards written with preset {written!r} "
                          f"({source.path}): their intensities were fixed when they were written; leave out "
                          "--preset or use tools/make_tfrecords.py --preset")
    return dataclasses.replace(config, preset=written)


def data_plane(config, source):
    """`(inplane_size, inplane_spacing)` the slices of this run are drawn on (None, None: the preset's plane).

    The demo draws every patient at `config.inplane_spacing` mm a pixel (its scans' fields of
    view range from a 128 mm liver crop to 500 mm); with `--inplane_spacing=0` it stretches
    every slice to the model's input size, as before. TFRecord shards give their manifest's
    plane: an `--inplane_size`, or the square in-plane part of `--target_spacing`. `config.json`
    records both, so that `tools/predict.py` segments new CT on the plane the model was trained on.

    Raises:
        ConfigError: `--inplane_spacing` with TFRecord shards (their plane was fixed when they
            were written: `tools/make_tfrecords.py --target_spacing`).
    """
    if source.kind == "tfrecord":
        if config.inplane_spacing:
            raise ConfigError(f"--inplane_spacing with TFRecord shards ({source.path}): their plane was fixed "
                              "when they were written; use tools/make_tfrecords.py --target_spacing")
        if not source.preset:
            return None, None
        # The manifest's plane: its --inplane_size or the preset's; None there kept the slices (0).
        size = source.preset.get("inplane_size")
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size, None
        return 0, _shard_inplane_spacing(source.preset)
    if config.inplane_spacing:
        return 0, float(config.inplane_spacing)
    if source.kind != "demo":
        return None, None
    height, width = config.layout.plane(config.input_shape)
    return (height if height == width else None), None


def _shard_inplane_spacing(preset):
    """The square in-plane spacing shards were resampled to (`make_tfrecords --target_spacing=s,s,`),
    so that predict draws new CT on the same plane; None for shards that kept each scan's plane."""
    target = preset.get("target_spacing") or (None, None)
    x, y = target[0], target[1]
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x > 0 and abs(x - y) <= 1e-6 * x:
        return float(x)
    return None


def prepare_data(config, source, work_dir, log=print):
    """Shards for training and validation: `(train_files, val_files)`.

    Demo and NIfTI cases are preprocessed once with the model's preset into
    `work_dir/data/...` (reused on restart). TFRecord shards are used as they are, or
    regrouped by case for k-fold.
    """
    from liverzoo.data import tfrecord

    split = run_split(config, source)
    if source.kind == "tfrecord":
        if split is None:
            return list(source.train_files), list(source.val_files)
        out_dir = os.path.join(work_dir, "data", f"fold{config.fold}of{config.num_folds}")
        files = splits.regroup_shards(source.path, split, out_dir)
        return [files["train"]], [files["val"]]

    out_dir = _prepared_dir(config, source, work_dir, split)
    inplane, spacing = data_plane(config, source)
    if not os.path.isfile(os.path.join(out_dir, tfrecord.MANIFEST_NAME)):
        if source.kind == "demo":
            from liverzoo.data import demo

            split = split or dict(demo.DEMO_SPLIT)
            demo.check_patient_split(split, "the demo split")
            cases, shards = demo.demo_cases(), 2
        else:
            from liverzoo.data import io

            cases, shards = io.find_cases(source.path), 8
        log(f"preprocessing {len(cases)} cases with preset {config.preset!r} into {out_dir}")
        tfrecord.write_dataset(cases, out_dir, preset=config.preset, split=split, seed=config.seed,
                               num_shards=shards, inplane_size=inplane,
                               target_spacing=None if spacing is None else (spacing, spacing, None))
    train, _ = tfrecord.shard_files(out_dir, "train")
    try:
        val, _ = tfrecord.shard_files(out_dir, "val")
    except DataError:
        val = []
    return train, val


def _prepared_dir(config, source, work_dir, split):
    """Where demo / NIfTI cases are preprocessed into shards for this run."""
    inplane, spacing = data_plane(config, source)
    plane = f"{spacing:g}mm" if spacing else (inplane or "preset")
    tag = f"{config.preset}-{plane}" + (f"-fold{config.fold}of{config.num_folds}" if split else "")
    return os.path.join(work_dir, "data", tag)


def validation_cases(config, source, work_dir):
    """The validation cases as raw CT on their own grids, for whole-volume validation through
    `liverzoo.inference.segment` (the path `tools/predict.py` takes): a list of zero-argument
    loaders returning labelled `CTVolume`s, read one at a time. None for TFRecord data, whose
    validation shards hold only the preprocessed volumes.

    Call after `prepare_data` (the NIfTI split is the one its manifest records).
    """
    if source.kind == "tfrecord":
        return None
    from liverzoo.data import io, tfrecord

    split = run_split(config, source)
    manifest = os.path.join(_prepared_dir(config, source, work_dir, split), tfrecord.MANIFEST_NAME)
    with open(manifest) as f:
        val_ids = set(json.load(f)["splits"].get("val", []))
    if source.kind == "demo":
        from liverzoo.data import demo

        return [lambda name=name: demo.load_demo_volume(name) for name in demo.DEMO_SPLIT if name in val_ids]

    def load(case):
        volume = io.load_case(case.image, case.label)
        volume.case_id = case.case_id
        return volume

    return [lambda case=case: load(case) for case in io.find_cases(source.path) if case.case_id in val_ids]


def training_dataset(config, sampling, train_files, num_outputs, seed, multi_worker=False):
    """The `tf.data` pipeline of one stage: global batches, labels repeated per output."""
    import tensorflow as tf

    from liverzoo.data import augment as augment_lib
    from liverzoo.data import tfrecord

    augment = augment_lib.make_augment(**config.augmentation) if config.augmentation else None
    layout, shape = config.layout, config.input_shape
    ds = tfrecord.make_dataset(
        list(train_files), mode="volume" if layout.is_volume else sampling,
        stack_size=1 if layout.is_volume else layout.stack(shape), sparse_stride=SPARSE_STRIDE,
        patch_shape=layout.patch(shape), batch_size=config.batch_size, shuffle=True, repeat=True,
        foreground_fraction=config.foreground_fraction, augment=augment, seed=seed, split="all")
    if num_outputs > 1:
        ds = ds.map(lambda x, y: (x, (y,) * num_outputs))
    if multi_worker:
        # Every worker reads the same seeded sequence and keeps its share of the elements.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds
