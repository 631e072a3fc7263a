"""liverzoo.lesions: lesion-wise detection as the LiTS scorer counts it, per-lesion scores.

Checked three ways: hand-built cases with known answers, a brute-force implementation of the
definitions (written here, full-volume masks and plain loops) on random masks, and a port of
the challenge's scorer (tests/lits_scorer_port.py) on LiTS case 117 with perturbed predictions.
"""
import math

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as mp
from scipy import ndimage

from liverzoo import lesions
from liverzoo.errors import DataError
from tests import lits_scorer_port as scorer
from tests.conftest import REPO

SPACING = (0.8, 0.9, 2.5)


def volume(*boxes, shape=(24, 24, 6)):
    """A boolean mask with the given (x0, x1, y0, y1, z0, z1) boxes set."""
    mask = np.zeros(shape, bool)
    for x0, x1, y0, y1, z0, z1 in boxes:
        mask[x0:x1, y0:y1, z0:z1] = True
    return mask


def counts(result):
    return tuple(result[k] for k in ("tp", "fp", "fn", "merges", "splits"))


def test_perfect_lesion():
    ref = volume((4, 10, 4, 10, 1, 4))
    result = lesions.detect_lesions(ref, ref, SPACING)
    assert counts(result) == (1, 0, 0, 0, 0)
    lesion = result["lesions"][0]
    assert lesion["detected"] and lesion["iou"] == 1.0 and lesion["dice"] == 1.0
    assert lesion["assd"] == lesion["mssd"] == lesion["rvd"] == 0.0
    assert lesion["volume_ml"] == pytest.approx(6 * 6 * 3 * np.prod(SPACING) / 1000)
    assert lesion["diameter_mm"] == pytest.approx((6 * 6 * 6 * 3 * np.prod(SPACING) / math.pi) ** (1 / 3))


def test_lesion_split_into_two_predictions():
    ref = volume((4, 12, 4, 10, 1, 4))
    pred = volume((4, 8, 4, 10, 1, 4), (9, 12, 4, 10, 1, 4))  # a one-voxel gap in x
    result = lesions.detect_lesions(pred, ref, SPACING)
    assert counts(result) == (1, 0, 0, 0, 1)
    lesion = result["lesions"][0]
    assert lesion["pred_lesions"] == [1, 2] and lesion["iou"] == pytest.approx(7 / 8)
    assert lesion["dice"] == pytest.approx(mp.dc(pred, ref))


def test_two_lesions_bridged_by_one_prediction():
    ref = volume((4, 8, 4, 10, 1, 4), (10, 14, 4, 10, 1, 4))
    pred = volume((4, 14, 4, 10, 1, 4))
    result = lesions.detect_lesions(pred, ref, SPACING)
    assert counts(result) == (2, 0, 0, 1, 0)
    assert [x["merged_lesions"] for x in result["lesions"]] == [[1, 2], [1, 2]]
    assert result["lesions"][0]["dice"] == result["lesions"][1]["dice"] == pytest.approx(mp.dc(pred, ref))


def test_iou_exactly_one_half_is_not_detected():
    ref = volume((4, 8, 4, 8, 2, 3))
    pred = volume((4, 6, 4, 8, 2, 3))  # 8 of 16 voxels: IoU 0.5
    result = lesions.detect_lesions(pred, ref, SPACING)
    assert result["lesions"][0]["iou"] == 0.5
    assert counts(result) == (0, 1, 1, 0, 0)
    assert result["lesions"][0]["dice"] == 0.0 and result["lesions"][0]["assd"] == lesions.UNDETECTED["assd"]
    assert counts(lesions.detect_lesions(pred, ref, SPACING, min_overlap=0.0)) == (1, 0, 0, 0, 0)


def test_tumor_free_case_with_a_false_positive_blob():
    pred = volume((4, 6, 4, 6, 2, 3))
    result = lesions.detect_lesions(pred, np.zeros_like(pred), SPACING)
    assert counts(result) == (0, 1, 0, 0, 0) and result["lesions"] == []
    summary = lesions.summarize_lesions([result])
    assert summary["precision"] == 0.0 and summary["recall"] is None and summary["f1"] is None
    assert summary["per_lesion"]["dice"] is None and summary["num_detected"] == 0


