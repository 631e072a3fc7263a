"""Training library behind `tools/train.py`: per-paper recipes, tf.distribute, resumable runs.

`train(TrainConfig(model="residual_unet"))` resolves the model's recipe (the `RECIPES`
table below; every field can be overridden), checks every option and the data before
anything starts, then trains with Keras `Model.fit` under a real `tf.distribute` strategy:

- data: the embedded demo cases (default), a folder of NIfTI cases or TFRecord shards
  (`liverzoo.data.tfrecord`); cases are preprocessed once into shards under `model_dir`;
- sampling per stage: 2.5D `dense` / `sparse` / `dense_sparse` stacks or 3D sub-volumes;
  DSD (paper 000) is a `dense_sparse` stage followed by a `dense` stage;
- validation after each epoch on whole validation volumes (`liverzoo.inference`), Dice per
  case for liver and tumor, averaged over cases;
- `model_dir`: `config.json` (the resolved config), `backup/` (`BackupAndRestore`: a run
  killed and started again with the same command resumes at its last finished epoch with
  its optimizer state), `best.keras` (by validation tumor Dice, then liver), `last.keras`,
  `history.csv`, `validation.jsonl` and TensorBoard logs in `logs/` (scalars and image
  overlays of a validation slice).

Example:
    >>> from liverzoo import train_lib
    >>> result = train_lib.train(train_lib.TrainConfig(model="residual_unet", model_dir="runs/demo"))  # doctest: +SKIP
    >>> result["best"]["tumor_dice"]  # doctest: +SKIP
"""
import contextlib
import dataclasses
import json
import math
import os
import time

import keras
import numpy as np

from liverzoo.errors import ConfigError, DataError

# --- Recipes ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The training set-up of one paper (see `RECIPES`).

    Attributes:
        paper: file in ../shared/papers.
        optimizer: "adam" or "sgd" (SGD: Nesterov momentum 0.99, as nnU-Net).
        learning_rate: initial learning rate.
        schedule: name in `liverzoo.schedules.SCHEDULES`.
        loss: name in `liverzoo.losses.LOSSES`.
        class_weights: weights of "weighted_ce" (background, liver, tumor), else None.
        aux_weights: deep-supervision weights rule: "lv_net" (0.2, 0.4, 0.6, 0.8), "halving"
            (nnU-Net: 1/2, 1/4, ... from fine to coarse) or None.
        weight_decay: L2 coefficient lambda of LV-Net Eq. 3 (0 for none).
        sampling: "dense", "sparse" or "dense_sparse" for 2D models; "volume" for 3D.
        dsd: Dense-Sparse then Dense training (paper 000).
        batch_size: the paper's batch size.
        epochs: the paper's number of epochs (of `PAPER_STEPS_PER_EPOCH` steps).
        patch: the paper's training input `(H, W)` (2D) or `(D, H, W)` (3D).
        augment: `liverzoo.data.augment.AugmentConfig` fields.
        recompute: gradient checkpointing (LW-HCN's paper uses it to reach batch 6).
    """

    paper: str
    optimizer: str
    learning_rate: float
    schedule: str
    loss: str
    class_weights: tuple
    aux_weights: str
    weight_decay: float
    sampling: str
    dsd: bool
    batch_size: int
    epochs: int
    patch: tuple
    augment: dict
    recompute: bool


# nnU-Net's 2D augmentation (rotation, scaling 0.7-1.4, mirroring, brightness/contrast, noise),
# which the DS nnU-Net paper inherits by "following the settings in nnU-Net".
_NNUNET_AUGMENT = dict(rotation=180, zoom=0.3, flip_axes=("h", "w"), intensity_scale=0.25, noise_std=0.05)

# One row per paper; `recipe_for(model)` picks the row of the model's paper (SPECS[model].paper).
# Where a paper does not state a value the comment says so and what is used instead.
RECIPES = {
    # 000 DS nnU-Net (and 2D nnU-Net): Dice + CE "following nnU-Net" (SGD 0.01, Nesterov 0.99,
    # poly 0.9, deep supervision 1/2^i, batch 12 are nnU-Net's); T = 7; DSD 400 + 600 epochs.
    "ds_nnunet": Recipe("000_ebe0050d52f538d0.txt", "sgd", 1e-2, "poly", "dice_ce", None, "halving", 0.0,
                        "dense_sparse", True, 12, 1000, (512, 512), _NNUNET_AUGMENT, False),
    # 001 LW-HCN: Adam 1e-3, poly 0.9, Eq. 8 Dice + CE, 12x256x256 sub-volumes, batch 6 with
    # gradient checkpointing; no augmentation and no epoch count stated (24 h on a P100).
    "lw_hcn": Recipe("001_bb2d5e6c0ac559d5.txt", "adam", 1e-3, "poly", "dice_ce", None, None, 0.0,
                     "volume", False, 6, 100, (12, 256, 256), {}, True),
    # 002 residual U-Net: Adam 1e-3 (0.9, 0.999), weighted CE (weights not stated: ours),
    # rotations up to 180 degrees, elastic deformation, zoom 0.2; 100,000 iterations of batch 16.
    "residual_unet": Recipe("002_7138868b57b69ed8.txt", "adam", 1e-3, "constant", "weighted_ce", (1.0, 3.0, 10.0),
                            None, 0.0, "dense", False, 16, 400, (256, 256),
                            dict(rotation=180, zoom=0.2, elastic=0.02), False),
    # 003 3DYNet (and its 3D U-Net / V-Net baselines): soft Dice + CE, Adam 1e-4 with cosine
    # annealing per batch, batch 1, 500 epochs, 256x256x64 volumes; flips, shifts, scaling.
    "ynet3d": Recipe("003_1722e7be9c09b159.txt", "adam", 1e-4, "cosine", "dice_ce", None, None, 0.0,
                     "volume", False, 1, 500, (64, 256, 256),
                     dict(flip_axes=("d", "h", "w"), shift=0.1, zoom=0.1), False),
    # 004 LV-Net: CE with deep supervision 0.2, 0.4, 0.6, 0.8 (Eq. 3), Adam 1e-3 x 0.9 per
    # epoch, weight decay 1e-5, batch 4, 16 slices of 256x256; best model after ~20 epochs.
    "lv_net": Recipe("004_e35520e2e41b14d6.txt", "adam", 1e-3, "exponential", "ce", None, "lv_net", 1e-5,
                     "volume", False, 4, 20, (16, 256, 256), {}, False),
}
#: Steps per epoch when the data is not the demo and --steps_per_epoch is not given (nnU-Net's).
PAPER_STEPS_PER_EPOCH = 250
#: The DS (dense-sparse) stage's share of the epochs in DSD training (paper 000: 400 of 1000).
DSD_DENSE_SPARSE_SHARE = 0.4
#: Sparse stack stride (paper 000: s = 2).
SPARSE_STRIDE = 2

# The embedded demo: 4 small cases; these defaults make `tools/train.py --model=residual_unet`
# finish in minutes on a 2-core CPU (docs/training.md has the measured run).
DEMO_EPOCHS = 6
DEMO_STEPS_PER_EPOCH = 40
DEMO_BATCH_SIZE = {"2d": 8, "3d": 2}

SAMPLINGS = ("dense", "sparse", "dense_sparse")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def recipe_for(model):
    """`(recipe name, Recipe)` of a zoo model, found through the paper it follows."""
    from liverzoo import models

    if model not in models.MODELS:
        raise ConfigError(f"--model={model!r} is not a zoo model; valid names: {', '.join(sorted(models.MODELS))}")
    paper = models.SPECS[model].paper
    for name, recipe in RECIPES.items():
        if recipe.paper == paper:
            return name, recipe
    raise ConfigError(f"no training recipe for paper {paper} of model {model!r}")


# --- Configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run; None means "the recipe's (or the demo's) default".

    Attributes:
        model: zoo model name (`liverzoo.models.MODELS`).
        model_kwargs: extra keyword arguments of the model's builder (e.g. a smaller
            `base_filters`); the paper's architecture when empty.
        data: None (embedded demo data), a folder of NIfTI cases (LiTS or Decathlon layout),
            or TFRecord shards: a folder with manifest.json, the manifest, or a glob.
        model_dir: where checkpoints, logs and the resolved config go (default runs/MODEL).
        epochs, steps_per_epoch: training length.
        batch_size: global batch size (split over the replicas).
        learning_rate, schedule, optimizer, loss, class_weights, weight_decay: see `Recipe`.
        sampling: 2D stack sampling "dense", "sparse" or "dense_sparse".
        dsd: Dense-Sparse then Dense training (2D models).
        dsd_epochs: `(dense_sparse_epochs, dense_epochs)`; default a 40/60 split of `epochs`.
        input_shape: the model's input without batch axis; for the demo the model's
            default shape, else the paper's patch with the model's T.
        augment: on-the-fly augmentation from the recipe.
        foreground_fraction: share of samples centred on liver or tumor.
        strategy: "auto", "one_device", "mirrored" or "multi_worker" (from TF_CONFIG).
        mixed_precision: mixed_float16 compute, float32 softmax outputs and loss.
        recompute: gradient checkpointing (see `RecomputeModel`).
        num_folds, fold: case-level k-fold cross-validation (num_folds 1: the data's own split).
        seed: seeds weights, sampling, augmentation and fold assignment.
        val_every: validate every this many epochs (and always after the last).
        precise_bn_batches: before each validation, BatchNorm moving statistics are
            recomputed as the average over this many training batches (Precise BN, Wu &
            Johnson 2021); 0 keeps Keras' running averages.
        verbose: Keras progress bar (1), one line per epoch (2) or silent (0).
    """

    model: str
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    data: str = None
    model_dir: str = None
    epochs: int = None
    steps_per_epoch: int = None
    batch_size: int = None
    learning_rate: float = None
    schedule: str = None
    optimizer: str = None
    loss: str = None
    class_weights: tuple = None
    weight_decay: float = None
    sampling: str = None
    dsd: bool = None
    dsd_epochs: tuple = None
    input_shape: tuple = None
    augment: bool = True
    foreground_fraction: float = 0.5
    strategy: str = "auto"
    mixed_precision: bool = False
    recompute: bool = None
    num_folds: int = 1
    fold: int = 0
    seed: int = 0
    val_every: int = 1
    precise_bn_batches: int = 16
    verbose: int = 1
    # Filled by `resolve`:
    recipe: str = None
    kind: str = None
    preset: str = None
    deep_supervision: str = None

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"


def _positive(value, flag, kind=int):
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"--{flag} must be a positive {kind.__name__}, got {value!r}")
    if kind is int and int(value) != value:
        raise ConfigError(f"--{flag} must be a positive integer, got {value!r}")
    return kind(value)


