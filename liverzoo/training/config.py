"""Training options: the user's `TrainConfig`, and `resolve` into a complete, checked `ResolvedConfig`.

Every check runs here, before TensorFlow starts, so a bad flag fails with one clear message
that names it.
"""
import dataclasses
import inspect
import json
import os

import numpy as np

from liverzoo.errors import ConfigError
from liverzoo.layout import get_layout
from liverzoo.training import recipes


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
        learning_rate, schedule, optimizer, loss, class_weights, weight_decay: see `Recipe`
            (the demo's loss: `recipes.DEMO_LOSS`; its rate: `recipes.DEMO_LEARNING_RATE`
            where the recipe has one there).
        sampling: 2D stack sampling "dense", "sparse" or "dense_sparse".
        dsd: Dense-Sparse then Dense training (2D models).
        dsd_epochs: `(dense_sparse_epochs, dense_epochs)`; default a 40/60 split of `epochs`.
        input_shape: the model's input without batch axis; for the demo the model's
            default plane with `recipes.DEMO_STACK` slices where the recipe has one there,
            else the paper's patch with the model's T.
        inplane_spacing: mm per pixel of the working plane for demo and NIfTI data (every scan
            drawn at one scale; planes are sampled as input-sized patches, tiled at inference);
            default `recipes.DEMO_INPLANE_SPACING` for the demo, the preset's fixed size for NIfTI
            folders; 0: the fixed size. TFRecord shards keep the plane they were written with.
        preset: intensity preprocessing, a name in `liverzoo.data.preprocess.PRESETS`; default
            the model's (its paper's), for the demo its fixed-window variant
            (`recipes.DEMO_FIXED_WINDOW`). Recorded in config.json, so that `tools/predict.py`
            and the exporter preprocess as the run did. TFRecord shards keep theirs.
        augment: on-the-fly augmentation from the recipe.
        foreground_fraction: share of samples centred on liver or tumor.
        strategy: "auto", "one_device", "mirrored" or "multi_worker" (from TF_CONFIG).
        mixed_precision: mixed_float16 compute, float32 softmax outputs and loss.
        recompute: gradient checkpointing (see `RecomputeModel`).
        num_folds, fold: case-level k-fold cross-validation (num_folds 1: the data's own split).
        seed: seeds weights, sampling, augmentation and fold assignment.
        val_every: validate every this many epochs (and always after the last); default 1, the
            demo's `recipes.DEMO_VAL_EVERY`.
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
    inplane_spacing: float = None
    preset: str = None
    augment: bool = True
    foreground_fraction: float = 0.5
    strategy: str = "auto"
    mixed_precision: bool = False
    recompute: bool = None
    num_folds: int = 1
    fold: int = 0
    seed: int = 0
    val_every: int = None
    precise_bn_batches: int = 16
    verbose: int = 1

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n"


@dataclasses.dataclass(frozen=True)
class ResolvedConfig(TrainConfig):
    """A `TrainConfig` with every option filled and checked (from `resolve`); saved as config.json.

    Attributes:
        recipe: the `RECIPES` row used.
        kind: the model's input layout name, "2d" or "3d" (`liverzoo.layout`).
        deep_supervision: the recipe's deep-supervision weights rule, or None.
        augmentation: the `liverzoo.data.augment.AugmentConfig` ranges used (empty: none): the
            recipe's, or for the demo data `recipes.DEMO_AUGMENT`.
    """

    recipe: str = None
    kind: str = None
    deep_supervision: str = None
    augmentation: dict = None

    @property
    def layout(self):
        """The model's `liverzoo.layout.InputLayout`."""
        return get_layout(self.kind)


def _positive(value, flag, kind=int):
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"--{flag} must be a positive {kind.__name__}, got {value!r}")
    if kind is int and int(value) != value:
        raise ConfigError(f"--{flag} must be a positive integer, got {value!r}")
    return kind(value)


def check_choice(value, choices, flag):
    """`value` if it is one of `choices`, else ConfigError naming `--flag`."""
    if value not in choices:
        raise ConfigError(f"--{flag}={value!r} is not one of {', '.join(choices)}")
    return value


def builder_parameters(model):
    """The parameters of a zoo model's builder (`inspect.Parameter` by name)."""
    from liverzoo import models

    return inspect.signature(models.MODELS[model]).parameters


