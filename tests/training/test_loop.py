"""liverzoo.training.loop: one-step training of every model, DSD stages, mixed precision.

The SIGKILL-and-resume test is in tests/tools/test_train.py (it runs the CLI); the
distributed tests are in tests/training/test_distributed.py.
"""
import json
import warnings

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo import models, training  # noqa: E402
from liverzoo.data import tfrecord  # noqa: E402
from tests.training.helpers import tiny_config  # noqa: E402


@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_one_step_training_of_every_model(model, shards, tmp_path):
    # One epoch of one step cannot hold DSD's two stages (tested below).
    config = tiny_config(model, shards, tmp_path, dsd=False if models.SPECS[model].kind == "2d" else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = training.train(config, log=lambda *a: None)
    # Keras's default fit(shuffle=True) only warns on a tf.data dataset (which shuffles itself).
    assert not [w for w in caught if "shuffle" in str(w.message)]
    assert len(result["history"]) == 1 and np.isfinite(result["history"][0]["loss"])
    assert set(result["final"]["cases"]) == {"phantom2"}
    for key in ("liver_dice", "tumor_dice"):
        assert 0.0 <= result["final"][key] <= 1.0
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"] == model and saved["input_shape"] == list(config.input_shape)
    reloaded = keras.models.load_model(tmp_path / "best.keras", safe_mode=True, compile=False)
    assert tuple(reloaded.input_shape[1:]) == tuple(config.input_shape)
    assert (tmp_path / "last.keras").is_file() and (tmp_path / "backup" / "latest.weights.h5").is_file()


def test_dsd_switches_sampling_at_the_configured_epoch(shards, tmp_path, monkeypatch):
    """Stage 1 reads dense_sparse stacks, stage 2 dense ones, switching after dsd_epochs[0]."""
    events = []
    make_dataset = tfrecord.make_dataset

    def spy(*args, **kwargs):
        events.append(("dataset", kwargs["mode"]))
        return make_dataset(*args, **kwargs)

    def log(message):
        if message.startswith("epoch "):
            events.append(("epoch", int(message.split(":")[0].split()[1])))

    monkeypatch.setattr(tfrecord, "make_dataset", spy)
    # precise_bn_batches=0: no extra dense dataset for BatchNorm statistics in the event list.
    config = tiny_config("residual_unet", shards, tmp_path, input_shape=(32, 32, 3), dsd=True, dsd_epochs=(2, 1),
                         epochs=None, precise_bn_batches=0)
    result = training.train(config, log=log)
    assert events == [("dataset", "dense_sparse"), ("epoch", 1), ("epoch", 2), ("dataset", "dense"), ("epoch", 3)]
    assert [h["sampling"] for h in result["history"]] == [2.0, 2.0, 0.0]
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]


def test_validation_every_other_epoch_keeps_the_history_aligned(shards, tmp_path):
    """--val_every=2 over 3 epochs validates after epochs 2 and 3 (the last); epoch 1's
    history row says so with NaN instead of shifting the later scores (the demo's default)."""
    import csv

    validated = []
    config = tiny_config("residual_unet", shards, tmp_path, epochs=3, val_every=2, precise_bn_batches=0)
    result = training.train(config, log=lambda m: validated.append(m) if m.startswith("epoch ") else None)
    assert [int(m.split(":")[0].split()[1]) for m in validated] == [2, 3]
    history = result["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and np.isnan(history[0]["val_liver_dice"])
    assert [h["val_liver_dice"] for h in history[1:]] == [json.loads(line)["liver_dice"] for line in
                                                          (tmp_path / "validation.jsonl").read_text().splitlines()]
    with open(tmp_path / "history.csv") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_mixed_precision_trains_with_float32_outputs_and_restores_the_policy(shards, tmp_path):
    before = keras.config.dtype_policy().name
    config = tiny_config("residual_unet", shards, tmp_path, mixed_precision=True)
    result = training.train(config, log=lambda *a: None)
    assert np.isfinite(result["history"][0]["loss"])
    assert keras.config.dtype_policy().name == before
    model = keras.models.load_model(tmp_path / "last.keras", compile=False)
    assert model.layers[1].dtype_policy.name == "mixed_float16" and model.outputs[0].dtype == "float32"


def test_model_dir_that_cannot_be_a_folder_is_one_data_error(shards, tmp_path):
    from liverzoo.errors import DataError

    (tmp_path / "file.txt").write_text("x")
    for model_dir in (tmp_path / "file.txt", tmp_path / "file.txt" / "run"):
        with pytest.raises(DataError, match=f"{model_dir}: output folder is not writable"):
            training.train(tiny_config("residual_unet", shards, model_dir), log=lambda *a: None)