def _check_choice(value, choices, flag):
    if value not in choices:
        raise ConfigError(f"--{flag}={value!r} is not one of {', '.join(choices)}")
    return value


def _builder_parameters(model):
    import inspect

    from liverzoo import models

    return inspect.signature(models.MODELS[model]).parameters


def _check_model_kwargs(model, model_kwargs):
    if not isinstance(model_kwargs, dict):
        raise ConfigError(f"--model_kwargs must be a JSON object, got {model_kwargs!r}")
    reserved = {"input_shape", "deep_supervision"} & set(model_kwargs)
    if reserved:
        raise ConfigError(f"--model_kwargs cannot set {', '.join(sorted(reserved))} (use --input_shape; deep "
                          "supervision follows the recipe)")
    unknown = sorted(set(model_kwargs) - set(_builder_parameters(model)))
    if unknown:
        raise ConfigError(f"--model_kwargs: {model} has no argument {', '.join(unknown)}")


def _input_shape(config, spec, recipe, demo):
    if config.input_shape is not None:
        shape = tuple(int(d) for d in config.input_shape)
    elif demo:
        shape = tuple(spec.default_input_shape)
    elif spec.kind == "2d":
        shape = tuple(recipe.patch[-2:]) + (spec.default_input_shape[-1],)
    else:
        shape = tuple(recipe.patch) + (1,)
    want = 3 if spec.kind == "2d" else 4
    if len(shape) != want or min(shape) < 1:
        layout = "H,W,T" if spec.kind == "2d" else "D,H,W,1"
        raise ConfigError(f"--input_shape for {spec.kind} model {config.model} must be {want} positive sizes "
                          f"({layout}), got {shape}")
    if spec.kind == "3d" and shape[-1] != 1:
        raise ConfigError(f"--input_shape of a 3d model ends with 1 channel, got {shape}")
    if spec.kind == "2d" and shape[-1] % 2 == 0:
        raise ConfigError(f"--input_shape: the stack size T of a 2.5D model must be odd, got {shape[-1]}")
    return shape