def _check_model_kwargs(model, model_kwargs):
    if not isinstance(model_kwargs, dict):
        raise ConfigError(f"--model_kwargs must be a JSON object, got {model_kwargs!r}")
    reserved = {"input_shape", "deep_supervision"} & set(model_kwargs)
    if reserved:
        raise ConfigError(f"--model_kwargs cannot set {', '.join(sorted(reserved))} (use --input_shape; deep "
                          "supervision follows the recipe)")
    unknown = sorted(set(model_kwargs) - set(builder_parameters(model)))
    if unknown:
        raise ConfigError(f"--model_kwargs: {model} has no argument {', '.join(unknown)}")


def _input_shape(config, spec, recipe, demo):
    layout = get_layout(spec.kind)
    if config.input_shape is not None:
        shape = tuple(int(d) for d in config.input_shape)
    elif demo:
        shape = tuple(spec.default_input_shape)
        if not layout.is_volume and recipe.name in recipes.DEMO_STACK:
            shape = layout.input_shape(layout.plane(shape), recipes.DEMO_STACK[recipe.name])
    else:  # the paper's patch; a 2.5D model keeps its stack size T
        stack = recipe.patch[0] if layout.is_volume else layout.stack(spec.default_input_shape)
        shape = layout.input_shape(recipe.patch[-2:], stack)
    if len(shape) != layout.rank or min(shape) < 1:
        raise ConfigError(f"--input_shape for {layout.name} model {config.model} must be {layout.rank} positive "
                          f"sizes ({layout.axes}), got {shape}")
    if layout.is_volume and shape[-1] != 1:
        raise ConfigError(f"--input_shape of a 3d model ends with 1 channel, got {shape}")
    if not layout.is_volume and shape[-1] % 2 == 0:
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
        first = min(max(int(round(recipes.DSD_DENSE_SPARSE_SHARE * epochs)), 1), epochs - 1)
        return (first, epochs - first), epochs
    stages = tuple(int(e) for e in config.dsd_epochs)
    if len(stages) != 2 or min(stages) < 1:
        raise ConfigError(f"--dsd_epochs must be two positive epoch counts (dense_sparse,dense), "
                          f"got {config.dsd_epochs}")
    if config.epochs is not None and sum(stages) != config.epochs:
        raise ConfigError(f"--dsd_epochs {stages[0]}+{stages[1]} do not add up to --epochs={config.epochs}")
    return stages, sum(stages)


def _sampling(config, recipe, layout, epochs):
    """`(sampling, dsd, dsd_epochs, epochs)`: 3D models sample sub-volumes, 2.5D ones stacks."""
    if layout.is_volume:
        if config.sampling not in (None, "volume"):
            raise ConfigError(f"--sampling={config.sampling} is for 2.5D models; {config.model} is 3D (sub-volumes)")
        if config.dsd:
            raise ConfigError(f"--dsd is for 2.5D models; {config.model} is 3D")
        sampling, dsd = "volume", False
    else:
        default_sampling = recipe.sampling if recipe.sampling != "volume" else "dense"
        sampling = check_choice(config.sampling or default_sampling, recipes.SAMPLINGS, "sampling")
        dsd = recipe.dsd if config.dsd is None else bool(config.dsd)
        if dsd and config.sampling not in (None, "dense_sparse"):
            raise ConfigError("--dsd trains with dense_sparse then dense stacks; leave --sampling unset")
    dsd_epochs, epochs = _dsd_epochs(config, epochs, dsd)
    return ("dense_sparse" if dsd else sampling), dsd, dsd_epochs, epochs


def _check_run_options(config, recipe):
    """The options that need no default: fractions, folds, seed, validation, verbosity."""
    from liverzoo.data import augment

    ff = config.foreground_fraction
    if not isinstance(ff, (int, float)) or not 0.0 <= ff <= 1.0:
        raise ConfigError(f"--foreground_fraction must be in [0, 1], got {ff!r}")
    check_choice(config.strategy, recipes.STRATEGIES, "strategy")
    num_folds = _positive(config.num_folds, "num_folds")
    if not isinstance(config.fold, int) or not 0 <= config.fold < num_folds:
        raise ConfigError(f"--fold must be in [0, {num_folds - 1}] with --num_folds={num_folds}, got {config.fold!r}")
    if not isinstance(config.seed, int) or config.seed < 0:
        raise ConfigError(f"--seed must be a non-negative integer, got {config.seed!r}")
    if not isinstance(config.precise_bn_batches, int) or config.precise_bn_batches < 0:
        raise ConfigError(f"--precise_bn_batches must be a non-negative integer, got {config.precise_bn_batches!r}")
    if config.verbose not in (0, 1, 2):
        raise ConfigError(f"--verbose must be 0, 1 or 2, got {config.verbose!r}")
    if config.augment and recipe.augment:
        augment.AugmentConfig(**recipe.augment)  # validates
    return float(ff)


