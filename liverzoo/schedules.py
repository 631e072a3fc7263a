"""Learning-rate schedules of the zoo's papers (`--schedule`).

Keras already ships each of these schedules as a serializable `LearningRateSchedule`; this
module only maps the papers' wording onto them, so a saved optimizer reloads with stock
Keras and the schedule follows `optimizer.iterations` (which `BackupAndRestore` restores):

| name | formula (step = optimizer iteration) | paper |
|---|---|---|
| `poly` | `lr0 * (1 - step / total_steps) ** 0.9` | 001_bb2d5e6c0ac559d5.txt (LW-HCN) |
| `cosine` | `lr0 * 0.5 * (1 + cos(pi * step / total_steps))`, per batch | 003_1722e7be9c09b159.txt (3DYNet) |
| `exponential` | `lr0 * 0.9 ** floor(step / steps_per_epoch)` (x0.9 per epoch) | 004_e35520e2e41b14d6.txt (LV-Net) |
| `constant` | `lr0` | 002_7138868b57b69ed8.txt (residual U-Net: plain Adam) |
"""
import keras

from liverzoo.errors import ConfigError

POLY_POWER = 0.9
EPOCH_DECAY_RATE = 0.9

SCHEDULES = ("poly", "cosine", "exponential", "constant")


def build(name, initial_learning_rate, *, total_steps, steps_per_epoch, decay_rate=EPOCH_DECAY_RATE):
    """Returns the learning-rate schedule `name` (a float for "constant").

    Args:
        name: one of `SCHEDULES`.
        initial_learning_rate: lr at step 0.
        total_steps: number of optimizer steps of the whole run (poly, cosine).
        steps_per_epoch: optimizer steps per epoch (exponential).
        decay_rate: factor applied after each epoch by "exponential".

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`, or the float lr for "constant".

    Raises:
        ConfigError: unknown name or non-positive step counts / learning rate.

    Example:
        >>> lr = build("poly", 1e-3, total_steps=1000, steps_per_epoch=100)
        >>> optimizer = keras.optimizers.Adam(lr)
    """
    if name not in SCHEDULES:
        raise ConfigError(f"--schedule={name!r} is not one of {', '.join(SCHEDULES)}")
    if not initial_learning_rate > 0:
        raise ConfigError(f"--learning_rate must be > 0, got {initial_learning_rate}")
    if total_steps < 1 or steps_per_epoch < 1:
        raise ConfigError(f"schedule {name!r} needs total_steps >= 1 and steps_per_epoch >= 1")
    lr = float(initial_learning_rate)
    if name == "poly":
        return keras.optimizers.schedules.PolynomialDecay(lr, total_steps, end_learning_rate=0.0, power=POLY_POWER)
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, total_steps, alpha=0.0)
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch, decay_rate, staircase=True)
    return lr