def _dsd_epochs(config, epochs, dsd):
    if not dsd:
        if config.dsd_epochs is not None:
            raise ConfigError("--dsd_epochs needs --dsd")
        return None, epochs
    if config.dsd_epochs is None:
        if epochs < 2:
            raise ConfigError(f"--dsd needs at least 2 epochs, got --epochs={epochs}")
        first = min(max(int(round(DSD_DENSE_SPARSE_SHARE * epochs)), 1), epochs - 1)
        return (first, epochs - first), epochs
    stages = tuple(int(e) for e in config.dsd_epochs)
    if len(stages) != 2 or min(stages) < 1:
        raise ConfigError(f"--dsd_epochs must be two positive epoch counts (dense_sparse,dense), "
                          f"got {config.dsd_epochs}")
    if config.epochs is not None and sum(stages) != config.epochs:
        raise ConfigError(f"--dsd_epochs {stages[0]}+{stages[1]} do not add up to --epochs={config.epochs}")
    return stages, sum(stages)


def resolve(config):
    """Fills every None of `config` from the model's recipe and checks all values.

    Args:
        config: a `TrainConfig`.

    Returns:
        A complete `TrainConfig`.

    Raises:
        ConfigError: an unknown model or any bad value; the message names the flag.

    Example:
        >>> resolve(TrainConfig(model="lv_net")).schedule  # doctest: +SKIP
        'exponential'
    """
    from liverzoo import losses, models, schedules
    from liverzoo.data import augment

    recipe_name, recipe = recipe_for(config.model)
    spec = models.SPECS[config.model]
    _check_model_kwargs(config.model, config.model_kwargs)
    demo = config.data is None
    input_shape = _input_shape(config, spec, recipe, demo)

    def given_or(flag, default, kind=int):
        value = getattr(config, flag)
        return default if value is None else _positive(value, flag, kind)

    epochs = given_or("epochs", DEMO_EPOCHS if demo else recipe.epochs)
    steps = given_or("steps_per_epoch", DEMO_STEPS_PER_EPOCH if demo else PAPER_STEPS_PER_EPOCH)
    batch = given_or("batch_size", DEMO_BATCH_SIZE[spec.kind] if demo else recipe.batch_size)
    lr = given_or("learning_rate", recipe.learning_rate, float)
    schedule = _check_choice(config.schedule or recipe.schedule, schedules.SCHEDULES, "schedule")
    optimizer = _check_choice(config.optimizer or recipe.optimizer, ("adam", "sgd"), "optimizer")
    loss = _check_choice(config.loss or recipe.loss, tuple(losses.LOSSES), "loss")
    class_weights = config.class_weights if config.class_weights is not None else recipe.class_weights
    if class_weights is not None:
        class_weights = tuple(float(w) for w in class_weights)
    if loss == "weighted_ce":
        losses.get(loss, class_weights=class_weights)  # validates the weights
        num_classes = config.model_kwargs.get("num_classes", _builder_parameters(config.model)["num_classes"].default)
        if len(class_weights) != num_classes:
            raise ConfigError(f"--class_weights has {len(class_weights)} entries but {config.model} predicts "
                              f"{num_classes} classes")
    weight_decay = recipe.weight_decay if config.weight_decay is None else float(config.weight_decay)
    if weight_decay < 0:
        raise ConfigError(f"--weight_decay must be >= 0, got {weight_decay}")

    if spec.kind == "3d":
        if config.sampling not in (None, "volume"):
            raise ConfigError(f"--sampling={config.sampling} is for 2.5D models; {config.model} is 3D (sub-volumes)")
        if config.dsd:
            raise ConfigError(f"--dsd is for 2.5D models; {config.model} is 3D")
        sampling, dsd = "volume", False
    else:
        default_sampling = recipe.sampling if recipe.sampling != "volume" else "dense"
        sampling = _check_choice(config.sampling or default_sampling, SAMPLINGS, "sampling")
        dsd = recipe.dsd if config.dsd is None else bool(config.dsd)
        if dsd and config.sampling not in (None, "dense_sparse"):
            raise ConfigError("--dsd trains with dense_sparse then dense stacks; leave --sampling unset")
    dsd_epochs, epochs = _dsd_epochs(config, epochs, dsd)
    if dsd:
        sampling = "dense_sparse"

    ff = config.foreground_fraction
    if not isinstance(ff, (int, float)) or not 0.0 <= ff <= 1.0:
        raise ConfigError(f"--foreground_fraction must be in [0, 1], got {ff!r}")
    _check_choice(config.strategy, STRATEGIES, "strategy")
    num_folds = _positive(config.num_folds, "num_folds")
    if not isinstance(config.fold, int) or not 0 <= config.fold < num_folds:
        raise ConfigError(f"--fold must be in [0, {num_folds - 1}] with --num_folds={num_folds}, got {config.fold!r}")
    if not isinstance(config.seed, int) or config.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {config.seed!r}")
    _positive(config.val_every, "val_every")
    if not isinstance(config.precise_bn_batches, int) or config.precise_bn_batches < 0:
        raise ConfigError(f"--precise_bn_batches must be a non-negative integer, got {config.precise_bn_batches!r}")
    if config.verbose not in (0, 1, 2):
        raise ConfigError(f"--verbose must be 0, 1 or 2, got {config.verbose!r}")
    if config.augment and recipe.augment:
        augment.AugmentConfig(**recipe.augment)  # validates
    recompute = recipe.recompute if config.recompute is None else bool(config.recompute)
    model_dir = config.model_dir or os.path.join("runs", config.model)

    return dataclasses.replace(
        config, model_dir=str(model_dir), epochs=epochs, steps_per_epoch=steps, batch_size=batch, learning_rate=lr,
        schedule=schedule, optimizer=optimizer, loss=loss, class_weights=class_weights, weight_decay=weight_decay,
        sampling=sampling, dsd=dsd, dsd_epochs=dsd_epochs, input_shape=input_shape, foreground_fraction=float(ff),
        recompute=recompute, recipe=recipe_name, kind=spec.kind, preset=spec.preset,
        deep_supervision=recipe.aux_weights)


@dataclasses.dataclass(frozen=True)
class Stage:
    """Epochs `[start, end)` trained with one sampling mode."""

    sampling: str
    start: int
    end: int


def stage_plan(config):
    """The sampling stages of a resolved config: one stage, or DSD's two.

    Example:
        >>> stage_plan(resolve(TrainConfig(model="ds_nnunet", epochs=10)))  # doctest: +SKIP
        [Stage(sampling='dense_sparse', start=0, end=4), Stage(sampling='dense', start=4, end=10)]
    """
    if config.dsd:
        first, _ = config.dsd_epochs
        return [Stage("dense_sparse", 0, first), Stage("dense", first, config.epochs)]
    return [Stage(config.sampling, 0, config.epochs)]


