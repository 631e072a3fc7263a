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


def test_an_empty_patient_list_is_refused():
    """`--patients=` gave an empty list, which ran every fold instead of an error."""
    for patients in ([], [""]):
        with pytest.raises(ConfigError, match="--patients=: an empty patient name; leave the flag out"):
            crossval.leave_one_patient_out(training.TrainConfig(model="residual_unet"), patients=patients)


@pytest.mark.parametrize("flags, message", [
    (dict(preset="bogus"), "--preset: unknown preset 'bogus'"),
    (dict(model_kwargs={"foo": 1}), "--model_kwargs: residual_unet has no argument foo"),
])
def test_bad_flags_are_refused_before_the_first_fold(flags, message, tmp_path):
    lines = []
    with pytest.raises(ConfigError, match=message):
        crossval.leave_one_patient_out(training.TrainConfig(model="residual_unet", model_dir=str(tmp_path / "cv"),
                                                            **flags), log=lines.append)
    assert lines == [] and not (tmp_path / "cv").exists()  # no "fold 0: training on ..." first


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


@pytest.mark.parametrize("flag, message", [
    ("--learning_rate=0", "error: --learning_rate must be a positive float, got 0.0"),
    ("--preset=nope", "error: --preset: unknown preset 'nope'"),
    ("--input_shape=128,128,2", "error: --input_shape: the stack size T of a 2.5D model must be odd, got 2"),
    ("--input_shape=128,x,1", "error: --input_shape=128,x,1: expected comma-separated ints"),
])
def test_crossval_cli_passes_recipe_flags_on(flag, message, tmp_path):
    """tools/crossval.py hands --learning_rate, --preset and --input_shape to the trainer's checks: a bad value is
    one error line, a non-zero exit and no run folder."""
    import os

    from tests.conftest import run_tool

    result = run_tool("crossval", "--model=residual_unet", flag, f"--model_dir={tmp_path / 'cv'}", timeout=300,
                      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and len(errors) == 1 and errors[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cv").exists()
