"""tools/evaluate.py and liverzoo.evaluation: LiTS summary, CSV, overlays, bad input."""
import csv
import json
import re

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as mp
from scipy import ndimage

from liverzoo import evaluation, metrics
from liverzoo.errors import DataError

from tests.conftest import REPO, run_tool

AFFINE = np.diag([0.8, 0.9, 2.5, 1.0])


def save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def make_cases(root, real_ct_dir):
    """Three cases: a real liver mask (no tumor), two synthetic ones with tumors."""
    pred_dir, ref_dir = root / "pred", root / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    real = nib.load(str(real_ct_dir / "totalseg_example_liver_pred.nii.gz"))
    ref_real = np.asarray(real.dataobj).astype(np.uint8)
    save(ref_dir / "case_1.nii.gz", ref_real, real.affine)
    save(pred_dir / "case_1.nii.gz", ndimage.binary_erosion(ref_real, iterations=1).astype(np.uint8), real.affine)
    grid = np.indices((30, 28, 12))
    for k, shift in ((2, 1), (10, 3)):
        ref = (((grid[0] - 15) / 10) ** 2 + ((grid[1] - 14) / 9) ** 2 + ((grid[2] - 6) / 5) ** 2 <= 1).astype(np.uint8)
        ref[13:17, 12:16, 5:8] = 2
        pred = np.roll(ref, shift, axis=0)
        pred[20:22, 4:6, 1:3] = 2
        save(ref_dir / f"case_{k}.nii", ref)
        save(pred_dir / f"case_{k}.nii.gz", pred)  # .nii and .nii.gz pair by case name
    return pred_dir, ref_dir


@pytest.fixture(scope="module")
def cases(tmp_path_factory, real_ct_dir):
    root = tmp_path_factory.mktemp("eval")
    return make_cases(root, real_ct_dir)