def test_fragments_one_voxel_apart_in_plane_merge_only_when_asked():
    ref = volume((4, 8, 4, 8, 2, 3), (9, 12, 4, 8, 2, 3))  # one empty voxel between them in x
    pred = volume((4, 12, 4, 8, 2, 3))
    plain = lesions.detect_lesions(pred, ref, SPACING)
    merged = lesions.detect_lesions(pred, ref, SPACING, merge_fragments=True)
    assert plain["num_reference"] == 2 and merged["num_reference"] == 1
    assert counts(plain) == (2, 0, 0, 1, 0) and counts(merged) == (1, 0, 0, 0, 0)
    # One voxel apart in z is a different lesion even with merge_fragments (z is not dilated).
    stacked = volume((4, 8, 4, 8, 1, 2), (4, 8, 4, 8, 3, 4))
    assert lesions.label_lesions(stacked, merge_fragments=True)[1] == 2
    # Both fragments grow by one voxel: a gap of two background voxels closes, three do not.
    near = volume((4, 8, 4, 8, 2, 3), (10, 12, 4, 8, 2, 3))
    apart = volume((4, 8, 4, 8, 2, 3), (11, 13, 4, 8, 2, 3))
    assert lesions.label_lesions(near, merge_fragments=True)[1] == 1
    assert lesions.label_lesions(apart, merge_fragments=True)[1] == 2


def test_bad_arguments():
    with pytest.raises(DataError, match="min_overlap"):
        lesions.detect_lesions(volume(), volume(), min_overlap=1.5)
    with pytest.raises(DataError, match="shape"):
        lesions.detect_lesions(volume(), volume(shape=(3, 3, 3)))
    assert counts(lesions.detect_lesions(volume(), volume())) == (0, 0, 0, 0, 0)


def test_per_lesion_scores_equal_medpy_and_the_scorer_surface():
    ref = volume((3, 11, 4, 12, 1, 5))
    pred = volume((4, 12, 3, 10, 1, 4))
    lesion = lesions.detect_lesions(pred, ref, SPACING, min_overlap=0.0)["lesions"][0]
    assert lesion["detected"] and lesion["dice"] == pytest.approx(mp.dc(pred, ref), abs=1e-12)
    assert lesion["jaccard"] == pytest.approx(mp.jc(pred, ref), abs=1e-12)
    assert lesion["rvd"] == pytest.approx(mp.ravd(ref, pred), abs=1e-12)  # the scorer's ravd(reference, prediction)
    assert lesion["assd"] == pytest.approx(mp.assd(pred, ref, SPACING, connectivity=2), abs=1e-9)
    assert lesion["mssd"] == pytest.approx(mp.hd(pred, ref, SPACING, connectivity=2), abs=1e-9)
    port = scorer.segmentation_scores(pred.astype(int), ref.astype(int), SPACING, {1: 1})[1]
    for measure in lesions.LESION_MEASURES:
        assert lesion[measure] == pytest.approx(port[measure], abs=1e-9), measure


def brute_force(pred, ref, min_overlap, merge_fragments=False):
    """The definitions of liverzoo.lesions' module doc, on full-volume masks with plain loops."""
    p_lab, n_p = ndimage.label(pred)
    if merge_fragments:
        cross = np.zeros((3, 3, 1), bool)
        cross[1, :, 0] = cross[:, 1, 0] = True
        g_lab, n_g = ndimage.label(ndimage.binary_dilation(ref, cross))
        g_lab = np.where(ref, g_lab, 0)
    else:
        g_lab, n_g = ndimage.label(ref)
    P = [p_lab == i for i in range(1, n_p + 1)]
    G = [g_lab == j for j in range(1, n_g + 1)]
    owner = {}
    for j in range(n_g):
        overlaps = [np.count_nonzero(P[i] & G[j]) for i in range(n_p)]
        if any(overlaps):
            owner[j] = int(np.argmax(overlaps))  # first maximum = lowest label
    groups = []
    for j in range(n_g):
        if j in owner and any(owner.get(k) == owner[j] for k in range(j)):
            continue  # joined the group of a lower lesion with the same owner
        groups.append([k for k in range(n_g) if k == j or (j in owner and owner.get(k) == owner[j])])
    members = [[] for _ in groups]
    for i in range(n_p):
        overlaps = [sum(np.count_nonzero(P[i] & G[k]) for k in grp) for grp in groups]
        if any(overlaps):
            members[int(np.argmax(overlaps))].append(i)
    tp = fn = merges = splits = 0
    in_detected = 0
    dices = []
    for grp, preds in zip(groups, members):
        merges += len(grp) - 1
        splits += max(0, len(preds) - len(grp))
        pm = np.zeros_like(pred)
        for i in preds:
            pm |= P[i]
        gm = np.zeros_like(ref)
        for k in grp:
            gm |= G[k]
        if preds and np.count_nonzero(pm & gm) / np.count_nonzero(pm | gm) > min_overlap:
            tp += len(grp)
            in_detected += len(preds)
            dices += [mp.dc(pm, gm)] * len(grp)
        elif n_g:
            fn += 1
    return (tp, n_p - in_detected, fn, merges, splits), dices


def random_mask(rng, shape, count):
    mask = np.zeros(shape, bool)
    for _ in range(count):
        centre = rng.integers(0, shape)
        size = rng.integers(1, 4, size=3)
        mask[tuple(slice(c, c + s) for c, s in zip(centre, size))] = True
    return mask


