"""liverzoo.training.config: recipe defaults, option checks, stage plans, resuming a model_dir."""
import os

import pytest

from liverzoo import models, training
from liverzoo.errors import ConfigError, DataError


# --- Recipes: the papers' values (written out here, not read back from RECIPES) -------------

PAPER_VALUES = [
    # model, optimizer, lr, schedule, loss, deep supervision, weight decay, sampling, dsd
    ("ds_nnunet", "sgd", 1e-2, "poly", "dice_ce", "halving", 0.0, "dense_sparse", True),
    ("lw_hcn", "adam", 1e-3, "poly", "dice_ce", None, 0.0, "volume", False),
    ("residual_unet", "adam", 1e-3, "constant", "weighted_ce", None, 0.0, "dense", False),
    ("lv_net", "adam", 1e-3, "exponential", "ce", "lv_net", 1e-5, "volume", False),
    ("ynet3d", "adam", 1e-4, "cosine", "dice_ce", None, 0.0, "volume", False),
]


@pytest.mark.parametrize("row", PAPER_VALUES, ids=[r[0] for r in PAPER_VALUES])
def test_recipe_defaults_follow_the_papers(row, tmp_path):
    name, optimizer, lr, schedule, loss, ds, wd, sampling, dsd = row
    if name not in models.MODELS:
        pytest.skip(f"{name} is not registered yet")
    config = training.resolve(training.TrainConfig(model=name, data=str(tmp_path)))
    got = (config.optimizer, config.learning_rate, config.schedule, config.loss, config.deep_supervision,
           config.weight_decay, config.sampling, config.dsd)
    assert got == (optimizer, lr, schedule, loss, ds, wd, sampling, dsd)


def test_paper_specific_settings():
    lw = training.resolve(training.TrainConfig(model="lw_hcn", data="x"))
    assert lw.input_shape == (12, 256, 256, 1) and lw.batch_size == 6 and lw.recompute  # paper 001
    ds = training.resolve(training.TrainConfig(model="ds_nnunet", data="x", epochs=1000))
    assert ds.dsd_epochs == (400, 600) and ds.input_shape[-1] == 7  # paper 000: 400 + 600, T = 7
    ru = training.RECIPES["residual_unet"].augment
    assert ru["rotation"] == 180 and ru["zoom"] == 0.2 and ru["elastic"] > 0  # paper 002


def test_flags_override_the_recipe():
    config = training.resolve(training.TrainConfig(
        model="lw_hcn", data="x", learning_rate=5e-4, schedule="cosine", loss="dice", recompute=False,
        input_shape=(8, 64, 64, 1), batch_size=3))
    assert (config.learning_rate, config.schedule, config.loss, config.recompute) == (5e-4, "cosine", "dice", False)
    assert config.input_shape == (8, 64, 64, 1) and config.batch_size == 3


def test_demo_defaults_are_small():
    config = training.resolve(training.TrainConfig(model="residual_unet"))
    # The demo's 2.5D stack (five slices) on the model's default plane; other data: the paper's T.
    assert config.input_shape == (128, 128, training.recipes.DEMO_STACK["residual_unet"]) == (128, 128, 5)
    assert models.SPECS["residual_unet"].default_input_shape == (128, 128, 1)
    assert training.resolve(training.TrainConfig(model="residual_unet", input_shape=(64, 64, 1))).input_shape == (64, 64, 1)
    assert training.resolve(training.TrainConfig(model="ds_nnunet")).input_shape == models.SPECS["ds_nnunet"].default_input_shape
    assert config.epochs == training.DEMO_EPOCHS and config.model_dir == os.path.join("runs", "residual_unet")
    # The demo's short runs decay the rate to 0 (the paper's constant rate swung from epoch to epoch).
    assert config.schedule == "cosine" and config.inplane_spacing == 3.0 and config.val_every == 2
    assert training.resolve(training.TrainConfig(model="residual_unet", data="x")).val_every == 1
    assert training.resolve(training.TrainConfig(model="residual_unet", schedule="constant")).schedule == "constant"


def test_demo_intensities_and_loss(tmp_path):
    """The demo trains with the fixed-window variant of a per-volume preset and Dice + CE;
    data of the user's own keeps the paper's preset and loss; flags override both."""
    demo = training.resolve(training.TrainConfig(model="residual_unet"))
    assert (demo.preset, demo.loss) == ("residual_unet_window", "dice_ce")
    assert training.resolve(training.TrainConfig(model="lv_net")).preset == "lv_net_window"
    assert training.resolve(training.TrainConfig(model="ynet3d")).preset == "ynet3d"  # already a fixed window
    paper = training.resolve(training.TrainConfig(model="residual_unet", data=str(tmp_path)))
    assert (paper.preset, paper.loss) == ("residual_unet", "weighted_ce")
    chosen = training.resolve(training.TrainConfig(model="residual_unet", preset="residual_unet", loss="weighted_ce"))
    assert (chosen.preset, chosen.loss) == ("residual_unet", "weighted_ce")
    assert '"preset": "residual_unet_window"' in demo.to_json()  # what predict and export read back


