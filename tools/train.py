"""Train a zoo model with its paper's recipe: python tools/train.py --model=residual_unet.

Without --data it trains on the embedded demo CT (fixed split) and prints the validation
liver and tumor Dice of the held-out case. Every flag left unset takes the model's recipe
(liverzoo/training/recipes.py RECIPES, docs/training.md). Killed runs resume when started
again with the same command. One flag per `liverzoo.training.TrainConfig` field.
"""
import dataclasses
import json

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

from liverzoo import losses, schedules, training  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (liverzoo.models.MODELS).")
flags.DEFINE_string("model_kwargs", None, "JSON object of extra builder arguments, e.g. '{\"base_filters\": 32}'.")
flags.DEFINE_string("data", None, "TFRecord folder/manifest/glob or a folder of NIfTI cases; default: embedded demo.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs and config.json (default runs/MODEL).")
flags.DEFINE_integer("epochs", None, "Epochs (default: recipe, or the demo's).")
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch.")
flags.DEFINE_integer("batch_size", None, "Global batch size, split over the replicas.")
flags.DEFINE_float("learning_rate", None,
                   "Initial (peak) learning rate; default the recipe's (the demo's residual U-Net: 3e-3).")
flags.DEFINE_enum("schedule", None, list(schedules.SCHEDULES),
                  "poly (power 0.9), cosine, exponential (x0.9 per epoch) or constant.")
flags.DEFINE_enum("optimizer", None, list(training.OPTIMIZERS), "adam or sgd (Nesterov momentum 0.99).")
flags.DEFINE_enum("loss", None, list(losses.LOSSES), "dice, dice_ce, ce or weighted_ce.")
flags.DEFINE_list("class_weights", None, "weighted_ce weights for background,liver,tumor.")
flags.DEFINE_float("weight_decay", None, "L2 coefficient (LV-Net Eq. 3).")
flags.DEFINE_enum("sampling", None, list(training.SAMPLINGS), "2.5D stack sampling: dense, sparse or dense_sparse.")
flags.DEFINE_bool("dsd", None, "Dense-Sparse then Dense two-stage training (2.5D models).")
flags.DEFINE_list("dsd_epochs", None, "DSD stage lengths dense_sparse,dense (default 40/60 of --epochs).")
flags.DEFINE_list("input_shape", None, "Model input without batch: H,W,T (2D) or D,H,W,1 (3D) (default: for the "
                  "demo the model's plane with recipes.DEMO_STACK slices, residual_unet 128,128,5; else the "
                  "paper's patch).")
flags.DEFINE_float("inplane_spacing", None, "Working plane's mm per pixel for demo and NIfTI data (default: 3 for "
                   "the demo, the preset's fixed size otherwise; 0: the fixed size).", lower_bound=0.0)
flags.DEFINE_string("preset", None, "Intensity preprocessing preset (liverzoo.data.preprocess.PRESETS; default: the "
                    "model's, for the demo its fixed-window variant, e.g. residual_unet_window).")
flags.DEFINE_bool("augment", True, "On-the-fly augmentation of the recipe.")
flags.DEFINE_float("foreground_fraction", 0.5, "Share of samples centred on liver or tumor.")
flags.DEFINE_enum("strategy", "auto", list(training.STRATEGIES),
                  "auto, one_device, mirrored or multi_worker (TF_CONFIG).")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute with float32 outputs and loss.")
flags.DEFINE_bool("recompute", None, "Gradient checkpointing (default: recipe; LW-HCN on).")
flags.DEFINE_integer("num_folds", 1, "Case-level k-fold cross-validation (1: the data's own split).")
flags.DEFINE_integer("fold", 0, "Validation fold, 0 <= fold < num_folds.")
flags.DEFINE_integer("seed", 0, "Seed of weights, sampling, augmentation and folds.")
flags.DEFINE_integer("val_every", None, "Validate every N epochs (and after the last); default 1, 2 for the demo.")
flags.DEFINE_integer("precise_bn_batches", 16, "Training batches to recompute BatchNorm statistics before validation.")
flags.DEFINE_integer("verbose", 1, "1: progress bar with ETA, 2: one line per epoch, 0: quiet.")
flags.mark_flags_as_required(["model"])

#: List flags of numbers, and their element type.
NUMBER_LISTS = {"class_weights": float, "dsd_epochs": int, "input_shape": int}


def _value(name):
    """The TrainConfig value of flag `name`: JSON and number lists parsed."""
    value = FLAGS[name].value
    if name == "model_kwargs":
        try:
            return {} if value is None else json.loads(value)
        except ValueError:
            raise ConfigError(f"--model_kwargs={value}: not valid JSON") from None
    if name in NUMBER_LISTS:
        return cli.number_list_flag(name, value, NUMBER_LISTS[name])
    return value


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    training.train(training.TrainConfig(**{f.name: _value(f.name) for f in dataclasses.fields(training.TrainConfig)}))


if __name__ == "__main__":
    cli.run(main)
