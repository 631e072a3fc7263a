"""The run: `prepare` checks everything that can fail before training, `train` trains.

`train(TrainConfig(...))` resolves the config, picks the data and the strategy, builds and
compiles the model in the strategy scope, then fits stage by stage (DSD has two) with the
validation, TensorBoard, CSV and backup callbacks. A run killed and started again with the
same command resumes at its last finished epoch (`BackupAndRestore`).
"""
import dataclasses
import json
import os
import time

import keras

from liverzoo.data import io
from liverzoo.errors import ConfigError, DataError
from liverzoo.training import callbacks as callbacks_lib
from liverzoo.training.allocator import keep_freed_memory
from liverzoo.training import distribute
from liverzoo.training.config import resolve, stage_plan
from liverzoo.training.data import (data_plane, inspect_data, prepare_data, run_split, shard_preset,
                                    training_dataset, validation_cases)
from liverzoo.training.model import build_model, compile_model
from liverzoo.training.precise_bn import batchnorm_layers

#: config.json keys that may change when a run is resumed.
RESUMABLE_CHANGES = {"epochs", "steps_per_epoch", "val_every", "verbose", "strategy", "dsd_epochs", "data"}


def _check_previous_run(config):
    """A model_dir holding a different run must not be resumed with other settings."""
    path = os.path.join(config.model_dir, "config.json")
    if not (os.path.isfile(path) and os.path.isdir(os.path.join(config.model_dir, "backup"))):
        return
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(config.to_json())
    differ = sorted(k for k in current if k not in RESUMABLE_CHANGES and previous.get(k) != current[k])
    if differ:
        raise ConfigError(f"--model_dir={config.model_dir} holds a run with other settings ({', '.join(differ)} "
                          "differ); use another --model_dir or the same flags to resume it")


def prepare(config):
    """Everything that can fail before training starts: resolves the config, data and strategy.

    Returns:
        `(ResolvedConfig, DataSource, TF_CONFIG dict or None)`.

    Raises:
        ConfigError / DataError with one clear message.
    """
    requested_preset = config.preset
    config = resolve(config)
    tf_config = distribute.check_strategy(config.strategy)
    source = inspect_data(config.data)
    config = shard_preset(config, requested_preset, source)
    if config.num_folds > 1:
        run_split(config, source)  # enough cases for the folds
    elif source.kind == "tfrecord" and not source.val_files:
        raise DataError(f"--data={config.data}: the manifest lists no validation shards; use --num_folds")
    elif source.kind == "nifti" and len(source.case_ids) < 2:
        raise DataError(f"--data={config.data}: found {len(source.case_ids)} case; training needs at least 2 "
                        "(one is held out for validation)")
    _check_previous_run(config)
    return config, source, tf_config


def _write_run_config(config, source):
    # The resolved config plus the working plane of the data, which inference must reuse.
    size, spacing = data_plane(config, source)
    run = dict(json.loads(config.to_json()), inplane_size=size, inplane_spacing=spacing)
    callbacks_lib.write_text_atomic(os.path.join(config.model_dir, "config.json"),
                                    json.dumps(run, indent=1, sort_keys=True) + "\n")


def _build_in_scope(config, strategy):
    """`(inner, trainable, num_outputs)` built and compiled in the strategy scope, in the config's precision."""
    previous_policy = keras.config.dtype_policy()
    if config.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        with strategy.scope():
            inner, trainable, num_outputs = build_model(config, strategy.num_replicas_in_sync)
            compile_model(trainable, config, num_outputs)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return inner, trainable, num_outputs


def _report(validation, config, log):
    """Logs the last and best validation; returns the last scores."""
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
    return final


def train(config, log=None):
    """Trains a zoo model with its paper's recipe (`liverzoo.training.RECIPES`).

    `model_dir` gets `config.json` (the resolved config), `backup/` (`BackupAndRestore`),
    `best.keras` (by validation tumor Dice, then liver), `last.keras`, `history.csv`,
    `validation.jsonl` and TensorBoard logs in `logs/`.

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
    keep_freed_memory()  # every step would page-fault its large activations in again

    # The strategy comes first: MultiWorkerMirroredStrategy must exist before other TF ops.
    strategy = distribute.make_strategy(config.strategy, tf_config)
    keras.utils.set_random_seed(config.seed)
    chief = distribute.is_chief(strategy)
    work_dir = distribute.worker_dir(config.model_dir, strategy)
    io.check_output_dir(work_dir)  # a bad --model_dir: one DataError line, not an OSError traceback
    if chief:
        _write_run_config(config, source)
    train_files, val_files = prepare_data(config, source, work_dir, log)

    inner, trainable, num_outputs = _build_in_scope(config, strategy)
    log(f"training {config.model} ({inner.count_params():,} parameters, recipe {config.recipe}) on "
        f"{strategy.num_replicas_in_sync} replica(s) with {distribute.strategy_name(strategy)}, global batch "
        f"{config.batch_size}, {config.epochs} epochs x {config.steps_per_epoch} steps; model_dir {config.model_dir}")

    bn_batches = None
    if config.precise_bn_batches and batchnorm_layers(inner):
        # Inference-like samples: dense stacks (2D) or sub-volumes (3D), with augmentation.
        sampling = "volume" if config.layout.is_volume else "dense"
        bn_batches = iter(training_dataset(config, sampling, train_files, 1, seed=config.seed + 1000))
    validation = callbacks_lib.ValidationCallback(
        inner, config, val_files, work_dir, chief, log, bn_batches,
        val_cases=validation_cases(config, source, work_dir), plane=data_plane(config, source))
    callbacks = [validation]
    if chief:
        callbacks += [callbacks_lib.TensorBoardLogger(os.path.join(config.model_dir, "logs"), validation),
                      keras.callbacks.CSVLogger(os.path.join(config.model_dir, "history.csv"), append=True)]
    # Last, so an epoch's best/last models are written before its backup marks it done.
    backup = keras.callbacks.BackupAndRestore(os.path.join(work_dir, "backup"), double_checkpoint=True,
                                              delete_checkpoint=False)
    history = []
    start = time.time()
    with distribute.fit_context(trainable, strategy):
        for index, stage in enumerate(stage_plan(config)):
            dataset = training_dataset(config, stage.sampling, train_files, num_outputs, seed=config.seed + index,
                                       multi_worker=distribute.is_multi_worker(strategy))
            if config.dsd:
                log(f"DSD stage {index + 1}: {stage.sampling} stacks for epochs {stage.start + 1}-{stage.end}")
            with strategy.scope():
                # shuffle=False: the tf.data pipeline shuffles; Keras's default True only warns.
                result = trainable.fit(dataset, epochs=stage.end, initial_epoch=stage.start, shuffle=False,
                                       steps_per_epoch=config.steps_per_epoch, verbose=config.verbose,
                                       callbacks=[callbacks_lib.StageLogger(stage.sampling)] + callbacks + [backup])
            history += [{k: float(v[i]) for k, v in result.history.items()} | {"epoch": result.epoch[i] + 1}
                        for i in range(len(result.epoch))]
    final = _report(validation, config, log)
    log(f"trained in {time.time() - start:.0f} s")
    return {"config": dataclasses.asdict(config), "history": history, "final": final, "best": validation.best,
            "model_dir": config.model_dir}
