"""liverzoo.training.data: data sources, k-fold regrouping, demo and NIfTI preprocessing."""
import json

import numpy as np
import pytest

from liverzoo import models, training
from liverzoo.data import demo, phantom, preprocess, splits, tfrecord
from liverzoo.errors import ConfigError, DataError
from liverzoo.training import recipes
from liverzoo.training import data as training_data
from liverzoo.training import loop as training_loop
from tests.training.helpers import PHANTOM_SPLIT, write_phantom_shards


def test_nifti_folder_with_one_case_is_rejected(tmp_path):
    hu, label = phantom.make_phantom((16, 16, 4), seed=0)
    import nibabel as nib

    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(tmp_path / "volume-0.nii.gz"))
    nib.save(nib.Nifti1Image(label, np.eye(4)), str(tmp_path / "segmentation-0.nii.gz"))
    with pytest.raises(DataError, match="at least 2"):
        training.prepare(training.TrainConfig(model="residual_unet", data=str(tmp_path), model_dir=str(tmp_path / "r")))


def test_shards_without_validation_split_need_folds(tmp_path):
    folder = write_phantom_shards(tmp_path / "all_train", split={"a": "train", "b": "train"}, shape=(16, 16, 4))
    with pytest.raises(DataError, match="no validation shards"):
        training.prepare(training.TrainConfig(model="residual_unet", data=folder, model_dir=str(tmp_path / "r")))
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=folder, num_folds=2,
                                                                 model_dir=str(tmp_path / "r")))
    assert source.case_ids == ("a", "b")


def test_k_fold_regroups_shards_by_case(shards, tmp_path):
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=shards, num_folds=3,
                                                                 fold=1, seed=5, model_dir=str(tmp_path)))
    train_files, val_files = training_data.prepare_data(config, source, str(tmp_path), log=lambda *a: None)
    split = splits.split_cases(list(PHANTOM_SPLIT), seed=5, num_folds=3, fold=1)
    got = {s: sorted(c.case_id for c in tfrecord.read_cases(f, split="all")) for s, f in (("train", train_files),
                                                                                       ("val", val_files))}
    assert got == {s: sorted(c for c, v in split.items() if v == s) for s in ("train", "val")}


def test_demo_data_is_drawn_at_one_in_plane_spacing(tmp_path):
    """Every patient's slices at the demo's 3 mm a pixel, whatever the scan's field of view."""
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", input_shape=(32, 32, 1),
                                                                 model_dir=str(tmp_path)))
    assert config.inplane_spacing == recipes.DEMO_INPLANE_SPACING == 3.0
    assert training_data.data_plane(config, source) == (0, 3.0)
    train_files, val_files = training_data.prepare_data(config, source, str(tmp_path), log=lambda *a: None)
    val = list(tfrecord.read_cases(val_files, split="all"))
    assert [c.case_id for c in val] == ["slab"]  # the fixed demo split, by patient
    assert set(np.unique(val[0].label)) == {0, 1}
    cases = {c.case_id: c for c in tfrecord.read_cases(train_files, split="all")}
    assert sorted(cases) == ["dcmqi", "lits117", "totalseg"]
    planes = {}
    for case in list(cases.values()) + val:
        ct = demo.load_demo_volume(case.case_id)
        mm = np.asarray(ct.array.shape[:2]) * ct.spacing[:2] / case.image.shape[:2]
        np.testing.assert_allclose(mm, 3.0, rtol=0.02, err_msg=case.case_id)
        planes[case.case_id] = case.image.shape[:2]
        # The pixels tools/predict.py feeds the model for this scan (smoothed before they
        # shrink): a model trained on unsmoothed planes met other images at inference.
        fed, _, _ = preprocess.prepare_volume(ct.array, ct.spacing, config.preset, inplane_spacing=3.0)
        np.testing.assert_allclose(case.image, fed, atol=1e-6, err_msg=case.case_id)
    # 500, 415 and 366 x 303 mm fields of view; LiTS 117 at its estimated 1.5 mm.
    assert planes == {"slab": (167, 167), "dcmqi": (138, 138), "totalseg": (122, 101), "lits117": (64, 64)}
    # Intensities of the paper's window without its per-volume equalisation (recipes.DEMO_FIXED_WINDOW).
    manifest = json.loads((tmp_path / "data" / "residual_unet_window-3mm" / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "residual_unet_window" and manifest["preset"]["normalization"] == "linear"


def test_demo_data_at_the_model_input_size_with_inplane_spacing_0(tmp_path):
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", input_shape=(32, 32, 1),
                                                                 inplane_spacing=0, model_dir=str(tmp_path)))
    assert config.inplane_spacing is None and training_data.data_plane(config, source) == (32, None)
    _, val_files = training_data.prepare_data(config, source, str(tmp_path), log=lambda *a: None)
    assert next(iter(tfrecord.read_cases(val_files, split="all"))).image.shape[:2] == (32, 32)


