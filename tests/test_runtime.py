"""liverzoo.runtime: one loader for .keras / SavedModel / .tflite, bad input named, and the
file handling of tools/predict.py."""
import numpy as np
import pytest

from liverzoo import runtime
from liverzoo.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def three_formats(tiny_model_path, tmp_path_factory):
    """The tiny model at a fixed 64x64 input as .keras, SavedModel and fp32 .tflite (zoo metadata)."""
    import keras

    from liverzoo import export

    x = keras.Input((64, 64, 1))
    fixed = keras.Model(x, keras.saving.load_model(tiny_model_path)(x), name="tiny")
    folder = tmp_path_factory.mktemp("formats")
    fixed.save(folder / "tiny.keras")
    export.export_saved_model(fixed, str(folder / "saved"))
    export.write_tflite(export.convert_tflite(fixed, "none", metadata=export.zoo_metadata(fixed, name="residual_unet")),
                        str(folder / "tiny.tflite"))
    paths = {"keras": folder / "tiny.keras", "saved_model": folder / "saved", "tflite": folder / "tiny.tflite"}
    return fixed, paths


@pytest.mark.parametrize("fmt, atol", [("keras", 1e-5), ("saved_model", 1e-5), ("tflite", 1e-4)])
def test_every_format_predicts_like_keras(three_formats, fmt, atol):
    model, paths = three_formats
    segmenter = runtime.load_segmenter(paths[fmt], "residual_unet")
    assert segmenter.format == fmt and segmenter.kind == "2d" and segmenter.preset == "residual_unet"
    assert tuple(segmenter.input_shape)[-1] == 1
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(segmenter.predict(x), np.asarray(model(x, training=False)), atol=atol)


def test_savedmodel_and_tflite_give_the_keras_mask(three_formats, ct_volume):
    """The three model formats segment the same CT alike (fixed 64x64 input: tiled plane)."""
    from liverzoo.inference import segment

    model, paths = three_formats
    reference = segment(model, ct_volume, model_name="residual_unet")
    assert reference.any()

    saved = runtime.load_segmenter(paths["saved_model"])
    with pytest.raises(ConfigError, match="pass --model"):
        saved.segment(ct_volume)
    np.testing.assert_array_equal(runtime.load_segmenter(paths["saved_model"], "residual_unet").segment(ct_volume),
                                  reference)

    lite_model = runtime.load_segmenter(paths["tflite"])  # kind and preset from the file's metadata
    assert lite_model.kind == "2d" and lite_model.preset == "residual_unet" and lite_model.name == "residual_unet"
    assert np.mean(lite_model.segment(ct_volume) == reference) > 0.999


def test_model_names(tiny_model_path):
    assert runtime.load_segmenter(tiny_model_path, "residual_unet").preset == "residual_unet"
    unnamed = runtime.load_segmenter(tiny_model_path)
    assert unnamed.name == "tiny" and unnamed.preset is None and unnamed.kind == "2d"
    with pytest.raises(ConfigError, match="not a zoo name; pass --model"):
        unnamed.require_preprocessing()
    with pytest.raises(ConfigError, match="--model 'nope': not a zoo model"):
        runtime.load_segmenter(tiny_model_path, "nope")
    assert runtime.load_segmenter(tiny_model_path, preset="lw_hcn").preset == "lw_hcn"


def test_bad_model_files_are_named(tmp_path):
    cases = [
        (tmp_path / "missing.keras", ConfigError, "missing.keras: no such file or folder"),
        (tmp_path / "model.h5", ConfigError, r"model.h5: unknown model format; expected a .keras file"),
        (tmp_path / "junk.keras", DataError, "junk.keras: cannot load the Keras model"),
        (tmp_path / "junk.tflite", DataError, "junk.tflite: not a TFLite flatbuffer"),
        (tmp_path / "empty", ConfigError, "empty: a folder without saved_model.pb is not a SavedModel"),
    ]
    (tmp_path / "model.h5").write_bytes(b"")
    (tmp_path / "junk.keras").write_bytes(b"not a zip archive")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    (tmp_path / "empty").mkdir()
    for path, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            runtime.load_segmenter(path)
        assert "\n" not in str(caught.value)


def test_training_plane_from_the_run(tmp_path):
    model = tmp_path / "best.keras"
    config = str(tmp_path / "config.json")
    assert runtime.training_plane(str(model)) == (None, None, None)  # no config.json: the preset's
    (tmp_path / "config.json").write_text('{"inplane_size": null}')
    assert runtime.training_plane(str(model)) == (None, None, None)
    (tmp_path / "config.json").write_text('{"inplane_size": 128}')  # a run from before inplane_spacing
    assert runtime.training_plane(str(model)) == (128, None, config)
    (tmp_path / "config.json").write_text('{"inplane_size": 0, "inplane_spacing": 3}')
    assert runtime.training_plane(str(model)) == (0, 3.0, config)
    assert runtime.training_plane(str(tmp_path / "m.tflite")) == (None, None, None)  # only .keras runs
    for text, message in [("{not json", "cannot read the run's inplane_size"),
                          ('{"inplane_size": "128"}', "must be a non-negative int, got '128'"),
                          ('{"inplane_spacing": -1}', "inplane_spacing must be a positive number of mm, got -1"),
                          ('{"inplane_spacing": true}', "inplane_spacing must be a positive number")]:
        (tmp_path / "config.json").write_text(text)
        with pytest.raises(DataError, match=message):
            runtime.training_plane(str(model))