def test_demo_learning_rate(tmp_path):
    """The demo's residual U-Net trains at 3e-3 (its 180 steps, not the paper's 100,000); the
    user's own data keeps the paper's 1e-3; a recipe without a demo rate keeps its own; the flag wins."""
    assert training.resolve(training.TrainConfig(model="residual_unet")).learning_rate == 3e-3
    assert training.resolve(training.TrainConfig(model="residual_unet", data=str(tmp_path))).learning_rate == 1e-3
    assert training.resolve(training.TrainConfig(model="lv_net")).learning_rate == 1e-3
    assert training.resolve(training.TrainConfig(model="residual_unet", learning_rate=1e-4)).learning_rate == 1e-4


BAD_CONFIGS = [
    (dict(model="no_such_model"), ConfigError, "--model='no_such_model' is not a zoo model"),
    (dict(epochs=0), ConfigError, "--epochs must be a positive"),
    (dict(batch_size=-2), ConfigError, "--batch_size"),
    (dict(learning_rate=0.0), ConfigError, "--learning_rate"),
    (dict(schedule="step"), ConfigError, "--schedule='step'"),
    (dict(loss="focal"), ConfigError, "--loss='focal'"),
    (dict(preset="unet_9000"), ConfigError, "--preset: unknown preset 'unet_9000'"),
    (dict(loss="weighted_ce", class_weights=(1.0, 2.0)), ConfigError, "--class_weights has 2 entries"),
    (dict(sampling="random"), ConfigError, "--sampling='random'"),
    (dict(strategy="tpu"), ConfigError, "--strategy='tpu'"),
    (dict(input_shape=(64, 64)), ConfigError, "--input_shape"),
    (dict(input_shape=(64, 64, 2)), ConfigError, "must be odd"),
    (dict(num_folds=3, fold=3), ConfigError, "--fold"),
    (dict(foreground_fraction=1.5), ConfigError, "--foreground_fraction"),
    (dict(dsd_epochs=(2, 3)), ConfigError, "--dsd_epochs needs --dsd"),
    (dict(dsd=True, epochs=4, dsd_epochs=(1, 2)), ConfigError, "do not add up"),
    (dict(dsd=True, sampling="sparse"), ConfigError, "--dsd trains with"),
    (dict(model="lw_hcn", sampling="dense"), ConfigError, "is 3D"),
    (dict(model="lw_hcn", dsd=True), ConfigError, "--dsd is for 2.5D"),
    (dict(model_kwargs={"width": 3}), ConfigError, "has no argument width"),
    (dict(model_kwargs={"input_shape": (1, 1, 1)}), ConfigError, "cannot set input_shape"),
    (dict(strategy="multi_worker"), ConfigError, "TF_CONFIG"),
    (dict(data="/no/such/folder"), DataError, "/no/such/folder"),
    (dict(data="/no/such/shards-*.tfrecord.gz"), DataError, "no TFRecord shards"),
]


@pytest.mark.parametrize("overrides, error, match", BAD_CONFIGS, ids=[m for _, _, m in BAD_CONFIGS])
def test_bad_options_fail_before_anything_starts(overrides, error, match, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = dict(model="residual_unet", model_dir=str(tmp_path / "run")) | overrides
    with pytest.raises(error, match=match.replace("[", r"\[").replace("(", r"\(")):
        training.prepare(training.TrainConfig(**args))
    assert not (tmp_path / "run").exists()  # nothing written


def test_stage_plan():
    plain = training.resolve(training.TrainConfig(model="residual_unet", epochs=5, sampling="sparse"))
    assert training.stage_plan(plain) == [training.Stage("sparse", 0, 5)]
    dsd = training.resolve(training.TrainConfig(model="residual_unet", epochs=10, dsd=True))
    assert training.stage_plan(dsd) == [training.Stage("dense_sparse", 0, 4), training.Stage("dense", 4, 10)]
    custom = training.resolve(training.TrainConfig(model="residual_unet", dsd=True, dsd_epochs=(3, 2)))
    assert custom.epochs == 5 and training.stage_plan(custom)[1] == training.Stage("dense", 3, 5)


def test_a_model_dir_is_resumed_only_with_the_same_settings(tmp_path):
    first = training.resolve(training.TrainConfig(model="residual_unet", model_dir=str(tmp_path)))
    (tmp_path / "config.json").write_text(first.to_json())
    (tmp_path / "backup").mkdir()
    training.prepare(training.TrainConfig(model="residual_unet", model_dir=str(tmp_path), epochs=20))  # longer: ok
    with pytest.raises(ConfigError, match=r"holds a run with other settings \(learning_rate differ\)"):
        training.prepare(training.TrainConfig(model="residual_unet", model_dir=str(tmp_path), learning_rate=1e-4))


def test_demo_augmentation_keeps_the_liver_on_the_right(tmp_path):
    # A few patients must teach where the liver is: no mirroring, no large rotations.
    demo = training.resolve(training.TrainConfig(model="residual_unet"))
    assert demo.augmentation == training.recipes.DEMO_AUGMENT
    assert not demo.augmentation.get("flip_axes") and demo.augmentation["rotation"] <= 30
    # On the user's data the paper's recipe holds (002: rotations up to 180 degrees), and
    # augment=False switches it off.
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text("{}")
    paper = training.resolve(training.TrainConfig(model="residual_unet", data=str(shards)))
    assert paper.augmentation == training.RECIPES["residual_unet"].augment
    assert training.resolve(training.TrainConfig(model="residual_unet", augment=False)).augmentation == {}
