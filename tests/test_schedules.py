"""liverzoo.schedules against the papers' closed forms."""
import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo import schedules  # noqa: E402
from liverzoo.errors import ConfigError  # noqa: E402

LR0, TOTAL, PER_EPOCH = 1e-3, 100, 10

CLOSED_FORMS = {
    # LW-HCN: lr = lr0 * (1 - iterations / total_iterations) ** 0.9
    "poly": lambda s: LR0 * (1 - min(s, TOTAL) / TOTAL) ** 0.9,
    # 3DYNet: cosine annealing per batch (SGDR without restarts) down to 0
    "cosine": lambda s: LR0 * 0.5 * (1 + math.cos(math.pi * min(s, TOTAL) / TOTAL)),
    # LV-Net: x0.9 at the end of each epoch
    "exponential": lambda s: LR0 * 0.9 ** (s // PER_EPOCH),
}
STEPS = [0, 1, 9, 10, 11, 37, 50, 99, 100, 130]


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_schedule_matches_closed_form(name):
    schedule = schedules.build(name, LR0, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
    got = [float(schedule(step)) for step in STEPS]
    want = [CLOSED_FORMS[name](step) for step in STEPS]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * LR0)  # float32 near 0


def test_exponential_is_flat_within_an_epoch():
    schedule = schedules.build("exponential", LR0, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    assert float(schedule(10)) == float(schedule(19)) < float(schedule(9))


def test_constant_is_the_learning_rate():
    assert schedules.build("constant", 3e-4, total_steps=TOTAL, steps_per_epoch=PER_EPOCH) == 3e-4


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_schedule_survives_optimizer_serialization(name):
    schedule = schedules.build(name, LR0, total_steps=TOTAL, steps_per_epoch=PER_EPOCH)
    config = keras.optimizers.serialize(keras.optimizers.Adam(schedule))
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.deserialize(config).get_config()["learning_rate"])
    for step in (0, 33, 77):
        np.testing.assert_allclose(float(clone(step)), float(schedule(step)), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="step"), "--schedule"),
        (dict(name="poly", initial_learning_rate=0.0), "--learning_rate"),
        (dict(name="poly", total_steps=0), "total_steps"),
    ],
)
def test_bad_schedule_arguments(kwargs, match):
    args = dict(name="poly", initial_learning_rate=LR0, total_steps=TOTAL, steps_per_epoch=PER_EPOCH) | kwargs
    with pytest.raises(ConfigError, match=match):
        schedules.build(args.pop("name"), args.pop("initial_learning_rate"), **args)