@pytest.mark.parametrize("seed", range(40))
def test_random_masks_against_brute_force_and_scorer_port(seed):
    rng = np.random.default_rng(seed)
    shape = (14, 13, 5)
    ref = random_mask(rng, shape, int(rng.integers(0, 7)))
    pred = ref.copy() if seed % 3 else np.zeros(shape, bool)
    pred = ndimage.binary_dilation(pred) if seed % 4 == 0 else pred
    pred ^= random_mask(rng, shape, int(rng.integers(0, 8)))
    min_overlap = (0.5, 0.0, 0.3)[seed % 3]
    merge = seed % 5 == 0
    result = lesions.detect_lesions(pred, ref, SPACING, min_overlap=min_overlap, merge_fragments=merge)
    expected, dices = brute_force(pred, ref, min_overlap, merge)
    assert counts(result) == expected
    assert sorted(x["dice"] for x in result["lesions"] if x["detected"]) == pytest.approx(sorted(dices))
    port = scorer.score_cases([(pred * 2, ref * 2)], SPACING, min_overlap, merge)
    assert counts(result) == tuple(port[k] for k in ("tp", "fp", "fn", "merges", "splits"))


def lits117_predictions():
    """LiTS case 117's labels and predictions made by perturbing its tumors."""
    ref = np.asarray(nib.load(str(REPO / "liverzoo" / "data" / "demo" / "lits117_crop128_seg.nii.gz")).dataobj)
    ref = ref.astype(np.uint8)
    tumor = ref == 2
    labels, count = ndimage.label(tumor)
    rng = np.random.default_rng(117)
    preds = {}
    preds["eroded"] = np.where(tumor & ~ndimage.binary_erosion(tumor), 1, ref)
    dilated = ndimage.binary_dilation(tumor, iterations=2) & (ref >= 1)
    preds["dilated"] = np.where(dilated, 2, ref)  # bridges neighbouring lesions: merges
    dropped = np.isin(labels, rng.choice(np.arange(1, count + 1), count // 3, replace=False))
    preds["dropped"] = np.where(dropped, 1, ref)
    split = ref.copy()
    split[:, ::6, :][split[:, ::6, :] == 2] = 1  # cuts lesions into slabs: splits
    preds["split"] = split
    shifted = np.roll(tumor, (2, -1, 1), axis=(0, 1, 2))
    noisy = np.where(ref >= 1, 1, 0).astype(np.uint8)
    noisy[shifted] = 2
    for _ in range(15):  # false-positive blobs
        c = rng.integers(10, 118, size=3)
        noisy[c[0]:c[0] + 3, c[1]:c[1] + 2, c[2]:c[2] + 2] = 2
    preds["shifted"] = noisy
    return ref, preds


@pytest.mark.parametrize("min_overlap,merge", [(0.5, False), (0.0, True)], ids=["iou0.5", "iou0-merge_fragments"])
def test_lits117_equals_the_challenge_scorer(min_overlap, merge):
    ref, preds = lits117_predictions()
    spacing = (1.0, 1.0, 1.0)
    results = [lesions.detect_lesions(p == 2, ref == 2, spacing, min_overlap=min_overlap, merge_fragments=merge)
               for p in preds.values()]
    summary = lesions.summarize_lesions(results)
    port = scorer.score_cases([(p, ref) for p in preds.values()], spacing, min_overlap, merge)
    assert summary["num_reference"] >= 5 * (60 if not merge else 40)  # many lesions per case
    for key in ("tp", "fp", "fn", "merges", "splits"):
        assert summary[key] == port[key], key
    assert summary["precision"] == pytest.approx(port["precision"], abs=1e-12)
    assert summary["recall"] == pytest.approx(port["recall"], abs=1e-12)
    assert summary["per_lesion"]["dice"] == pytest.approx(port["mean_dice"], abs=1e-12)
    assert summary["merges"] > 0 and summary["splits"] > 0 and summary["fp"] > 0 and summary["fn"] > 0


def test_summary_by_size_and_f1():
    def lesion(d, hit):
        return {"diameter_mm": d, "detected": hit, **{m: 0.5 for m in lesions.LESION_MEASURES}}

    case = {"tp": 2, "fp": 2, "fn": 2, "merges": 0, "splits": 0, "num_reference": 4, "num_predicted": 4,
            "lesions": [lesion(5.0, True), lesion(9.99, False), lesion(20.0, True), lesion(30.0, False)]}
    summary = lesions.summarize_lesions([case], min_overlap=0.5)
    assert [(b["size"], b["reference"], b["detected"]) for b in summary["by_size"]] == [
        ("<10 mm", 2, 1), ("10-20 mm", 1, 1), (">20 mm", 1, 0)]
    assert summary["f1"] == 0.5 and summary["per_lesion"]["dice"] == 0.5 and summary["num_detected"] == 2
