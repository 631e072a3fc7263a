"""The phone path on a really trained checkpoint (tests/data/trained), on whole demo volumes.

Fine-tunes of a few steps kept int8 agreement >= 0.98 while the checkpoint `make demo` trains
agreed on 0.9806 of voxels and lost up to 0.07 liver Dice; these tests hold the claim where a
user meets it: the default int8 export of that checkpoint, every demo CT volume segmented
through `liverzoo.runtime` with both files.
"""
import pytest

from liverzoo import export
from liverzoo.data import demo


@pytest.fixture(scope="module")
def trained_int8(trained_checkpoint, tmp_path_factory):
    path = tmp_path_factory.mktemp("trained") / "residual_unet_int8.tflite"
    lines = []
    # Default calibration and the default --min_agreement: a refused file would raise here.
    export.export_model(str(path), model_path=str(trained_checkpoint), format="tflite", quantize="int8",
                        log=lines.append)
    return path, lines


def test_int8_file_of_the_trained_checkpoint_keeps_the_mask(trained_int8, trained_checkpoint):
    path, _ = trained_int8
    report = export.verify_volumes(path, trained_checkpoint, demo.demo_cases())
    assert set(report["cases"]) == {"totalseg", "dcmqi", "lits117", "slab"}
    for case, row in report["cases"].items():
        assert row["agreement"] >= 0.98, (case, row)
        assert row["liver_dice_gap"] >= -0.01, (case, row)  # int8 never loses liver Dice
        if abs(row["liver_dice_gap"]) > 0.01:
            _only_near_ties_differ(path, trained_checkpoint, demo.load_demo_volume(case))
        # The fixture really is a trained model (an untrained one scores near 0; this one
        # 0.75 on totalseg, whose lower abdomen the 180-step demo run still partly marks).
        assert row["liver_dice_keras"] > 0.7, (case, row)
    assert report["agreement"] >= 0.99


def _only_near_ties_differ(tflite_path, keras_path, ct):
    """A Dice gap over 0.01 is allowed only where the Keras model itself is undecided: its
    masks before post-processing agree with the file's wherever Keras's top two class
    probabilities are more than 0.3 apart. (The demo checkpoint of commit 9440103 marked part
    of totalseg's lower abdomen at near-ties: int8 flipped 4,180 of those voxels, median margin
    0.05, and its liver Dice came out 0.025 higher; where the margin exceeded 0.3 the two
    differed on 4 of 1.35 million voxels. The a7390e9 checkpoint stored now has gaps <= 0.0035.)"""
    import numpy as np

    from liverzoo import runtime

    keras_segmenter = runtime.load_segmenter(keras_path)
    lite_segmenter = runtime.load_segmenter(tflite_path, inplane_size=keras_segmenter.inplane_size,
                                            inplane_spacing=keras_segmenter.inplane_spacing)
    keras_mask, probs = keras_segmenter.segment(ct, postprocess=False, return_probabilities=True)
    lite_mask = lite_segmenter.segment(ct, postprocess=False)
    top_two = np.sort(probs, axis=-1)[..., -2:]
    decided = top_two[..., 1] - top_two[..., 0] > 0.3
    assert decided.mean() > 0.9, ct.case_id  # most of the scan is decided, or this says nothing
    assert (keras_mask[decided] == lite_mask[decided]).mean() >= 0.9999, ct.case_id


def test_int8_file_keeps_its_integer_graph(trained_int8):
    """The fix is a rewrite, not float layers: every operator stays int8 and builtin."""
    path, lines = trained_int8
    assert export.float_ops(str(path)) == []
    assert not any(op.startswith("CUSTOM") or op in ("QUANTIZE", "DEQUANTIZE") for op in export.tflite_ops(str(path)))
    assert any("argmax agreement" in line for line in lines)


def test_exported_file_carries_the_runs_working_plane(trained_int8):
    """The checkpoint trained on 3 mm planes (its config.json): the file says so, and the
    runtime segments on that plane, not the preset's fixed 256x256, without being told."""
    from liverzoo import lite, runtime

    path, _ = trained_int8
    metadata = lite.read_metadata(str(path))
    assert metadata["inplane_spacing"] == 3.0 and not metadata.get("inplane_size")
    assert metadata["preset"] == "residual_unet_window"  # the demo run's intensities (config.json)
    segmenter = runtime.load_segmenter(path)
    assert segmenter.inplane_spacing == 3.0 and not segmenter.inplane_size
    assert runtime.load_segmenter(path, inplane_spacing=1.5).inplane_spacing == 1.5  # a flag still wins


def test_exported_file_carries_the_runs_preset(trained_checkpoint, tmp_path):
    """The run's config.json names the preset it trained with (the demo: the paper's window
    without equalisation); the file's metadata carries it, unless --preset is given."""
    import json
    import shutil

    from liverzoo import runtime
    from liverzoo.export import pipeline

    shutil.copy(trained_checkpoint, tmp_path / "best.keras")
    run = json.loads((trained_checkpoint.parent / "config.json").read_text())
    for recorded in ("residual_unet_window", "residual_unet"):
        (tmp_path / "config.json").write_text(json.dumps(dict(run, preset=recorded)))
        _, _, plane = pipeline._load(str(tmp_path / "best.keras"), None, None, None)
        assert plane["preset"] == recorded == runtime.load_segmenter(tmp_path / "best.keras").preset
    _, _, plane = pipeline._load(str(tmp_path / "best.keras"), None, None, "lw_hcn")
    assert "preset" not in plane  # the flag's, set by export_model
