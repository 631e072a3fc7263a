"""tools/predict.py: masks aligned with the input, probabilities, folders, bad input.

The loaders and the file handling it calls are tested in tests/test_runtime.py."""
import importlib
import re
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest

from liverzoo.errors import ConfigError, DataError
from tests.conftest import REPO, run_tool

CT = "totalseg_example_ct_sm.nii.gz"  # real CT, 122x101x30, 3 mm


@pytest.fixture(scope="module")
def predict_tool():
    """tools/predict.py imported as a module (for its flags and main)."""
    sys.path.insert(0, str(REPO / "tools"))
    try:
        return importlib.import_module("predict")
    finally:
        sys.path.remove(str(REPO / "tools"))


def run_cli(*args):
    return run_tool("predict", *args, cwd=REPO)


def error_lines(result):
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_predict_folder_skip_bad_probabilities_and_alignment(tiny_model_path, real_ct_dir, tmp_path):
    """Masks have the input's affine, shape and axis order and equal segment() in-process;
    a bad case fails the run with one line and no output, or is skipped with --skip_bad."""
    import keras

    from liverzoo.data.io import load_volume
    from liverzoo.inference import segment

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_bad.nii.gz").write_bytes(b"not a nifti file")
    (inputs / "notes.txt").write_text("ignored")
    # The CT stored in a non-canonical axis order: the mask must be written back in it.
    image = nib.load(str(real_ct_dir / CT))
    flip = np.array([[-1, 0, 0, image.shape[0] - 1], [0, 1, 0, 0], [0, 0, -1, image.shape[2] - 1], [0, 0, 0, 1]])
    flipped = nib.Nifti1Image(np.asarray(image.dataobj)[::-1, :, ::-1].copy(), image.affine @ flip)
    nib.save(flipped, str(inputs / "b_good.nii.gz"))
    out = tmp_path / "out"
    args = [f"--model_path={tiny_model_path}", "--model=residual_unet", f"--input={inputs}", f"--output={out}",
            "--save_probabilities"]

    result = run_cli(*args)
    assert result.returncode == 1
    errors = error_lines(result)
    assert len(errors) == 1 and "case a_bad" in errors[0] and "a_bad.nii.gz" in errors[0], errors
    assert not out.exists()  # not even an empty folder: it is made with the first mask

    result = run_cli(*args, "--skip_bad")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["b_good.nii.gz", "b_good_probabilities.nii.gz"]
    assert "skipped: case a_bad" in result.stderr and "case 2/2 b_good" in result.stderr
    assert "segmented 1 case(s), skipped 1" in result.stdout

    mask_img = nib.load(str(out / "b_good.nii.gz"))
    np.testing.assert_allclose(mask_img.affine, flipped.affine, atol=1e-4)
    probs_img = nib.load(str(out / "b_good_probabilities.nii.gz"))
    for img in (mask_img, probs_img):  # both say their affine is the scanner's, as the mask did
        assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
    np.testing.assert_allclose(probs_img.affine, flipped.affine, atol=1e-4)
    assert mask_img.shape == flipped.shape and mask_img.get_data_dtype() == np.uint8
    mask = np.asarray(mask_img.dataobj)
    ct = load_volume(str(inputs / "b_good.nii.gz"))
    expected = segment(keras.saving.load_model(tiny_model_path), ct, model_name="residual_unet")
    np.testing.assert_array_equal(mask, ct.to_source(expected))
    assert set(np.unique(mask)) <= {0, 1, 2} and mask.any()
    probs = np.asarray(nib.load(str(out / "b_good_probabilities.nii.gz")).dataobj)
    assert probs.shape == flipped.shape + (3,)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)