def test_run_inplane_size_is_read_unless_given(tiny_model_path, tmp_path):
    import shutil

    shutil.copy(tiny_model_path, tmp_path / "best.keras")
    (tmp_path / "config.json").write_text('{"inplane_size": 48}')
    assert runtime.load_segmenter(tmp_path / "best.keras").inplane_size == 48
    (tmp_path / "config.json").write_text("{not json")  # not read when the size and preset are given
    assert runtime.load_segmenter(tmp_path / "best.keras", inplane_size=0, preset="lw_hcn").inplane_size == 0
    with pytest.raises(DataError, match="cannot read the run's preset"):
        runtime.load_segmenter(tmp_path / "best.keras", inplane_size=0)
    (tmp_path / "config.json").write_text('{"inplane_size": 0, "inplane_spacing": 2.5}')
    segmenter = runtime.load_segmenter(tmp_path / "best.keras")
    assert (segmenter.inplane_size, segmenter.inplane_spacing) == (0, 2.5)
    # A size given on the command line replaces the run's whole plane, spacing included.
    segmenter = runtime.load_segmenter(tmp_path / "best.keras", inplane_size=48)
    assert (segmenter.inplane_size, segmenter.inplane_spacing) == (48, None)


def test_run_preset_is_read_unless_given(tiny_model_path, tmp_path):
    """A checkpoint segments with the preset its run trained with (the demo's fixed window),
    not its zoo model's; a preset given by the caller wins; a bad one in config.json is named."""
    import shutil

    model = tmp_path / "best.keras"
    shutil.copy(tiny_model_path, model)
    assert runtime.training_preset(str(model)) is None  # no config.json
    (tmp_path / "config.json").write_text('{"preset": "residual_unet_window"}')
    assert runtime.training_preset(str(model)) == "residual_unet_window"
    assert runtime.load_segmenter(model, "residual_unet").preset == "residual_unet_window"
    assert runtime.load_segmenter(model, "residual_unet", preset="residual_unet").preset == "residual_unet"
    (tmp_path / "config.json").write_text('{"inplane_size": 0, "inplane_spacing": 3}')  # a run from before
    assert runtime.load_segmenter(model, "residual_unet").preset == "residual_unet"
    (tmp_path / "config.json").write_text('{"preset": "unet_9000"}')
    with pytest.raises(DataError, match="config.json: unknown preset 'unet_9000'"):
        runtime.load_segmenter(model, "residual_unet")


def test_find_inputs_kinds(tmp_path):
    """A file, a folder of NIfTI files (sorted, others ignored), or a DICOM series folder."""
    (tmp_path / "cases").mkdir()
    for name in ("b.nii", "a.nii.gz", ".hidden.nii.gz", "readme.md"):
        (tmp_path / "cases" / name).write_bytes(b"")
    cases, many = runtime.find_inputs(str(tmp_path / "cases"))
    assert [c for c, _ in cases] == ["a", "b"] and many
    assert runtime.output_paths(cases, str(tmp_path / "o"), many)["a"] == str(tmp_path / "o" / "a.nii.gz")
    (tmp_path / "series1").mkdir()
    (tmp_path / "series1" / "IM0001").write_bytes(b"")
    cases, many = runtime.find_inputs(str(tmp_path / "series1") + "/")
    assert cases == [("series1", str(tmp_path / "series1") + "/")] and not many
    assert runtime.probabilities_path(str(tmp_path / "m.nii")) == str(tmp_path / "m_probabilities.nii.gz")
    with pytest.raises(ConfigError, match="expected a .nii/.nii.gz file"):
        runtime.find_inputs(str(tmp_path / "cases" / "readme.md"))


def test_output_name_and_format_must_agree(tmp_path):
    """A DICOM SEG written under a .nii.gz name (or NIfTI under .dcm) misleads every tool that
    opens it: refused, naming both."""
    cases = [("a", "a.nii.gz")]
    with pytest.raises(ConfigError, match=r"x.nii.gz: the name says nifti, --output_format=dicom_seg"):
        runtime.output_paths(cases, str(tmp_path / "x.nii.gz"), False, "dicom_seg")
    with pytest.raises(ConfigError, match=r"y.dcm: the name says dicom_seg, --output_format=nifti"):
        runtime.output_paths(cases, str(tmp_path / "y.dcm"), False, "nifti")
    assert runtime.output_paths(cases, str(tmp_path / "y.dcm"), False, "dicom_seg") == {"a": str(tmp_path / "y.dcm")}


