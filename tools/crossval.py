"""Leave-one-patient-out cross-validation on the embedded real patients.

python tools/crossval.py --model=residual_unet trains one model per held-out whole-abdomen
patient with the demo recipe (runs/crossval_MODEL/PATIENT/) and prints the table of their
liver (and tumor) Dice through the predict path (liverzoo/training/crossval.py).
"""
import json

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

from liverzoo import losses, models, schedules, training  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402
from liverzoo.training import crossval  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("model", None, sorted(models.MODELS), "Zoo model.")
flags.DEFINE_string("model_dir", None, "Parent folder of the per-patient runs (default runs/crossval_MODEL).")
flags.DEFINE_integer("epochs", None, "Epochs per fold (default: the demo's).", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: the demo's).", lower_bound=1)
flags.DEFINE_string("model_kwargs", None, "Builder options as JSON (e.g. a narrower model).")
flags.DEFINE_integer("seed", 0, "Seed of weights, sampling and the fold order.")
flags.DEFINE_float("inplane_spacing", None, "Working plane's mm per pixel (default: the demo's 3; 0: every slice "
                   "stretched to the model's input).", lower_bound=0.0)
flags.DEFINE_enum("schedule", None, list(schedules.SCHEDULES), "Learning-rate schedule (default: the demo's).")
flags.DEFINE_float("learning_rate", None, "Peak learning rate (default: the demo's; residual_unet 3e-3).")
flags.DEFINE_string("preset", None, "Intensity preprocessing preset (liverzoo.data.preprocess.PRESETS; default: "
                    "the model's fixed-window variant where it has one, as the demo, e.g. residual_unet_window; "
                    "--preset=residual_unet gives the paper's histogram equalisation).")
flags.DEFINE_enum("loss", None, list(losses.LOSSES), "Loss (default: the demo's dice_ce).")
flags.DEFINE_list("input_shape", None, "Model input without batch, H,W,T (default: the demo's; residual_unet "
                  "128,128,5; 128,128,1 is the paper's single slice).")
flags.DEFINE_list("patients", None, "Held-out patients to run (default: every whole-abdomen patient).")
flags.mark_flags_as_required(["model"])


def main(argv):
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        kwargs = json.loads(FLAGS.model_kwargs) if FLAGS.model_kwargs else {}
    except ValueError:
        raise ConfigError(f"--model_kwargs={FLAGS.model_kwargs}: not valid JSON") from None
    input_shape = cli.number_list_flag("input_shape", FLAGS.input_shape, int)
    crossval.leave_one_patient_out(training.TrainConfig(
        model=FLAGS.model, model_dir=FLAGS.model_dir, epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
        model_kwargs=kwargs, seed=FLAGS.seed, inplane_spacing=FLAGS.inplane_spacing, schedule=FLAGS.schedule,
        learning_rate=FLAGS.learning_rate, preset=FLAGS.preset, loss=FLAGS.loss, input_shape=input_shape,
        verbose=2), patients=FLAGS.patients)


if __name__ == "__main__":
    cli.run(main)