# --- Data ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Where the training data comes from (checked before anything starts).

    Attributes:
        kind: "demo", "nifti" or "tfrecord".
        path: the folder / manifest / glob (None for the demo).
        case_ids: ids of all cases (train + validation).
        train_files, val_files: shard paths of ready TFRecords (kind "tfrecord", no folds).
    """

    kind: str
    path: str
    case_ids: tuple
    train_files: tuple = ()
    val_files: tuple = ()


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
    return DataSource("tfrecord", data, tuple(c["case_id"] for c in manifest["cases"]), train, val)


def fold_split(case_ids, num_folds, fold, seed):
    """Case-level k-fold: `{case_id: "train" | "val"}` with fold `fold` as validation.

    The sorted ids are permuted with `seed` and dealt round-robin into `num_folds` folds, so
    fold sizes differ by at most one and every case validates in exactly one fold.

    Raises:
        ConfigError: fewer cases than folds.

    Example:
        >>> fold_split(["a", "b", "c", "d"], 2, 0, seed=0)  # doctest: +SKIP
        {'a': 'val', 'b': 'train', 'c': 'train', 'd': 'val'}
    """
    ids = sorted(case_ids)
    if len(ids) < num_folds:
        raise ConfigError(f"--num_folds={num_folds} needs at least {num_folds} cases, the data has {len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))
    return {ids[i]: ("val" if k % num_folds == fold else "train") for k, i in enumerate(order)}


def _write_folds(source, split, out_dir):
    """Regroups existing shards' records by case into train/val shards of one fold."""
    import tensorflow as tf

    from liverzoo.data import tfrecord

    os.makedirs(out_dir, exist_ok=True)
    files = {s: os.path.join(out_dir, f"{s}.tfrecord.gz") for s in ("train", "val")}
    if all(os.path.isfile(f) for f in files.values()):
        return files
    paths, _ = tfrecord.shard_files(source.path, "all")
    decode = tf.function(tfrecord.Decoder().decode)
    temps = {s: f"{f}.tmp-{os.getpid()}" for s, f in files.items()}
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    writers = {s: tf.io.TFRecordWriter(t, options) for s, t in temps.items()}
    try:
        for path in paths:
            for record in tf.data.TFRecordDataset(path, compression_type="GZIP" if path.endswith(".gz") else ""):
                writers[split[decode(record)["case_id"].numpy().decode()]].write(record.numpy())
    finally:
        for writer in writers.values():
            writer.close()
    for s in files:
        os.replace(temps[s], files[s])
    return files


def data_inplane_size(config, source):
    """In-plane size the slices are resized to for this run: None means the preset's plane.

    The demo works at the model's input size (every slice of the 128^3 crop is one whole
    input). `config.json` records it, so that `tools/predict.py` segments new CT on the
    plane the model was trained on.
    """
    if source.kind != "demo":
        return None
    height, width = config.input_shape[-3:-1] if config.kind == "2d" else config.input_shape[1:3]
    return height if height == width else None


def prepare_data(config, source, work_dir, log=print):
    """Shards for training and validation: `(train_files, val_files)`.

    Demo and NIfTI cases are preprocessed once with the model's preset into
    `work_dir/data/...` (reused on restart). TFRecord shards are used as they are, or
    regrouped by case for k-fold.
    """
    from liverzoo.data import tfrecord

    split = None
    if config.num_folds > 1:
        split = fold_split(source.case_ids, config.num_folds, config.fold, config.seed)
    if source.kind == "tfrecord":
        if split is None:
            return list(source.train_files), list(source.val_files)
        files = _write_folds(source, split, os.path.join(work_dir, "data", f"fold{config.fold}of{config.num_folds}"))
        return [files["train"]], [files["val"]]

    inplane = data_inplane_size(config, source)
    tag = f"{config.preset}-{inplane or 'preset'}" + (f"-fold{config.fold}of{config.num_folds}" if split else "")
    out_dir = os.path.join(work_dir, "data", tag)
    if not os.path.isfile(os.path.join(out_dir, tfrecord.MANIFEST_NAME)):
        if source.kind == "demo":
            from liverzoo.data import demo

            cases, split, shards = demo.demo_cases(), split or dict(demo.DEMO_SPLIT), 2
        else:
            from liverzoo.data import io

            cases, shards = io.find_cases(source.path), 8
        log(f"preprocessing {len(cases)} cases with preset {config.preset!r} into {out_dir}")
        tfrecord.write_dataset(cases, out_dir, preset=config.preset, split=split, seed=config.seed,
                               num_shards=shards, inplane_size=inplane)
    train, _ = tfrecord.shard_files(out_dir, "train")
    try:
        val, _ = tfrecord.shard_files(out_dir, "val")
    except DataError:
        val = []
    return train, val


def _patch_shape(config):
    return tuple(config.input_shape[:2]) if config.kind == "2d" else tuple(config.input_shape[:3])


def training_dataset(config, sampling, train_files, num_outputs, seed, multi_worker=False):
    """The `tf.data` pipeline of one stage: global batches, labels repeated per output."""
    import tensorflow as tf

    from liverzoo.data import augment as augment_lib
    from liverzoo.data import tfrecord

    _, recipe = recipe_for(config.model)
    augment = augment_lib.make_augment(**recipe.augment) if (config.augment and recipe.augment) else None
    mode = "volume" if config.kind == "3d" else sampling
    ds = tfrecord.make_dataset(
        list(train_files), mode=mode, stack_size=config.input_shape[-1] if config.kind == "2d" else 1,
        sparse_stride=SPARSE_STRIDE, patch_shape=_patch_shape(config), batch_size=config.batch_size,
        shuffle=True, repeat=True, foreground_fraction=config.foreground_fraction, augment=augment, seed=seed,
        split="all")
    if num_outputs > 1:
        ds = ds.map(lambda x, y: (x, (y,) * num_outputs))
    if multi_worker:
        # Every worker reads the same seeded sequence and keeps its share of the elements.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds


# --- Strategy, model, optimizer ----------------------------------------------------------------


def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        tf_config = json.loads(raw)
        tf_config["cluster"], tf_config["task"]["type"], tf_config["task"]["index"]  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError):
        raise ConfigError("TF_CONFIG is not valid JSON with 'cluster' and 'task' {'type', 'index'}") from None
    return tf_config


def check_strategy(name):
    """Checks `--strategy` against the environment (no TensorFlow). Returns the TF_CONFIG dict."""
    _check_choice(name, STRATEGIES, "strategy")
    tf_config = _tf_config()
    if name == "multi_worker" and tf_config is None:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable (docs/training.md)")
    return tf_config