@pytest.fixture(scope="module")
def run_checkpoint(tiny_model_path, tmp_path_factory):
    """The tiny model under a zoo name, saved as a trainer run's best.keras beside a config.json
    that records the demo's kind of preprocessing (fixed-window preset, 6 mm planes)."""
    import json

    import keras

    tiny = keras.saving.load_model(tiny_model_path)
    named = keras.Model(tiny.inputs, tiny.outputs, name="residual_unet")
    run = tmp_path_factory.mktemp("run")
    named.save(run / "best.keras")
    (run / "config.json").write_text(json.dumps({"model": "residual_unet", "preset": "residual_unet_window",
                                                 "inplane_size": 0, "inplane_spacing": 6.0}))
    return named, run / "best.keras"


def test_exported_savedmodel_carries_the_runs_preprocessing(run_checkpoint, ct_volume, tmp_path):
    """Like a .tflite file, a SavedModel exported from a trainer checkpoint names the run's
    preset and plane: predict needed --model and then drew CT with the zoo model's defaults
    (the stored demo checkpoint's SavedModel: liver Dice 0.84 -> 0.39 on totalseg)."""
    import os

    from liverzoo import export
    from liverzoo.data.io import current_umask
    from liverzoo.inference import segment

    model, checkpoint = run_checkpoint
    export.export_model(str(tmp_path / "sm"), model_path=str(checkpoint), format="saved_model", log=lambda m: None)
    saved = runtime.load_segmenter(tmp_path / "sm")  # no --model
    assert (saved.name, saved.kind, saved.preset, saved.inplane_spacing) == ("residual_unet", "2d",
                                                                           "residual_unet_window", 6.0)
    expected = segment(model, ct_volume, model_name="residual_unet", preset="residual_unet_window",
                       inplane_spacing=6.0)
    np.testing.assert_array_equal(saved.segment(ct_volume), expected)
    # Readable by a server running as another user, like any folder the user makes (was 0700).
    assert os.stat(tmp_path / "sm").st_mode & 0o777 == 0o777 & ~current_umask()
    with pytest.raises(ConfigError, match="--preset: unknown preset 'foo'; valid presets: "):
        export.export_model(str(tmp_path / "sm2"), model_path=str(checkpoint), format="saved_model", preset="foo")
    assert not (tmp_path / "sm2").exists()


def test_load_segmenter_warns_python_users_of_the_zoo_defaults(run_checkpoint, tmp_path):
    """The Python path (`load_segmenter(...).segment(ct)`) fell back silently where predict
    printed a warning; predict itself gets its one line, not a second Python warning."""
    import shutil
    import warnings

    _, checkpoint = run_checkpoint
    shutil.copy(checkpoint, tmp_path / "copy.keras")
    with pytest.warns(UserWarning, match=f"preset residual_unet: no config.json beside {tmp_path / 'copy.keras'}, so "
                                         "these are the zoo model's defaults; .* pass preset= and inplane_spacing="):
        assert runtime.load_segmenter(str(tmp_path / "copy.keras")).zoo_defaults
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for segmenter in (runtime.load_segmenter(str(checkpoint)),  # beside its config.json
                          runtime.load_segmenter(str(tmp_path / "copy.keras"), preset="residual_unet_window",
                                                 inplane_spacing=6.0),
                          runtime.load_segmenter(str(tmp_path / "copy.keras"), warn=False)):
            assert segmenter.zoo_defaults == (segmenter.preset == "residual_unet")


def test_checkpoint_away_from_its_run_config_is_named_in_a_warning(run_checkpoint, ct_volume, real_ct_dir, tmp_path):
    """Copied without config.json, a demo-style checkpoint is segmented with the zoo model's
    defaults; predict says so (it used to be silent) and --preset / --inplane_spacing restore
    the run's preprocessing."""
    import shutil

    _, checkpoint = run_checkpoint
    shutil.copy(checkpoint, tmp_path / "copy.keras")
    ct = str(real_ct_dir / "totalseg_example_ct_sm.nii.gz")
    lines = []
    runtime.segment_files(str(tmp_path / "copy.keras"), ct, str(tmp_path / "a.nii.gz"), log=lines.append)
    assert lines[0].startswith("preprocessing: preset residual_unet, in-plane size 256 (the preset's); warning: no "
                               f"config.json beside {tmp_path / 'copy.keras'}")
    lines = []
    runtime.segment_files(str(tmp_path / "copy.keras"), ct, str(tmp_path / "b.nii.gz"), preset="residual_unet_window",
                          inplane_spacing=6.0, log=lines.append)
    assert lines[0] == "preprocessing: preset residual_unet_window, in-plane spacing 6 mm a pixel"
    lines = []
    runtime.segment_files(str(checkpoint), ct, str(tmp_path / "c.nii.gz"), log=lines.append)
    assert lines[0] == (f"preprocessing: preset residual_unet_window, in-plane spacing 6 mm a pixel (the training "
                        f"run's: {checkpoint.parent / 'config.json'})")
    import nibabel as nib

    b, c = (np.asarray(nib.load(str(tmp_path / n)).dataobj) for n in ("b.nii.gz", "c.nii.gz"))
    np.testing.assert_array_equal(b, c)
    with pytest.raises(ConfigError, match="--preset: unknown preset 'foo'; valid presets: "):
        runtime.segment_files(str(checkpoint), ct, str(tmp_path / "d.nii.gz"), preset="foo")
