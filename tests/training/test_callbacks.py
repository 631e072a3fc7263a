"""liverzoo.training.callbacks: Dice per case, atomic saves, the stage code in the epoch logs.

The validation callback's whole run (best/last models, history) is covered by test_loop.py.
"""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from liverzoo.training import callbacks  # noqa: E402


def test_case_dice_counts_tumor_as_liver():
    label = np.zeros((4, 4, 2), np.uint8)
    label[:2, :2] = 1
    label[0, 0] = 2
    probs = np.eye(3, dtype=np.float32)[label]  # a perfect prediction
    assert callbacks.case_dice(probs, label) == (1.0, 1.0)
    probs = np.eye(3, dtype=np.float32)[np.where(label == 2, 1, label)]  # tumor called liver
    liver, tumor = callbacks.case_dice(probs, label)
    assert liver == 1.0 and tumor == 0.0


def test_saves_are_atomic_and_leave_no_temporary_files(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    callbacks.save_model_atomic(model, str(tmp_path / "best.keras"))
    callbacks.write_text_atomic(str(tmp_path / "best.json"), "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.keras"]
    reloaded = keras.models.load_model(tmp_path / "best.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.get_weights()[0], model.get_weights()[0])


def test_stage_logger_writes_the_sampling_code():
    logs = {}
    callbacks.StageLogger("dense_sparse").on_epoch_end(0, logs)
    assert logs == {"sampling": 2.0}