def make_strategy(name, tf_config=None):
    """The `tf.distribute` strategy for `--strategy`.

    "auto": MultiWorkerMirroredStrategy when TF_CONFIG names several tasks, MirroredStrategy
    over all GPUs when there are several, else one device (the GPU if any).
    "mirrored" uses all GPUs, or all logical CPU devices where there is no GPU.

    Example:
        >>> strategy = make_strategy("one_device")  # doctest: +SKIP
    """
    import tensorflow as tf

    if name == "auto":
        workers = sum(len(v) for v in (tf_config or {}).get("cluster", {}).values())
        if workers > 1:
            name = "multi_worker"
        else:
            name = "mirrored" if len(tf.config.list_logical_devices("GPU")) > 1 else "one_device"
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])


def _strategy_name(strategy):
    import tensorflow as tf

    # MultiWorkerMirroredStrategy's class is called CollectiveAllReduceStrategy.
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def is_chief(strategy):
    """True on the process that writes shared files (always, except non-chief workers)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def _worker_dir(model_dir, strategy):
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, "workers", f"{resolver.task_type}-{resolver.task_id}")


class RecomputeModel(keras.Model):
    """Gradient checkpointing for a functional model: `tf.recompute_grad` around segments.

    The model's layers (in topological order) are cut into about sqrt(n) contiguous
    segments. In training, every segment runs under `tf.recompute_grad`: only the tensors
    crossing segment boundaries are kept for the backward pass, and each segment's inner
    activations are recomputed when its gradients are needed (Chen et al. 2016, which
    LW-HCN, 001_bb2d5e6c0ac559d5.txt, uses to reach batch 6). Inference runs the layers
    plainly. The segments replay the functional graph's own nodes (each layer with the
    arguments it was built with), so `inner` is left untouched and saves as usual.

    `keras.RematScope` was the first choice but its per-layer wrapping fails in graph mode on
    layers called with keyword arguments (BatchNormalization's `training`).
    Caveat: the recomputed forward pass updates BatchNormalization moving statistics a
    second time with the same batch statistics (momentum m acts like m^2).

    Save `model.inner` (the original functional model), not this wrapper.

    Args:
        inner: a functional `keras.Model` whose layers are each called once.
        num_segments: segments to cut (default: ceil(sqrt(number of layers))).

    Example:
        >>> wrapped = RecomputeModel(models.build("lw_hcn"))  # doctest: +SKIP
        >>> wrapped.compile(optimizer="adam", loss=losses.get("dice_ce"))  # doctest: +SKIP
    """

    def __init__(self, inner, num_segments=None, **kwargs):
        super().__init__(name=f"{inner.name}_recompute", **kwargs)
        self.inner = inner
        layers = [layer for layer in inner.layers if not isinstance(layer, keras.layers.InputLayer)]
        # Keras 3 functional graphs: each call of a layer is a Node holding its arguments.
        nodes = []
        for layer in layers:
            if len(layer._inbound_nodes) != 1:
                raise ConfigError(f"--recompute: layer {layer.name} of {inner.name} is called more than once")
            nodes.append(layer._inbound_nodes[0])
        num_segments = num_segments or max(1, math.ceil(math.sqrt(len(nodes))))
        per = math.ceil(len(nodes) / num_segments)
        chunks = [nodes[i : i + per] for i in range(0, len(nodes), per)]
        made_in = {id(t): j for j, chunk in enumerate(chunks) for node in chunk for t in node.outputs}
        used_in = {}
        for j, chunk in enumerate(chunks):
            for node in chunk:
                for t in node.input_tensors:
                    used_in.setdefault(id(t), set()).add(j)
        outputs = {id(t) for t in inner.outputs}
        segments = []
        for j, chunk in enumerate(chunks):
            needed = list({id(t): id(t) for node in chunk for t in node.input_tensors if made_in.get(id(t), -1) < j})
            produced = [id(t) for node in chunk for t in node.outputs
                        if id(t) in outputs or any(k > j for k in used_in.get(id(t), ()))]
            segments.append((needed, produced, chunk))
        # Keras must not track these (they hold inner's layers): a plain holder object.
        self._segments = _Untracked(segments)

    @staticmethod
    def _run(chunk, values, training):
        import inspect

        for node in chunk:
            args, kwargs = node.arguments.fill_in(values)
            # Explicit: the recomputation in the backward pass runs outside Keras' call context.
            if "training" in inspect.signature(node.operation.call).parameters and kwargs.get("training") is None:
                kwargs["training"] = training
            outs = node.operation(*args, **kwargs)
            for t, v in zip(node.outputs, keras.tree.flatten(outs)):
                values[id(t)] = v

    def call(self, inputs, training=None):
        import tensorflow as tf

        values = {id(self.inner.inputs[0]): inputs}
        for needed, produced, chunk in self._segments.value:
            if not training:
                self._run(chunk, values, training)
                continue

            def segment(*args, needed=needed, produced=produced, chunk=chunk):
                local = dict(zip(needed, args))
                self._run(chunk, local, True)
                return [local[i] for i in produced]

            outs = tf.recompute_grad(segment)(*[values[i] for i in needed])
            values.update(zip(produced, outs if isinstance(outs, (list, tuple)) else [outs]))
        outs = [values[id(t)] for t in self.inner.outputs]
        return outs if len(outs) > 1 else outs[0]


class _Untracked:
    def __init__(self, value):
        self.value = value


def batchnorm_layers(model):
    """Every BatchNormalization layer of `model`, nested models included."""
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        stack += getattr(layer, "layers", [])
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def synchronize_batchnorm(model):
    """Makes every BatchNormalization layer use the statistics of the global batch.

    Under N replicas each replica would otherwise normalise with the statistics of its own
    1/N of the batch, so training would differ from one device with the same global batch
    (and 3D models run with one or two volumes per GPU). Keras' `synchronized=True`
    all-reduces the moments across replicas. Returns the number of layers changed.
    """
    layers = [layer for layer in batchnorm_layers(model) if not layer.synchronized]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def build_model(config, replicas=1):
    """Builds (inside the current strategy scope) the model, its trainable wrapper and losses.

    With more than one replica, BatchNormalization is synchronized across replicas.

    Returns:
        `(inner, trainable, num_outputs)`: `inner` is the zoo model that gets saved;
        `trainable` is what is compiled and fitted (`RecomputeModel(inner)` with
        --recompute, else `inner`).
    """
    from liverzoo import models

    kwargs = dict(config.model_kwargs, input_shape=config.input_shape)
    if "deep_supervision" in _builder_parameters(config.model):
        kwargs["deep_supervision"] = config.deep_supervision is not None
    inner = models.build(config.model, **kwargs)
    num_outputs = len(inner.outputs)
    if replicas > 1:
        synchronize_batchnorm(inner)
    if config.weight_decay:
        # Eq. 3's lambda * ||W||^2 over all weights; Keras adds it to the loss once per step
        # (tests/test_distributed.py checks it is not counted per replica).
        for variable in inner.trainable_variables:
            variable.regularizer = keras.regularizers.L2(config.weight_decay)
    trainable = RecomputeModel(inner) if config.recompute else inner
    if trainable is not inner:
        trainable(keras.ops.zeros((1,) + tuple(config.input_shape)))  # builds the wrapper
    return inner, trainable, num_outputs


def compile_model(trainable, config, num_outputs):
    """Compiles with the resolved optimizer, schedule and (deep-supervision) loss."""
    from liverzoo import losses, schedules

    total_steps = config.epochs * config.steps_per_epoch
    lr = schedules.build(config.schedule, config.learning_rate, total_steps=total_steps,
                         steps_per_epoch=config.steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(lr, momentum=0.99, nesterov=True)
    else:
        optimizer = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.999)
    loss = losses.get(config.loss, class_weights=config.class_weights)
    loss_weights = None
    if num_outputs > 1:
        k = num_outputs - 1
        if config.deep_supervision == "lv_net":
            aux = losses.LV_NET_AUX_WEIGHTS
        else:  # nnU-Net: halve the weight at each coarser level
            aux = tuple(0.5 ** (i + 1) for i in range(k))
        loss, loss_weights = losses.deep_supervision(loss, num_outputs, aux)
    trainable.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, jit_compile=False)


# --- Validation ------------------------------------------------------------------------------


def recompute_batchnorm_statistics(model, batches, step=None):
    """Precise BN: sets BatchNorm moving statistics to their average over `batches`.

    Keras keeps exponential running averages (momentum 0.99, a window of ~100 steps), which
    lag behind the weights early in training or at a high learning rate; validation in
    inference mode then sees statistics of older weights. Here the model runs in training
    mode on each batch with momentum 0 (so each layer's moving statistics become that
    batch's), and the per-batch means and variances are averaged (Wu & Johnson,
    "Rethinking Batch in BatchNorm", 2021). Momenta are restored afterwards.

    Args:
        model: a Keras model.
        batches: iterable of input batches (or `(x, y)` pairs).
        step: optional `step(x)` running `model(x, training=True)` that was traced while the
            momenta were 0 (from `batchnorm_step`); default: eager calls.

    Returns:
        The number of batches used.

    Example:
        >>> recompute_batchnorm_statistics(model, dataset.take(8))  # doctest: +SKIP
    """
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    count = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if step is None:
                model(x, training=True)
            else:
                step(x)
            for total, layer in zip(sums, layers):
                total[0] += layer.moving_mean.numpy()
                total[1] += layer.moving_variance.numpy()
            count += 1
        if count:
            for (mean, variance), layer in zip(sums, layers):
                layer.moving_mean.assign(mean / count)
                layer.moving_variance.assign(variance / count)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return count


def batchnorm_step(model):
    """A traced `model(x, training=True)` with BatchNorm momenta 0, for Precise BN.

    Keras reads the momentum when the function is traced, so the graph keeps momentum 0
    whatever the layers' attribute is later; one trace serves the whole run.
    """
    import tensorflow as tf

    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]

    @tf.function(reduce_retracing=True)
    def step(x):
        model(x, training=True)

    def traced(x):
        for layer in layers:
            layer.momentum = 0.0
        try:
            step(x)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum

    return traced


def case_dice(probs, label):
    """Liver and tumor Dice of one whole case from class probabilities `(X, Y, Z, C)`.

    Liver is every voxel labelled liver or tumor (LiTS); an empty reference and empty
    prediction give 1.0 (`liverzoo.metrics.dice`).

    Returns:
        `(liver_dice, tumor_dice)`.
    """
    from liverzoo import metrics

    pred = np.argmax(probs, axis=-1)
    return metrics.dice(pred >= 1, label >= 1), metrics.dice(pred == 2, label == 2)


def _overlay(image, label):
    """RGB uint8 slice: grey CT with liver in green and tumor in red."""
    lo, hi = np.percentile(image, (1, 99))
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.stack([grey] * 3, axis=-1)
    rgb[label == 1] = 0.6 * rgb[label == 1] + 0.4 * np.array([0.0, 1.0, 0.0])
    rgb[label == 2] = 0.4 * rgb[label == 2] + 0.6 * np.array([1.0, 0.0, 0.0])
    return (rgb * 255).astype(np.uint8)


def _atomic_write_text(path, text):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` name in the same folder."""
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)[:-6]}.tmp-{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)