BAD_FLAGS = [
    (["--model_path={missing}", "--input={ct}", "--output={out}"], "--model_path .*no such file"),
    (["--model_path={model}", "--input={tmp}/x.txt", "--output={out}"], "--input .*x.txt: no such file"),
    (["--model_path={model}", "--input={tmp}/in", "--output={out}"], "several inputs need an output folder"),
    (["--model_path={model}", "--input={ct}", "--output={out}", "--liver_threshold=1"],
     "--liver_threshold must be a probability between 0 and 1 .*got 1.0"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS, ids=["no_model_file", "no_input", "folder_to_file",
                                                          "liver_threshold"])
def test_bad_flags(predict_tool, tiny_model_path, real_ct_dir, tmp_path, args, message):
    """Flag errors are found before the model loads; nothing is written (in-process main)."""
    (tmp_path / "in").mkdir()
    for name in ("a.nii.gz", "b.nii"):
        shutil.copy(real_ct_dir / CT, tmp_path / "in" / name)
    values = dict(missing=tmp_path / "missing.keras", model=tiny_model_path, ct=real_ct_dir / CT,
                  out=tmp_path / "out.nii.gz", tmp=tmp_path)
    argv = predict_tool.FLAGS(["predict.py"] + [a.format(**values) for a in args])
    try:
        with pytest.raises(ConfigError, match=message):
            predict_tool.main(argv)
    finally:
        predict_tool.FLAGS.unparse_flags()
    assert not (tmp_path / "out.nii.gz").exists()


def test_an_output_file_in_a_missing_folder_is_written_there(predict_tool, tiny_model_path, real_ct_dir, tmp_path):
    """As export does, predict makes the output file's folder (it refused it before); a folder
    under a file is one error before the model loads."""
    argv = ["predict.py", f"--model_path={tiny_model_path}", "--model=residual_unet", f"--input={real_ct_dir / CT}"]
    try:
        predict_tool.main(predict_tool.FLAGS(argv + [f"--output={tmp_path}/a/b/m.nii.gz"]))
    finally:
        predict_tool.FLAGS.unparse_flags()
    assert nib.load(str(tmp_path / "a" / "b" / "m.nii.gz")).shape == nib.load(str(real_ct_dir / CT)).shape
    try:
        with pytest.raises(DataError, match=r"--output=.*: .*m.nii.gz is not a folder"):
            predict_tool.main(predict_tool.FLAGS(argv + [f"--output={tmp_path}/a/b/m.nii.gz/c/n.nii.gz"]))
    finally:
        predict_tool.FLAGS.unparse_flags()


def test_trainer_checkpoint_with_its_loss_and_optimizer_loads(tiny_model_path, real_ct_dir, tmp_path):
    """best.keras from tools/train.py carries a compiled liverzoo loss; predict must load it
    in a fresh process (this failed in `make demo` before compile=False), and segment on the
    in-plane size the run's config.json records (the demo trains on 128, not the preset's 256)."""
    import json

    import keras

    from liverzoo import losses
    from liverzoo.data.io import load_volume
    from liverzoo.inference import segment

    model = keras.saving.load_model(tiny_model_path)
    model.compile(optimizer=keras.optimizers.SGD(1e-2, momentum=0.99, nesterov=True),
                  loss=losses.WeightedCrossEntropy(class_weights=(1.0, 3.0, 10.0)))
    model.save(tmp_path / "best.keras")
    (tmp_path / "config.json").write_text(json.dumps({"model": "residual_unet", "inplane_size": 48}))
    result = run_cli(f"--model_path={tmp_path / 'best.keras'}", "--model=residual_unet",
                     f"--input={real_ct_dir / CT}", f"--output={tmp_path / 'mask.nii.gz'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "preset residual_unet, in-plane size 48 (the training run's: " in result.stdout
    ct = load_volume(str(real_ct_dir / CT))
    expected = segment(model, ct, model_name="residual_unet", inplane_size=48)
    got = np.asarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj)
    np.testing.assert_array_equal(got, ct.to_source(expected))
    assert not np.array_equal(expected, segment(model, ct, model_name="residual_unet"))  # the size matters
    # A run that trained at a common in-plane spacing (the demo's): the CT is drawn at that scale.
    (tmp_path / "config.json").write_text(json.dumps({"model": "residual_unet", "inplane_size": 0,
                                                      "inplane_spacing": 6.0}))
    result = run_cli(f"--model_path={tmp_path / 'best.keras'}", "--model=residual_unet", f"--input={real_ct_dir / CT}",
                     f"--output={tmp_path / 'mask6.nii.gz'}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "in-plane spacing 6 mm a pixel (the training run's: " in result.stdout
    expected = segment(model, ct, model_name="residual_unet", inplane_spacing=6.0)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "mask6.nii.gz")).dataobj), ct.to_source(expected))


def test_cli_flag_error_is_one_line(tmp_path):
    result = run_cli(f"--model_path={tmp_path / 'missing.keras'}", f"--input={tmp_path}", f"--output={tmp_path}")
    assert result.returncode == 1
    assert error_lines(result) == [f"error: --model_path {tmp_path / 'missing.keras'}: no such file or folder"]