def test_inplane_spacing_is_refused_for_tfrecord_shards(shards, tmp_path):
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=shards, inplane_spacing=2.0,
                                                                 model_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="--inplane_spacing with TFRecord shards"):
        training_data.data_plane(config, source)
    with pytest.raises(ConfigError, match="--inplane_spacing must be a positive float"):
        training.prepare(training.TrainConfig(model="residual_unet", inplane_spacing=-1.0, model_dir=str(tmp_path)))


def test_another_preset_is_refused_for_tfrecord_shards(shards, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="--preset=residual_unet_window with TFRecord shards written with preset "
                                          "'lw_hcn'"):
        training.prepare(training.TrainConfig(model="residual_unet", data=shards, preset="residual_unet_window",
                                              model_dir=str(run)))
    assert not run.exists()  # refused before anything is written
    training.prepare(training.TrainConfig(model="residual_unet", data=shards, preset="lw_hcn", model_dir=str(run)))


def test_a_run_on_tfrecord_shards_records_their_preset_and_plane(shards, tmp_path):
    """The phantom shards were written with lw_hcn's preset, keeping the slices' own plane
    (inplane_size 0): a residual_unet run on them must say so in config.json, or
    tools/predict.py and the exporter would equalise histograms on a 256 plane instead."""
    from liverzoo import runtime

    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=shards,
                                                              model_dir=str(tmp_path)))
    assert config.preset == "lw_hcn" != models.SPECS["residual_unet"].preset
    assert training_data.data_plane(config, source) == (0, None)
    training_loop._write_run_config(config, source)
    checkpoint = str(tmp_path / "best.keras")  # the runtime reads the config.json beside it
    assert runtime.training_preset(checkpoint) == "lw_hcn"
    assert runtime.training_plane(checkpoint)[:2] == (0, None)


def test_a_run_on_shards_at_a_target_spacing_records_that_plane(tmp_path):
    """`make_tfrecords --target_spacing=3,3,` resamples every scan to 3 mm a pixel: config.json
    must say so, or predict would feed the model each scan's own plane."""
    from liverzoo import runtime

    folder = write_phantom_shards(tmp_path / "shards", target_spacing=(3.0, 3.0, None))
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=folder,
                                                              model_dir=str(tmp_path / "run")))
    assert training_data.data_plane(config, source) == (0, 3.0)
    (tmp_path / "run").mkdir()
    training_loop._write_run_config(config, source)
    assert runtime.training_plane(str(tmp_path / "run" / "best.keras"))[:2] == (0, 3.0)
    # An anisotropic plane has no single spacing to draw new CT at: each scan's plane, as before.
    folder = write_phantom_shards(tmp_path / "aniso", target_spacing=(3.0, 2.0, None))
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=folder,
                                                              model_dir=str(tmp_path / "run2")))
    assert training_data.data_plane(config, source) == (0, None)


def test_nifti_folder_is_preprocessed_into_shards_with_a_held_out_case(tmp_path):
    import nibabel as nib

    for k in range(3):
        hu, label = phantom.make_phantom((24, 24, 6), seed=k)
        affine = np.diag([1.5, 1.5, 2.5, 1.0])
        nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / f"volume-{k}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(tmp_path / f"segmentation-{k}.nii.gz"))
    config, source, _ = training.prepare(training.TrainConfig(model="residual_unet", data=str(tmp_path),
                                                                 model_dir=str(tmp_path / "run")))
    assert source.kind == "nifti" and source.case_ids == ("volume-0", "volume-1", "volume-2")
    train_files, val_files = training_data.prepare_data(config, source, str(tmp_path / "run"), log=lambda *a: None)
    train_ids = [c.case_id for c in tfrecord.read_cases(train_files, split="all")]
    val_ids = [c.case_id for c in tfrecord.read_cases(val_files, split="all")]
    assert len(val_ids) == 1 and sorted(train_ids + val_ids) == list(source.case_ids)
    manifest = json.loads((tmp_path / "run" / "data" / "residual_unet-preset" / "manifest.json").read_text())
    assert manifest["preset"]["name"] == "residual_unet"  # the model's preprocessing