class ValidationCallback(keras.callbacks.Callback):
    """Whole-volume validation after each epoch; keeps best.keras and last.keras.

    Dice is computed per validation case on the whole volume (liverzoo.inference stitches
    the model's predictions), then averaged over cases; `val_liver_dice` and
    `val_tumor_dice` are added to the epoch logs (so TensorBoard and history.csv get them).

    Args:
        inner: the zoo model (saved as best/last).
        config: the resolved `TrainConfig`.
        val_files: validation shard paths (whole cases are read one at a time).
        work_dir: this process's folder: `model_dir` on the chief, else a worker folder.
        chief: whether this process writes the shared files.
        log: printing function.
        bn_batches: iterator of training batches for `recompute_batchnorm_statistics`
            (None: keep the running averages).
    """

    def __init__(self, inner, config, val_files, work_dir, chief, log=print, bn_batches=None):
        super().__init__()
        self.inner, self.config, self.val_files, self.chief, self.log = inner, config, list(val_files), chief, log
        self.bn_batches = bn_batches
        self.work_dir = work_dir
        self.best_path = os.path.join(work_dir, "best.json")
        self.best = None
        self.last_scores = None
        self.last_overlay = (None, None)
        self._predict = None
        self._bn_step = None

    def on_train_begin(self, logs=None):
        if os.path.isfile(self.best_path):
            with open(self.best_path) as f:
                self.best = json.load(f)

    def _predict_fn(self):
        import tensorflow as tf

        model = self.inner

        @tf.function(reduce_retracing=True)
        def predict(batch):
            out = model(batch, training=False)
            return out[0] if isinstance(out, (list, tuple)) else out

        return lambda batch: predict(tf.constant(batch, tf.float32)).numpy()

    def evaluate(self):
        """`{"cases": {id: {"liver_dice", "tumor_dice"}}, "liver_dice", "tumor_dice"}` (means)."""
        from liverzoo import inference
        from liverzoo.data import tfrecord

        # One traced function for the whole run (a new one per epoch would retrace).
        self._predict = self._predict or self._predict_fn()
        predict = self._predict
        cases, overlay = {}, None
        shape = tuple(self.config.input_shape)
        step = max(shape[0] // 2, 1) if self.config.kind == "3d" else 10
        tile = shape[:2] if self.config.kind == "2d" else shape[1:3]
        for case in tfrecord.read_cases(self.val_files, split="all"):
            # A case smaller in-plane than the model's input is padded with its air value.
            size = case.image.shape[:2]
            pad = [(0, max(t - n, 0)) for t, n in zip(tile, size)] + [(0, 0)]
            image = np.pad(case.image, pad, constant_values=case.image.min()) if any(p[1] for p in pad) else case.image
            probs = inference.predict_volume(predict, image, kind=self.config.kind, input_shape=shape,
                                             step=step, num_classes=self.inner.outputs[0].shape[-1])
            probs = probs[: size[0], : size[1]]
            liver, tumor = case_dice(probs, case.label)
            cases[case.case_id] = {"liver_dice": float(liver), "tumor_dice": float(tumor)}
            if overlay is None:
                z = int(np.argmax((case.label == 2).sum((0, 1)) * 10 + (case.label == 1).sum((0, 1))))
                pred = np.argmax(probs[:, :, z], axis=-1)
                overlay = np.concatenate([_overlay(case.image[:, :, z], case.label[:, :, z]),
                                          _overlay(case.image[:, :, z], pred)], axis=1)
        if not cases:
            return None, None
        scores = {"cases": cases,
                  "liver_dice": float(np.mean([c["liver_dice"] for c in cases.values()])),
                  "tumor_dice": float(np.mean([c["tumor_dice"] for c in cases.values()]))}
        return scores, overlay

    def on_epoch_end(self, epoch, logs=None):
        last = epoch + 1 == self.config.epochs
        if (epoch + 1) % self.config.val_every and not last:
            return
        start = time.time()
        if self.bn_batches is not None:
            self._bn_step = self._bn_step or batchnorm_step(self.inner)
            batches = (next(self.bn_batches) for _ in range(self.config.precise_bn_batches))
            recompute_batchnorm_statistics(self.inner, batches, self._bn_step)
        scores, overlay = self.evaluate()
        if scores is None:
            return
        self.last_scores = dict(scores, epoch=epoch + 1)
        if logs is not None:
            logs["val_liver_dice"] = scores["liver_dice"]
            logs["val_tumor_dice"] = scores["tumor_dice"]
        per_case = ", ".join(f"{k} {v['liver_dice']:.3f}/{v['tumor_dice']:.3f}" for k, v in scores["cases"].items())
        self.log(f"epoch {epoch + 1}: validation Dice liver {scores['liver_dice']:.4f} "
                 f"tumor {scores['tumor_dice']:.4f} "
                 f"(per case liver/tumor: {per_case}; {time.time() - start:.1f} s)")
        self.last_overlay = (epoch + 1, overlay)
        if self.chief:
            with open(os.path.join(self.work_dir, "validation.jsonl"), "a") as f:
                f.write(json.dumps(self.last_scores, sort_keys=True) + "\n")
        self._save("last.keras")
        key = (scores["tumor_dice"], scores["liver_dice"])
        # Every worker has the same weights and scores, so all take the same decision.
        if self.best is None or key > (self.best["tumor_dice"], self.best["liver_dice"]):
            self.best = {"epoch": epoch + 1, "tumor_dice": scores["tumor_dice"], "liver_dice": scores["liver_dice"],
                         "cases": scores["cases"]}
            self._save("best.keras")
            _atomic_write_text(self.best_path, json.dumps(self.best, indent=1, sort_keys=True))

    def _save(self, name):
        # Under MultiWorkerMirroredStrategy saving may run collective ops, so every worker
        # saves (as TF's multi-worker guide does); only the chief keeps its file.
        path = os.path.join(self.work_dir, name)
        save_model_atomic(self.inner, path)
        if not self.chief:
            os.remove(path)


class TensorBoardLogger(keras.callbacks.Callback):
    """TensorBoard event files of the epoch logs and of the validation overlays.

    Written with `tf.summary.write` and the scalars/images plugin metadata, which is core
    TensorFlow: Keras' TensorBoard callback needs the `tensorboard` package just to write
    (`tf.summary.scalar` lives there). View with `pip install tensorboard` and
    `tensorboard --logdir MODEL_DIR/logs`: `train/` holds the loss, `validation/` the
    per-case-averaged Dice and an image per epoch (CT with reference | prediction; liver
    green, tumor red).

    Args:
        log_dir: MODEL_DIR/logs.
        validation: the `ValidationCallback` whose overlay is written.
    """

    def __init__(self, log_dir, validation=None):
        super().__init__()
        self.log_dir, self.validation = log_dir, validation
        self._writers = {}

    def _write(self, run, tag, tensor, step, plugin):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
        with self._writers[run].as_default():
            tf.summary.write(tag, tensor, step=step, metadata=metadata)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        for key, value in (logs or {}).items():
            run, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._write(run, f"epoch_{name}", tf.constant(float(value), tf.float32), epoch + 1, "scalars")
        step, overlay = getattr(self.validation, "last_overlay", (None, None))
        if overlay is not None and step == epoch + 1:
            height, width = overlay.shape[:2]
            image = tf.stack([tf.as_string(width), tf.as_string(height), tf.io.encode_png(overlay)])
            self._write("validation", "overlay_reference_vs_prediction", image, step, "images")
        for writer in self._writers.values():
            writer.flush()


class StageLogger(keras.callbacks.Callback):
    """Records the sampling mode of each epoch in the logs (`sampling`: 0 dense, 1 sparse, 2 dense_sparse)."""

    CODES = {"dense": 0, "sparse": 1, "dense_sparse": 2, "volume": 3}

    def __init__(self, sampling):
        super().__init__()
        self.sampling = sampling

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sampling"] = float(self.CODES[self.sampling])


# --- The run ---------------------------------------------------------------------------------


def _check_previous_run(config):
    """A model_dir holding a different run must not be resumed with other settings."""
    path = os.path.join(config.model_dir, "config.json")
    if not (os.path.isfile(path) and os.path.isdir(os.path.join(config.model_dir, "backup"))):
        return
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(config.to_json())
    free = {"epochs", "steps_per_epoch", "val_every", "verbose", "strategy", "dsd_epochs", "data"}
    differ = sorted(k for k in current if k not in free and previous.get(k) != current[k])
    if differ:
        raise ConfigError(f"--model_dir={config.model_dir} holds a run with other settings ({', '.join(differ)} "
                          "differ); use another --model_dir or the same flags to resume it")


@contextlib.contextmanager
def _multi_worker_fit_workaround(trainable, strategy):
    """Lets Keras 3 `fit` run under MultiWorkerMirroredStrategy (keras-team/keras#20585).

    Two steps of Keras 3.15's TensorFlow trainer fail with this strategy:
    1. `_maybe_symbolic_build` reduces the first distributed batch with `strategy.reduce`,
       which cannot take an `(x, y)` nest here. It is skipped when the model holds no
       strategy of its own; `fit` then takes the strategy from the surrounding
       `strategy.scope()` (see `train`), and what the symbolic build would create (the
       optimizer variables) is created here, in cross-replica context.
    2. Each step's logs (scalars) are averaged over workers with
       `strategy.reduce("MEAN", v, axis=0)`, invalid for scalars. While training runs,
       Keras' `reduce_per_replica` gets that case with `axis=None` (the mean over replicas);
       every other case goes to Keras' own function. Restored on exit.
    """
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    with strategy.scope():
        trainable.optimizer.build(trainable.trainable_variables)
    trainable._distribute_strategy = None
    keras_reduce = keras_tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy_, reduction="auto"):
        if reduction != "auto" or strategy_ is not strategy:
            return keras_reduce(values, strategy_, reduction)
        return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)

    keras_tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        keras_tf_trainer.reduce_per_replica = keras_reduce


