"""Train a zoo model with its paper's recipe: python tools/train.py --model=residual_unet.

Without --data it trains on the embedded demo CT (fixed split) and prints the validation
liver and tumor Dice of the held-out case. Every flag left unset takes the model's recipe
(liverzoo/train_lib.py RECIPES, docs/training.md). Killed runs resume when started again
with the same command.
"""
import sys

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Zoo model name (liverzoo.models.MODELS).")
flags.DEFINE_string("model_kwargs", None, "JSON object of extra builder arguments, e.g. '{\"base_filters\": 32}'.")
flags.DEFINE_string("data", None, "TFRecord folder/manifest/glob or a folder of NIfTI cases; default: embedded demo.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs and config.json (default runs/MODEL).")
flags.DEFINE_integer("epochs", None, "Epochs (default: recipe, or the demo's).")
flags.DEFINE_integer("steps_per_epoch", None, "Optimizer steps per epoch.")
flags.DEFINE_integer("batch_size", None, "Global batch size, split over the replicas.")
flags.DEFINE_float("learning_rate", None, "Initial learning rate.")
flags.DEFINE_string("schedule", None, "poly (power 0.9), cosine, exponential (x0.9 per epoch) or constant.")
flags.DEFINE_string("optimizer", None, "adam or sgd (Nesterov momentum 0.99).")
flags.DEFINE_string("loss", None, "dice, dice_ce, ce or weighted_ce.")
flags.DEFINE_list("class_weights", None, "weighted_ce weights for background,liver,tumor.")
flags.DEFINE_float("weight_decay", None, "L2 coefficient (LV-Net Eq. 3).")
flags.DEFINE_string("sampling", None, "2.5D stack sampling: dense, sparse or dense_sparse.")
flags.DEFINE_bool("dsd", None, "Dense-Sparse then Dense two-stage training (2.5D models).")
flags.DEFINE_list("dsd_epochs", None, "DSD stage lengths dense_sparse,dense (default 40/60 of --epochs).")
flags.DEFINE_list("input_shape", None, "Model input without batch: H,W,T (2D) or D,H,W,1 (3D).")
flags.DEFINE_bool("augment", True, "On-the-fly augmentation of the recipe.")
flags.DEFINE_float("foreground_fraction", 0.5, "Share of samples centred on liver or tumor.")
flags.DEFINE_string("strategy", "auto", "auto, one_device, mirrored or multi_worker (TF_CONFIG).")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 compute with float32 outputs and loss.")
flags.DEFINE_bool("recompute", None, "Gradient checkpointing (default: recipe; LW-HCN on).")
flags.DEFINE_integer("num_folds", 1, "Case-level k-fold cross-validation (1: the data's own split).")
flags.DEFINE_integer("fold", 0, "Validation fold, 0 <= fold < num_folds.")
flags.DEFINE_integer("seed", 0, "Seed of weights, sampling, augmentation and folds.")
flags.DEFINE_integer("val_every", 1, "Validate every N epochs (and after the last).")
flags.DEFINE_integer("precise_bn_batches", 16, "Training batches to recompute BatchNorm statistics before validation.")
flags.DEFINE_integer("verbose", 1, "1: progress bar with ETA, 2: one line per epoch, 0: quiet.")


def _numbers(name, kind):
    value = FLAGS[name].value
    if value is None:
        return None
    from liverzoo.errors import ConfigError

    try:
        return tuple(kind(v) for v in value)
    except ValueError:
        raise ConfigError(f"--{name}={','.join(value)}: expected comma-separated {kind.__name__}s") from None


def _model_kwargs():
    if FLAGS.model_kwargs is None:
        return {}
    import json

    from liverzoo.errors import ConfigError

    try:
        value = json.loads(FLAGS.model_kwargs)
    except ValueError:
        raise ConfigError(f"--model_kwargs={FLAGS.model_kwargs}: not valid JSON") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--model_kwargs={FLAGS.model_kwargs}: expected a JSON object")
    return value


def main(argv):
    from liverzoo import train_lib
    from liverzoo.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise ConfigError("--model is required (e.g. --model=residual_unet)")
    config = train_lib.TrainConfig(
        model=FLAGS.model, model_kwargs=_model_kwargs(), data=FLAGS.data, model_dir=FLAGS.model_dir,
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        schedule=FLAGS.schedule, optimizer=FLAGS.optimizer, loss=FLAGS.loss,
        class_weights=_numbers("class_weights", float), weight_decay=FLAGS.weight_decay, sampling=FLAGS.sampling,
        dsd=FLAGS.dsd, dsd_epochs=_numbers("dsd_epochs", int), input_shape=_numbers("input_shape", int),
        augment=FLAGS.augment, foreground_fraction=FLAGS.foreground_fraction, strategy=FLAGS.strategy,
        mixed_precision=FLAGS.mixed_precision, recompute=FLAGS.recompute, num_folds=FLAGS.num_folds,
        fold=FLAGS.fold, seed=FLAGS.seed, val_every=FLAGS.val_every,
        precise_bn_batches=FLAGS.precise_bn_batches, verbose=FLAGS.verbose)
    train_lib.train(config)


if __name__ == "__main__":
    # absl reports flag syntax errors itself on two lines; parse first to keep one error line.
    try:
        FLAGS(sys.argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    cli.run(main)