def resolve(config):
    """Fills every None of `config` from the model's recipe and checks all values.

    Args:
        config: a `TrainConfig`.

    Returns:
        A `ResolvedConfig`.

    Raises:
        ConfigError: an unknown model or any bad value; the message names the flag.

    Example:
        >>> resolve(TrainConfig(model="lv_net")).schedule  # doctest: +SKIP
        'exponential'
    """
    from liverzoo import losses, models, schedules

    recipe_name, recipe = recipes.recipe_for(config.model)
    spec = models.SPECS[config.model]
    layout = get_layout(spec.kind)
    _check_model_kwargs(config.model, config.model_kwargs)
    demo = config.data is None
    input_shape = _input_shape(config, spec, recipe, demo)

    def given_or(flag, default, kind=int):
        value = getattr(config, flag)
        return default if value is None else _positive(value, flag, kind)

    epochs = given_or("epochs", recipes.DEMO_EPOCHS if demo else recipe.epochs)
    steps = given_or("steps_per_epoch", recipes.DEMO_STEPS_PER_EPOCH if demo else recipes.PAPER_STEPS_PER_EPOCH)
    val_every = given_or("val_every", recipes.DEMO_VAL_EVERY if demo else 1)
    batch = given_or("batch_size", recipes.DEMO_BATCH_SIZE[layout.name] if demo else recipe.batch_size)
    lr = given_or("learning_rate", recipes.DEMO_LEARNING_RATE.get(recipe_name, recipe.learning_rate) if demo
                  else recipe.learning_rate, float)
    schedule = check_choice(config.schedule or (recipes.DEMO_SCHEDULE if demo else recipe.schedule),
                            schedules.SCHEDULES, "schedule")
    optimizer = check_choice(config.optimizer or recipe.optimizer, recipes.OPTIMIZERS, "optimizer")
    loss = check_choice(config.loss or (recipes.DEMO_LOSS if demo else recipe.loss), tuple(losses.LOSSES), "loss")
    class_weights = config.class_weights if config.class_weights is not None else recipe.class_weights
    if class_weights is not None:
        class_weights = tuple(float(w) for w in class_weights)
    if loss == "weighted_ce":
        losses.get(loss, class_weights=class_weights)  # validates the weights
        num_classes = config.model_kwargs.get("num_classes", builder_parameters(config.model)["num_classes"].default)
        if len(class_weights) != num_classes:
            raise ConfigError(f"--class_weights has {len(class_weights)} entries but {config.model} predicts "
                              f"{num_classes} classes")
    weight_decay = recipe.weight_decay if config.weight_decay is None else float(config.weight_decay)
    if weight_decay < 0:
        raise ConfigError(f"--weight_decay must be >= 0, got {weight_decay}")
    sampling, dsd, dsd_epochs, epochs = _sampling(config, recipe, layout, epochs)
    foreground_fraction = _check_run_options(config, recipe)
    recompute = recipe.recompute if config.recompute is None else bool(config.recompute)
    model_dir = config.model_dir or os.path.join("runs", config.model)
    inplane_spacing = _inplane_spacing(config, demo)
    preset = _preset(config, spec, demo)

    user = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    return ResolvedConfig(**dict(
        user, model_dir=str(model_dir), epochs=epochs, steps_per_epoch=steps, batch_size=batch, learning_rate=lr,
        schedule=schedule, optimizer=optimizer, loss=loss, class_weights=class_weights, weight_decay=weight_decay,
        sampling=sampling, dsd=dsd, dsd_epochs=dsd_epochs, input_shape=input_shape, inplane_spacing=inplane_spacing,
        val_every=val_every,
        foreground_fraction=foreground_fraction, recompute=recompute, recipe=recipe_name, kind=layout.name, preset=preset,
        deep_supervision=recipe.aux_weights, augmentation=_augmentation(config, recipe, demo)))


def _inplane_spacing(config, demo):
    spacing = config.inplane_spacing
    if spacing is None:
        return recipes.DEMO_INPLANE_SPACING if demo else None
    if spacing == 0:
        return None
    return _positive(spacing, "inplane_spacing", float)


def _preset(config, spec, demo):
    from liverzoo.data import preprocess

    if config.preset is not None:
        return preprocess.preset_option(config.preset)
    return preprocess.window_variant(spec.preset) if demo and recipes.DEMO_FIXED_WINDOW else spec.preset


def _augmentation(config, recipe, demo):
    if not config.augment:
        return {}
    return dict(recipes.DEMO_AUGMENT if demo else recipe.augment)


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