def prepare(config):
    """Everything that can fail before training starts: resolves the config, data and strategy.

    Returns:
        `(resolved TrainConfig, DataSource, TF_CONFIG dict or None)`.

    Raises:
        ConfigError / DataError with one clear message.
    """
    config = resolve(config)
    tf_config = check_strategy(config.strategy)
    source = inspect_data(config.data)
    if config.num_folds > 1:
        fold_split(source.case_ids, config.num_folds, config.fold, config.seed)
    elif source.kind == "tfrecord" and not source.val_files:
        raise DataError(f"--data={config.data}: the manifest lists no validation shards; use --num_folds")
    elif source.kind == "nifti" and len(source.case_ids) < 2:
        raise DataError(f"--data={config.data}: found {len(source.case_ids)} case; training needs at least 2 "
                        "(one is held out for validation)")
    _check_previous_run(config)
    return config, source, tf_config


def train(config, log=None):
    """Trains a zoo model; see the module docstring.

    Args:
        config: a `TrainConfig` (resolved here).
        log: printing function (default: print to stdout, flushed).

    Returns:
        dict: `config` (resolved, as dict), `history` (per-epoch logs of this process),
        `final` (last validation scores), `best` (best epoch and scores), `model_dir`.

    Raises:
        ConfigError, DataError: before anything starts, for any bad option or data.

    Example:
        >>> train(TrainConfig(model="residual_unet", epochs=1, steps_per_epoch=2))  # doctest: +SKIP
    """
    log = log or (lambda *a: print(*a, flush=True))
    config, source, tf_config = prepare(config)

    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF ops.
    import tensorflow as tf

    strategy = make_strategy(config.strategy, tf_config)
    keras.utils.set_random_seed(config.seed)
    chief = is_chief(strategy)
    work_dir = _worker_dir(config.model_dir, strategy)
    os.makedirs(work_dir, exist_ok=True)
    if chief:
        # The resolved config plus the in-plane size of the data, which inference must reuse.
        run = dict(json.loads(config.to_json()), inplane_size=data_inplane_size(config, source))
        _atomic_write_text(os.path.join(config.model_dir, "config.json"),
                           json.dumps(run, indent=1, sort_keys=True) + "\n")
    train_files, val_files = prepare_data(config, source, work_dir, log)

    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with strategy.scope():
            inner, trainable, num_outputs = build_model(config, strategy.num_replicas_in_sync)
            compile_model(trainable, config, num_outputs)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    log(f"training {config.model} ({inner.count_params():,} parameters, recipe {config.recipe}) on "
        f"{strategy.num_replicas_in_sync} replica(s) with {_strategy_name(strategy)}, global batch "
        f"{config.batch_size}, {config.epochs} epochs x {config.steps_per_epoch} steps; model_dir {config.model_dir}")

    bn_batches = None
    if config.precise_bn_batches and batchnorm_layers(inner):
        # Inference-like samples: dense stacks (2D) or sub-volumes (3D), with augmentation.
        sampling = "dense" if config.kind == "2d" else "volume"
        bn_batches = iter(training_dataset(config, sampling, train_files, 1, seed=config.seed + 1000))
    validation = ValidationCallback(inner, config, val_files, work_dir, chief, log, bn_batches)
    callbacks = [validation]
    if chief:
        callbacks += [TensorBoardLogger(os.path.join(config.model_dir, "logs"), validation),
                      keras.callbacks.CSVLogger(os.path.join(config.model_dir, "history.csv"), append=True)]
    # Last, so an epoch's best/last models are written before its backup marks it done.
    backup = keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"), double_checkpoint=True,
                                              delete_checkpoint=False)
    history = []
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    start = time.time()
    with _multi_worker_fit_workaround(trainable, strategy) if multi_worker else contextlib.nullcontext():
        for index, stage in enumerate(stage_plan(config)):
            dataset = training_dataset(config, stage.sampling, train_files, num_outputs, seed=config.seed + index,
                                       multi_worker=multi_worker)
            if config.dsd:
                log(f"DSD stage {index + 1}: {stage.sampling} stacks for epochs {stage.start + 1}-{stage.end}")
            with strategy.scope():
                result = trainable.fit(dataset, epochs=stage.end, initial_epoch=stage.start,
                                       steps_per_epoch=config.steps_per_epoch, verbose=config.verbose,
                                       callbacks=[StageLogger(stage.sampling)] + callbacks + [backup])
            history += [{k: float(v[i]) for k, v in result.history.items()} | {"epoch": result.epoch[i] + 1}
                        for i in range(len(result.epoch))]
    final = validation.last_scores
    if final is None:  # a finished run started again: report its last validation
        final, _ = validation.evaluate()
    if final is not None:
        log(f"validation on {len(final['cases'])} held-out case(s) not trained on ({', '.join(final['cases'])}), "
            f"Dice per case:")
        log(f"  last epoch: liver {final['liver_dice']:.4f}, tumor {final['tumor_dice']:.4f} "
            f"({os.path.join(config.model_dir, 'last.keras')})")
    if validation.best is not None:
        log(f"  best epoch {validation.best['epoch']}: liver {validation.best['liver_dice']:.4f}, tumor "
            f"{validation.best['tumor_dice']:.4f} ({os.path.join(config.model_dir, 'best.keras')})")
    log(f"trained in {time.time() - start:.0f} s")
    return {"config": dataclasses.asdict(config), "history": history, "final": final, "best": validation.best,
            "model_dir": config.model_dir}