def test_evaluate_writes_lits_summary(cases, tmp_path):
    pred_dir, ref_dir = cases
    out = tmp_path / "out"
    summary = evaluation.evaluate(str(pred_dir), str(ref_dir), str(out), num_overlays=2, overlay_slices=2)
    assert summary["cases"] == ["case_1", "case_2", "case_10"]  # natural order

    labels = {}
    for case in summary["cases"]:
        ref_path = next(ref_dir.glob(case + ".nii*"))
        labels[case] = (np.asarray(nib.load(str(pred_dir / f"{case}.nii.gz")).dataobj),
                        np.asarray(nib.load(str(ref_path)).dataobj), nib.load(str(ref_path)).header.get_zooms())
    liver_dice = [mp.dc(p >= 1, r >= 1) for p, r, _ in labels.values()]
    assert summary["liver"]["dice_per_case"] == pytest.approx(np.mean(liver_dice), abs=1e-9)
    inter = sum(np.count_nonzero((p >= 1) & (r >= 1)) for p, r, _ in labels.values())
    total = sum(np.count_nonzero(p >= 1) + np.count_nonzero(r >= 1) for p, r, _ in labels.values())
    assert summary["liver"]["dice_global"] == pytest.approx(2 * inter / total, abs=1e-12)
    hd = [mp.hd(p >= 1, r >= 1, voxelspacing=z) for p, r, z in labels.values()]
    assert summary["liver"]["mssd"] == pytest.approx(np.mean(hd), abs=1e-6)
    # case_1 has no tumor in either mask: Dice 1 (LiTS), distances undefined and left out.
    assert summary["dice_per_case"]["tumor"]["case_1"] == 1.0
    assert summary["tumor"]["assd_undefined_cases"] == 1
    tumor_hd = [mp.hd(p == 2, r == 2, voxelspacing=z) for p, r, z in list(labels.values())[1:]]
    assert summary["tumor"]["mssd"] == pytest.approx(np.mean(tumor_hd), abs=1e-6)
    errors = [metrics.tumor_burden(r) - metrics.tumor_burden(p) for p, r, _ in labels.values()]
    assert summary["tumor_burden_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))), abs=1e-12)

    with open(out / "cases.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == summary["cases"]
    assert float(rows[1]["liver_dice"]) == pytest.approx(liver_dice[1], abs=1e-12)
    assert rows[0]["tumor_assd"] == ""  # undefined: empty cell
    assert json.loads((out / "summary.json").read_text())["liver"] == summary["liver"]
    pngs = sorted(p.name for p in (out / "overlays").iterdir())
    assert len(pngs) == 4 and all((out / "overlays" / p).read_bytes()[:4] == b"\x89PNG" for p in pngs)
    worst = min(summary["cases"], key=lambda c: summary["dice_per_case"]["liver"][c])
    assert any(p.startswith(worst + "_z") for p in pngs)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # staging folder removed


def test_worst_slices_orders_by_errors():
    ref = np.zeros((4, 4, 5), np.uint8)
    pred = ref.copy()
    pred[:2, :, 3] = 1
    pred[0, 0, 1] = 2
    assert evaluation.worst_slices(pred, ref, 2) == [3, 1]


def run_cli(*args):
    return run_tool("evaluate", *args, cwd=REPO)


def _shape(pred_dir, ref_dir):
    save(pred_dir / "case_2.nii.gz", np.zeros((30, 28, 11), np.uint8))


def _label(pred_dir, ref_dir):
    bad = np.zeros((30, 28, 12), np.uint8)
    bad[3, 3, 3] = 3
    save(pred_dir / "case_2.nii.gz", bad)


def _affine(pred_dir, ref_dir):
    save(pred_dir / "case_2.nii.gz", np.zeros((30, 28, 12), np.uint8), np.diag([0.8, 0.9, 3.0, 1.0]))


def _missing(pred_dir, ref_dir):
    (pred_dir / "case_2.nii.gz").unlink()


BAD_INPUT = [
    (_shape, r"case case_2: prediction shape \(30, 28, 11\) differs"),
    (_label, "case case_2 .*label value 3"),
    (_affine, "case case_2: prediction affine differs"),
    (_missing, "case case_2: no prediction in"),
]


@pytest.mark.parametrize("corrupt,message", BAD_INPUT, ids=["shape", "label", "affine", "missing"])
def test_cli_bad_case_fails_cleanly_or_is_skipped(tmp_path, real_ct_dir, corrupt, message):
    pred_dir, ref_dir = make_cases(tmp_path, real_ct_dir)
    corrupt(pred_dir, ref_dir)
    out = tmp_path / "out"
    result = run_cli(f"--pred_dir={pred_dir}", f"--ref_dir={ref_dir}", f"--output_dir={out}", "--num_overlays=0")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert not out.exists() or not any(out.iterdir())  # nothing written

    result = run_cli(f"--pred_dir={pred_dir}", f"--ref_dir={ref_dir}", f"--output_dir={out}", "--skip_bad",
                     "--num_overlays=1")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == ["case_1", "case_10"]
    assert [s["case"] for s in summary["skipped"]] == ["case_2"]
    assert "skipped: case case_2" in result.stderr
    assert "2 cases evaluated, 1 skipped" in result.stdout


def test_cli_requires_flags_and_reports_missing_folder(tmp_path):
    result = run_cli(f"--ref_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 1 and result.stderr.strip() == "error: --pred_dir is required"
    result = run_cli(f"--pred_dir={tmp_path / 'nope'}", f"--ref_dir={tmp_path}", f"--output_dir={tmp_path / 'o'}")
    assert result.returncode == 1 and "nope: no such folder" in result.stderr and "Traceback" not in result.stderr


def test_all_cases_bad_is_an_error(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    save(tmp_path / "r" / "a.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DataError, match="no case could be evaluated .1 skipped; first: case a: no prediction in"):
        evaluation.evaluate(str(tmp_path / "p"), str(tmp_path / "r"), str(tmp_path / "o"), skip_bad=True)
    assert not (tmp_path / "o").exists()


def test_same_grid_in_another_axis_order_is_scored(real_ct_dir, tmp_path):
    """A mask stored in another axis order than its reference (here RAS against the file's own
    order; a mask predicted from a DICOM series against a NIfTI label in practice) is the same
    grid: scored after reordering its axes, not refused for an affine that differs by 499 mm."""
    ref_file = real_ct_dir / "totalseg_dicom_slab_liver_pred.nii.gz"
    ref = nib.load(str(ref_file))
    canonical = nib.as_closest_canonical(ref)
    assert not np.allclose(canonical.affine, ref.affine)  # really another order
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    save(tmp_path / "r" / "slab.nii.gz", np.asarray(ref.dataobj).astype(np.uint8), ref.affine)
    save(tmp_path / "p" / "slab.nii.gz", np.asarray(canonical.dataobj).astype(np.uint8), canonical.affine)
    row = evaluation.evaluate_case("slab", str(tmp_path / "p" / "slab.nii.gz"), str(tmp_path / "r" / "slab.nii.gz"))
    assert row["liver_dice"] == 1.0 and row["liver_assd"] == 0.0
    shifted = canonical.affine.copy()
    shifted[0, 3] += 10.0  # another grid is still refused
    save(tmp_path / "p" / "slab.nii.gz", np.asarray(canonical.dataobj).astype(np.uint8), shifted)
    with pytest.raises(DataError, match="case slab: prediction affine differs from the reference affine by 10"):
        evaluation.evaluate_case("slab", str(tmp_path / "p" / "slab.nii.gz"), str(tmp_path / "r" / "slab.nii.gz"))


def test_bad_output_dir_is_refused_before_scoring(cases, tmp_path, monkeypatch):
    pred_dir, ref_dir = cases
    (tmp_path / "file.txt").write_text("x")
    scored = []
    monkeypatch.setattr(evaluation, "evaluate_case", lambda *a, **k: scored.append(a))
    for output, message in ((tmp_path / "file.txt", "file.txt is not a folder"),
                            (tmp_path / "file.txt" / "out", "file.txt is not a folder")):
        with pytest.raises(DataError, match=f"--output_dir={re.escape(str(output))}: .*{message}"):
            evaluation.evaluate(str(pred_dir), str(ref_dir), str(output))
    assert scored == []  # refused before any case was scored
    result = run_cli(f"--pred_dir={pred_dir}", f"--ref_dir={ref_dir}", f"--output_dir={tmp_path / 'file.txt'}")
    assert result.returncode == 1 and "is not a folder" in result.stderr and "Traceback" not in result.stderr


def test_a_rerun_into_the_same_folder_leaves_no_stale_outputs(cases, tmp_path):
    pred_dir, ref_dir = cases
    out = tmp_path / "out"
    first = evaluation.evaluate(str(pred_dir), str(ref_dir), str(out), num_overlays=3, overlay_slices=2, report=True)
    second = evaluation.evaluate(str(pred_dir), str(ref_dir), str(out), num_overlays=1, overlay_slices=1)
    assert len(first["overlays"]) > len(second["overlays"]) == 1
    assert sorted(str(p.relative_to(out)) for p in (out / "overlays").iterdir()) == second["overlays"]
    assert not (out / "report.html").exists()
    (out / "notes.txt").write_text("the user's")  # files the tool does not write stay
    evaluation.evaluate(str(pred_dir), str(ref_dir), str(out), num_overlays=0)
    assert (out / "notes.txt").exists() and not list((out / "overlays").iterdir())


def placeholder_cases(root):
    """Three tumor situations: both masks have tumor, only the prediction, neither."""
    pred_dir, ref_dir = root / "pred", root / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    liver = np.zeros((20, 20, 6), np.uint8)
    liver[2:18, 2:18, 1:5] = 1
    both_ref, both_pred = liver.copy(), liver.copy()
    both_ref[4:8, 4:8, 2:4] = 2
    both_ref[12:15, 12:15, 2:4] = 2
    both_pred[4:8, 5:9, 2:4] = 2
    fp_pred = liver.copy()
    fp_pred[10:12, 10:12, 2:3] = 2
    for case, (pred, ref) in {"a": (both_pred, both_ref), "b": (fp_pred, liver), "c": (liver, liver)}.items():
        save(pred_dir / f"{case}.nii.gz", pred)
        save(ref_dir / f"{case}.nii.gz", ref)
    return pred_dir, ref_dir


def test_summary_never_averages_placeholders_and_writes_lesions(tmp_path):
    pred_dir, ref_dir = placeholder_cases(tmp_path)
    out = tmp_path / "out"
    result = run_cli(f"--pred_dir={pred_dir}", f"--ref_dir={ref_dir}", f"--output_dir={out}", "--num_overlays=0")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    tumor = summary["tumor"]
    pred_a = np.asarray(nib.load(str(pred_dir / "a.nii.gz")).dataobj) == 2
    ref_a = np.asarray(nib.load(str(ref_dir / "a.nii.gz")).dataobj) == 2
    assert tumor["assd"] == pytest.approx(mp.assd(pred_a, ref_a, voxelspacing=(0.8, 0.9, 2.5)), abs=1e-6)
    assert (tumor["assd_cases"], tumor["assd_undefined_cases"], tumor["assd_penalized_cases"]) == (1, 2, 1)
    assert (tumor["rvd_cases"], tumor["rvd_undefined_cases"]) == (1, 2)
    # Case b's tumor marked where the reference has none is said apart from case c's nothing to measure.
    assert (f"ASSD {tumor['assd']:.3f} mm over 1 of 3 cases; LiTS penalty 9001 for 1 case (one mask empty); "
            "undefined for 1") in result.stdout
    assert "4500" not in result.stdout and "3001" not in result.stdout  # 9001 never averaged in
    # Case a: lesion 1 found (IoU 12/20 > 0.5), lesion 2 missed; case b: one false positive.
    lesions = summary["lesions"]
    assert (lesions["tp"], lesions["fp"], lesions["fn"]) == (1, 1, 1)
    assert lesions["precision"] == 0.5 and lesions["recall"] == 0.5 and lesions["f1"] == 0.5
    assert "precision 0.500, recall 0.500, F1 0.500 (TP 1, FP 1, FN 1; merges 0, splits 0" in result.stdout
    assert "detection by size: <10 mm 1/2, 10-20 mm 0/0, >20 mm 0/0" in result.stdout
    with open(out / "cases.csv") as f:
        cases = {r["case"]: r for r in csv.DictReader(f)}
    assert float(cases["b"]["tumor_assd"]) == metrics.LITS_PENALTY  # the CSV keeps the LiTS convention
    assert cases["b"]["lesions_fp"] == "1" and cases["a"]["lesions_num_reference"] == "2"
    with open(out / "lesions.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["lesion"], r["detected"]) for r in rows] == [("a", "1", "1"), ("a", "2", "0")]
    assert float(rows[0]["dice"]) == pytest.approx(mp.dc(pred_a & (np.indices(pred_a.shape)[0] < 10),
                                                         ref_a & (np.indices(ref_a.shape)[0] < 10)))
    assert float(rows[1]["dice"]) == 0.0 and float(rows[1]["assd"]) == metrics.LITS_PENALTY
    assert float(rows[0]["volume_ml"]) == pytest.approx(32 * 0.8 * 0.9 * 2.5 / 1000)
    assert rows[0]["pred_lesions"] == "1" and rows[0]["merged_lesions"] == "1"

    strict = run_cli(f"--pred_dir={pred_dir}", f"--ref_dir={ref_dir}", f"--output_dir={tmp_path / 'o2'}",
                     "--num_overlays=0", "--min_overlap=0.7")
    assert "(TP 0, FP 2, FN 2;" in strict.stdout, strict.stdout


def test_dicom_seg_predictions_score_like_their_nifti(real_dicom_dir, real_ct_dir, tmp_path):
    """dcmqi's SEG as the prediction (read onto its series' grid) scores exactly as the NIfTI
    mask it was made from, against the same (eroded) reference."""
    import shutil

    import nibabel as nib
    from scipy import ndimage

    from liverzoo import evaluation

    liver = nib.load(str(real_ct_dir / "dcmqi_3slice_liver.nii.gz"))
    eroded = ndimage.binary_erosion(np.asarray(liver.dataobj) > 0, np.ones((3, 3, 1)), iterations=4).astype(np.uint8)
    for name in ("ref", "nifti", "seg"):
        (tmp_path / name).mkdir()
    nib.save(nib.Nifti1Image(eroded, liver.affine), str(tmp_path / "ref" / "dcmqi.nii.gz"))
    shutil.copy(real_ct_dir / "dcmqi_3slice_liver.nii.gz", tmp_path / "nifti" / "dcmqi.nii.gz")
    shutil.copy(real_dicom_dir / "dcmqi_liver_seg.dcm", tmp_path / "seg" / "dcmqi.dcm")
    from_nifti = evaluation.evaluate(str(tmp_path / "nifti"), str(tmp_path / "ref"), str(tmp_path / "out1"),
                                     num_overlays=0)
    from_seg = evaluation.evaluate(str(tmp_path / "seg"), str(tmp_path / "ref"), str(tmp_path / "out2"),
                                   dicom_dir=str(real_dicom_dir / "dcmqi_ct3slice"), num_overlays=1)
    assert 0.5 < from_nifti["liver"]["dice_per_case"] < 0.99
    assert from_seg["liver"]["dice_per_case"] == pytest.approx(from_nifti["liver"]["dice_per_case"], abs=1e-9)
    assert from_seg["liver"]["assd"] == pytest.approx(from_nifti["liver"]["assd"], abs=1e-6)
    with pytest.raises(DataError, match="case dcmqi: a DICOM SEG .*--dicom_dir"):
        evaluation.evaluate(str(tmp_path / "seg"), str(tmp_path / "ref"), str(tmp_path / "out3"))


def test_seg_without_its_series_names_the_case_once(tmp_path, real_dicom_dir, real_ct_dir):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    (tmp_path / "p" / "dcmqi.dcm").write_bytes((real_dicom_dir / "dcmqi_liver_seg.dcm").read_bytes())
    (tmp_path / "r" / "dcmqi.nii.gz").write_bytes((real_ct_dir / "dcmqi_3slice_liver.nii.gz").read_bytes())
    with pytest.raises(DataError) as error:
        evaluation.evaluate(str(tmp_path / "p"), str(tmp_path / "r"), str(tmp_path / "o"))
    assert str(error.value) == "case dcmqi: a DICOM SEG is read onto its source series: pass --dicom_dir"


def _drawn_backgrounds(monkeypatch):
    """Records the CT slice each overlay is drawn on (None: drawn on black)."""
    drawn = []
    real = evaluation.render_overlay

    def record(path, ref_slice, pred_slice, image_slice=None, *args, **kwargs):
        drawn.append(None if image_slice is None else np.array(image_slice))
        return real(path, ref_slice, pred_slice, image_slice, *args, **kwargs)

    monkeypatch.setattr(evaluation, "render_overlay", record)
    return drawn


def _dcmqi_pair(tmp_path, real_ct_dir, real_dicom_dir, pred_as_seg):
    import shutil

    liver = nib.load(str(real_ct_dir / "dcmqi_3slice_liver.nii.gz"))
    eroded = ndimage.binary_erosion(np.asarray(liver.dataobj) > 0, np.ones((3, 3, 1)), iterations=4).astype(np.uint8)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    nib.save(nib.Nifti1Image(eroded, liver.affine), str(tmp_path / "ref" / "dcmqi.nii.gz"))
    if pred_as_seg:
        shutil.copy(real_dicom_dir / "dcmqi_liver_seg.dcm", tmp_path / "pred" / "dcmqi.dcm")
    else:
        shutil.copy(real_ct_dir / "dcmqi_3slice_liver.nii.gz", tmp_path / "pred" / "dcmqi.nii.gz")
    # The NIfTI version of the series, canonical: what the overlays must show.
    return nib.as_closest_canonical(nib.load(str(real_ct_dir / "dcmqi_3slice_ct.nii.gz"))).get_fdata()


def test_seg_overlays_are_drawn_on_its_dicom_series(monkeypatch, tmp_path, real_ct_dir, real_dicom_dir):
    """A SEG prediction with --dicom_dir: the overlays show that series' CT without --image_dir."""
    ct = _dcmqi_pair(tmp_path, real_ct_dir, real_dicom_dir, pred_as_seg=True)
    drawn = _drawn_backgrounds(monkeypatch)
    summary = evaluation.evaluate(str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out"),
                                  dicom_dir=str(real_dicom_dir / "dcmqi_ct3slice"), num_overlays=1, overlay_slices=2)
    assert len(drawn) == len(summary["overlays"]) == 2
    for image, name in zip(drawn, summary["overlays"]):
        z = int(re.search(r"_z(\d+)\.png$", name)[1])
        np.testing.assert_array_equal(image, ct[:, :, z])


def test_image_dir_takes_a_dicom_series_folder(monkeypatch, tmp_path, real_ct_dir, real_dicom_dir):
    """--image_dir with CASE/ a DICOM series (no NIfTI CT): the overlays show it, oriented as the masks."""
    import shutil

    ct = _dcmqi_pair(tmp_path, real_ct_dir, real_dicom_dir, pred_as_seg=False)
    shutil.copytree(real_dicom_dir / "dcmqi_ct3slice", tmp_path / "cts" / "dcmqi")
    drawn = _drawn_backgrounds(monkeypatch)
    summary = evaluation.evaluate(str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out"),
                                  image_dir=str(tmp_path / "cts"), num_overlays=1, overlay_slices=1)
    z = int(re.search(r"_z(\d+)\.png$", summary["overlays"][0])[1])
    assert len(drawn) == 1
    np.testing.assert_array_equal(drawn[0], ct[:, :, z])
    drawn.clear()
    evaluation.evaluate(str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out"), num_overlays=1,
                        overlay_slices=1)
    assert drawn == [None]  # NIfTI masks and no --image_dir: drawn on black
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"^case dcmqi: no CT image dcmqi.nii\[.gz\] or DICOM series folder dcmqi/ in "):
        evaluation.evaluate(str(tmp_path / "pred"), str(tmp_path / "ref"), str(tmp_path / "out"),
                            image_dir=str(tmp_path / "empty"), num_overlays=1)
