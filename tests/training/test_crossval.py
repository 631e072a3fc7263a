"""Leave-one-patient-out folds: no patient in both parts, every whole-abdomen patient held out
once, scored through the predict path; bad fold counts refused."""
import pytest

from liverzoo import training
from liverzoo.data import demo
from liverzoo.errors import ConfigError
from liverzoo.training import crossval


def test_folds_never_put_a_patient_in_train_and_validation():
    folds = crossval.patient_folds(seed=0)
    assert sorted(held for _, held, _ in folds) == sorted(demo.DEMO_SPLIT)
    for _, held, split in folds:
        train = {demo.PATIENT_OF_FILE.get(c, c) for c, part in split.items() if part == "train"}
        assert train == set(demo.DEMO_SPLIT) - {held}
        if held in demo.FULL_FIELD_OF_VIEW:
            demo.check_patient_split(split)


def test_more_folds_than_patients_is_refused():
    with pytest.raises(ConfigError, match="fold"):
        training.prepare(training.TrainConfig(model="residual_unet", num_folds=5, model_dir="/nonexistent/x"))


def test_crossval_needs_the_demo_patients():
    with pytest.raises(ConfigError, match="embedded demo patients"):
        crossval.leave_one_patient_out(training.TrainConfig(model="residual_unet", data="/some/folder"))


def test_unknown_held_out_patient_is_refused():
    with pytest.raises(ConfigError, match="lits117 is not a whole-abdomen"):
        crossval.leave_one_patient_out(training.TrainConfig(model="residual_unet"), patients=["lits117"])


def test_leave_one_patient_out_end_to_end(tmp_path):
    lines = []
    result = crossval.leave_one_patient_out(
        training.TrainConfig(model="residual_unet", model_kwargs={"base_filters": 4, "depth": 2},
                             input_shape=(32, 32, 1), epochs=1, steps_per_epoch=1, batch_size=2, verbose=0,
                             strategy="one_device", precise_bn_batches=0, model_dir=str(tmp_path)),
        patients=["dcmqi"], log=lines.append)
    assert [r["patient"] for r in result["rows"]] == ["dcmqi"]
    for row in result["rows"]:
        assert 0.0 <= row["liver_dice"] <= 1.0 and row["tumor_dice"] is None
        assert (tmp_path / row["patient"] / "last.keras").exists()
    assert result["liver_worst"] == min(r["liver_dice"] for r in result["rows"])
    assert lines[-1].startswith("| **mean / worst**")
