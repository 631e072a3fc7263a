"""Training behind `tools/train.py`: per-paper recipes, tf.distribute, resumable runs.

`train(TrainConfig(model="residual_unet"))` resolves the model's recipe (`RECIPES`; every
field can be overridden), checks every option and the data before anything starts, then
trains with Keras `Model.fit` under a real `tf.distribute` strategy:

- data (`data`): the embedded demo cases (default), a folder of NIfTI cases or TFRecord
  shards (`liverzoo.data.tfrecord`); cases are preprocessed once into shards under `model_dir`;
- sampling per stage: 2.5D `dense` / `sparse` / `dense_sparse` stacks or 3D sub-volumes;
  DSD (paper 000) is a `dense_sparse` stage followed by a `dense` stage (`config.stage_plan`);
- validation after each epoch on whole validation volumes (`callbacks`), Dice per case for
  liver and tumor, averaged over cases;
- `model_dir`: `config.json` (the resolved config), `backup/` (a run killed and started
  again with the same command resumes at its last finished epoch with its optimizer state),
  `best.keras` (by validation tumor Dice, then liver), `last.keras`, `history.csv`,
  `validation.jsonl` and TensorBoard logs in `logs/`.

Modules: `recipes` (the per-paper table), `config` (options and their checks), `data`,
`distribute` (strategy, TF_CONFIG, SyncBN), `model` (build and compile), `recompute`
(gradient checkpointing), `precise_bn`, `callbacks`, `loop` (`prepare`, `train`).

Example:
    >>> from liverzoo import training
    >>> result = training.train(training.TrainConfig(model="residual_unet", model_dir="runs/demo"))  # doctest: +SKIP
    >>> result["best"]["tumor_dice"]  # doctest: +SKIP
"""
from liverzoo.training.config import ResolvedConfig, Stage, TrainConfig, resolve, stage_plan
from liverzoo.training.loop import prepare, train
from liverzoo.training.recipes import (
    DEMO_BATCH_SIZE,
    DEMO_EPOCHS,
    DEMO_STEPS_PER_EPOCH,
    DSD_DENSE_SPARSE_SHARE,
    OPTIMIZERS,
    PAPER_STEPS_PER_EPOCH,
    RECIPES,
    SAMPLINGS,
    SPARSE_STRIDE,
    STRATEGIES,
    Recipe,
    recipe_for,
)

__all__ = [
    "DEMO_BATCH_SIZE", "DEMO_EPOCHS", "DEMO_STEPS_PER_EPOCH", "DSD_DENSE_SPARSE_SHARE", "OPTIMIZERS",
    "PAPER_STEPS_PER_EPOCH", "RECIPES", "SAMPLINGS", "SPARSE_STRIDE", "STRATEGIES", "Recipe", "ResolvedConfig",
    "Stage", "TrainConfig", "prepare", "recipe_for", "resolve", "stage_plan", "train",
]