def test_missing_required_flag_is_one_line(tiny_model_path, real_ct_dir, tmp_path):
    """Required flags are checked by absl when the flags are parsed (cli.run words the error)."""
    result = run_cli(f"--model_path={tiny_model_path}", f"--input={real_ct_dir / CT}")
    assert result.returncode == 1
    assert error_lines(result) == ["error: --output is required"]
    assert not list(tmp_path.iterdir())


def test_model_larger_than_the_working_plane(ct_volume):
    """A fixed 512x512 input takes residual_unet's 256x256 working plane padded with air (as
    training pads its patches); the bare volume predictor refuses a plane that does not fit."""
    import keras

    from liverzoo.inference import predict_volume, segment

    x = keras.Input((512, 512, 1))
    big = keras.Model(x, keras.layers.Conv2D(3, 1, activation="softmax")(x), name="big")
    assert segment(big, ct_volume, model_name="residual_unet").shape == ct_volume.array.shape
    with pytest.raises(DataError, match="smaller than the model's input 512x512"):
        predict_volume(lambda b: b, np.zeros((256, 256, 2), np.float32), kind="2d", input_shape=(512, 512, 1))


def test_opening_flag_on_a_real_scan(predict_tool, trained_checkpoint, real_ct_dir, tmp_path):
    """The default post-processing opens the mask by `OPENING_MM` at the scan's spacing before
    the largest component; `--opening_mm=0` leaves the opening out (the demo checkpoint on the
    whole TotalSegmentator abdomen, where the opening removes voxels joined to the liver), and
    `--opening_keep_ml=0` drops even the small pieces it cuts off."""
    from liverzoo.postprocess import OPENING_KEEP_ML, OPENING_MM, postprocess

    ct = real_ct_dir / "totalseg_example_full_ct.nii.gz"
    masks = {}
    for name, flags in (("raw", ["--nopostprocess"]), ("default", []), ("none", ["--opening_mm=0"]),
                        ("plain", ["--opening_keep_ml=0"])):
        argv = ["predict.py", f"--model_path={trained_checkpoint}", f"--input={ct}",
                f"--output={tmp_path / name}.nii.gz"] + flags
        try:
            predict_tool.main(predict_tool.FLAGS(argv))
        finally:
            predict_tool.FLAGS.unparse_flags()
        masks[name] = np.asarray(nib.load(str(tmp_path / f"{name}.nii.gz")).dataobj)
    spacing = nib.load(str(ct)).header.get_zooms()[:3]
    np.testing.assert_array_equal(masks["default"], postprocess(masks["raw"], opening_mm=OPENING_MM, spacing=spacing,
                                                                opening_keep_ml=OPENING_KEEP_ML))
    np.testing.assert_array_equal(masks["none"], postprocess(masks["raw"]))
    np.testing.assert_array_equal(masks["plain"], postprocess(masks["raw"], opening_mm=OPENING_MM, spacing=spacing,
                                                              opening_keep_ml=0))
    assert (masks["default"] != masks["none"]).sum() > 100
    assert (masks["default"] != masks["plain"]).sum() > 0


def test_liver_threshold_flag_grows_the_liver_on_a_real_scan(predict_tool, trained_checkpoint, real_ct_dir, tmp_path):
    """`--liver_threshold=0.3` gives the mask of the probabilities `--save_probabilities` writes,
    labelled liver where liver and tumor together reach 0.3 (a NumPy reference), and on the
    demo checkpoint's whole TotalSegmentator abdomen it marks more liver than the argmax."""
    ct = real_ct_dir / "totalseg_example_full_ct.nii.gz"
    masks = {}
    for name, flags in (("argmax", []), ("low", ["--liver_threshold=0.3"])):
        argv = ["predict.py", f"--model_path={trained_checkpoint}", f"--input={ct}", f"--output={tmp_path / name}",
                "--nopostprocess", "--save_probabilities"] + flags
        try:
            predict_tool.main(predict_tool.FLAGS(argv))
        finally:
            predict_tool.FLAGS.unparse_flags()
        case = "totalseg_example_full_ct"
        masks[name] = np.asarray(nib.load(str(tmp_path / name / f"{case}.nii.gz")).dataobj)
        probs = np.asarray(nib.load(str(tmp_path / name / f"{case}_probabilities.nii.gz")).dataobj)
    foreground = probs[..., 1] + probs[..., 2] >= 0.3
    np.testing.assert_array_equal(masks["low"], np.where(foreground, np.where(probs[..., 2] > probs[..., 1], 2, 1), 0))
    np.testing.assert_array_equal(masks["argmax"], probs.argmax(-1))
    assert (masks["low"] >= 1).sum() > (masks["argmax"] >= 1).sum()
