"""liverzoo.metrics against MedPy 0.5.2 (the LiTS challenge's own definitions)."""
import math

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as mp
from scipy import ndimage

from liverzoo import metrics
from liverzoo.errors import DataError

TOL = 1e-6


def blob(shape, seed, threshold=0.55, sigma=1.5):
    """Random smooth blobs; thresholds chosen so some touch the array edge."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, threshold)


def single(shape, index):
    mask = np.zeros(shape, bool)
    mask[index] = True
    return mask


SHAPE = (14, 11, 9)
# (name, pred, ref, spacing): random blobs, anisotropic spacing, edges, single voxels, 2D.
PAIRS = [
    ("blobs_iso", blob(SHAPE, 0), blob(SHAPE, 1), None),
    ("blobs_aniso", blob(SHAPE, 2), blob(SHAPE, 3), (0.7, 0.8, 2.5)),
    ("blobs_sparse", blob(SHAPE, 4, 0.9, 0.8), blob(SHAPE, 5, 0.85, 0.8), (1.5, 0.6, 3.0)),
    ("full_vs_blob", np.ones(SHAPE, bool), blob(SHAPE, 6), (0.9, 0.9, 1.2)),
    ("single_voxels", single(SHAPE, (0, 0, 0)), single(SHAPE, (13, 10, 8)), (0.5, 1.0, 2.0)),
    ("single_vs_blob", single(SHAPE, (7, 5, 4)), blob(SHAPE, 7), (0.8, 0.8, 5.0)),
    ("identical", blob(SHAPE, 8), blob(SHAPE, 8), (1.0, 2.0, 3.0)),
    ("plane_2d", blob((40, 30), 9, sigma=2.0), blob((40, 30), 10, sigma=2.0), (0.6, 1.7)),
]
EMPTY = np.zeros(SHAPE, bool)
EMPTY_PAIRS = [
    ("both_empty", EMPTY, EMPTY),
    ("pred_empty", EMPTY, blob(SHAPE, 11)),
    ("ref_empty", blob(SHAPE, 12), EMPTY),
]


def assert_close(ours, theirs, name):
    """Equal to 1e-6; nan (undefined) only where the reference value is nan too."""
    if math.isnan(theirs):
        assert math.isnan(ours), (name, ours, theirs)
    else:
        assert math.isclose(ours, theirs, rel_tol=0, abs_tol=TOL), (name, ours, theirs)


@pytest.mark.parametrize("name,pred,ref,spacing", PAIRS, ids=[p[0] for p in PAIRS])
def test_equals_medpy(name, pred, ref, spacing):
    assert_close(metrics.dice(pred, ref), mp.dc(pred, ref), "dice")
    assert_close(metrics.jaccard(pred, ref), mp.jc(pred, ref), "jaccard")
    assert_close(metrics.voe(pred, ref), 1 - mp.jc(pred, ref), "voe")
    assert_close(metrics.rvd(pred, ref), mp.ravd(pred, ref), "rvd")
    assert_close(metrics.assd(pred, ref, spacing), mp.assd(pred, ref, voxelspacing=spacing), "assd")
    assert_close(metrics.mssd(pred, ref, spacing), mp.hd(pred, ref, voxelspacing=spacing), "mssd")
    assert_close(metrics.sensitivity(pred, ref), mp.sensitivity(pred, ref), "sensitivity")
    assert_close(metrics.specificity(pred, ref), mp.specificity(pred, ref), "specificity")
    assert_close(metrics.precision(pred, ref), mp.precision(pred, ref), "precision")
    # The one-pass dict agrees with the single functions.
    scores = metrics.binary_scores(pred, ref, spacing)
    assert_close(scores["assd"], mp.assd(pred, ref, voxelspacing=spacing), "binary_scores assd")
    assert_close(scores["mssd"], mp.hd(pred, ref, voxelspacing=spacing), "binary_scores mssd")
    assert scores["pred_voxels"] == pred.sum() and scores["ref_voxels"] == ref.sum()


def test_surface_distances_equal_medpy_directed():
    """The bounding-box crop gives MedPy's directed distances, in its voxel order."""
    pred, ref, spacing = blob(SHAPE, 13), blob(SHAPE, 14), (0.7, 1.1, 2.9)
    to_ref, to_pred = metrics.surface_distances(pred, ref, spacing)
    surface = getattr(mp, "__surface_distances")
    np.testing.assert_allclose(to_ref, surface(pred, ref, spacing), atol=TOL)
    np.testing.assert_allclose(to_pred, surface(ref, pred, spacing), atol=TOL)


def test_small_objects_in_large_array_use_box():
    """Far-apart small objects in a big volume: equal to MedPy; the crop must be exact."""
    pred = np.zeros((60, 50, 40), bool)
    ref = np.zeros_like(pred)
    pred[5:9, 6:9, 3:5] = True
    ref[50:55, 40:44, 30:38] = True
    ref[6, 7, 4] = True
    spacing = (0.8, 0.8, 2.5)
    assert_close(metrics.mssd(pred, ref, spacing), mp.hd(pred, ref, voxelspacing=spacing), "mssd")
    assert_close(metrics.assd(pred, ref, spacing), mp.assd(pred, ref, voxelspacing=spacing), "assd")


@pytest.mark.parametrize("name,pred,ref", EMPTY_PAIRS, ids=[p[0] for p in EMPTY_PAIRS])
def test_empty_masks(name, pred, ref):
    """MedPy where it answers; the documented LiTS convention where it raises."""
    with np.errstate(invalid="ignore"):  # MedPy divides NumPy zeros: nan plus a warning
        medpy_dc = mp.dc(pred, ref)
        ratios = [(metrics.sensitivity, mp.sensitivity(pred, ref)), (metrics.specificity, mp.specificity(pred, ref)),
                  (metrics.precision, mp.precision(pred, ref))]
    if pred.any() or ref.any():
        assert_close(metrics.dice(pred, ref), medpy_dc, "dice")
    assert_close(metrics.jaccard(pred, ref), mp.jc(pred, ref), "jaccard")
    for ours, theirs in ratios:
        assert_close(ours(pred, ref), theirs, ours.__name__)
    with pytest.raises(RuntimeError):
        mp.hd(pred, ref)
    scores = metrics.binary_scores(pred, ref, (1.0, 1.0, 2.0))
    if not pred.any() and not ref.any():
        assert metrics.dice(pred, ref) == 1.0  # LiTS: a tumor-free case predicted tumor-free
        for key in ("rvd", "assd", "mssd"):
            assert math.isnan(scores[key]), key
    else:
        assert metrics.dice(pred, ref) == 0.0 and metrics.voe(pred, ref) == 1.0
        assert scores["assd"] == scores["mssd"] == metrics.LITS_PENALTY
        if ref.any():
            assert_close(metrics.rvd(pred, ref), mp.ravd(pred, ref), "rvd")
            assert metrics.rvd(pred, ref) == -1.0
        else:
            assert metrics.rvd(pred, ref) == metrics.LITS_PENALTY
    with pytest.raises(DataError, match="non-empty"):
        metrics.surface_distances(pred, ref)


def _perturb(mask, seed):
    """A realistic wrong prediction: eroded, shifted, with a spurious distant blob."""
    rng = np.random.default_rng(seed)
    out = ndimage.binary_erosion(mask, iterations=2)
    out = np.roll(out, int(rng.integers(1, 4)), axis=0)
    out[:4, :4, : min(4, out.shape[2])] = True
    return out


@pytest.fixture(scope="module")
def real_masks(real_ct_dir):
    out = []
    for fname in ("lits117_crop128_seg.nii.gz", "totalseg_example_liver_pred.nii.gz", "dcmqi_3slice_liver.nii.gz"):
        img = nib.load(str(real_ct_dir / fname))
        labels = np.asarray(img.dataobj).astype(np.uint8)
        out.append((fname, labels, tuple(float(z) for z in img.header.get_zooms()[:3])))
    return out


def test_real_masks_equal_medpy(real_masks):
    for fname, labels, spacing in real_masks:
        for ref in (labels >= 1, labels == 2):
            if not ref.any():
                continue
            pred = _perturb(ref, len(fname))
            scores = metrics.binary_scores(pred, ref, spacing)
            assert_close(scores["dice"], mp.dc(pred, ref), fname)
            assert_close(scores["jaccard"], mp.jc(pred, ref), fname)
            assert_close(scores["rvd"], mp.ravd(pred, ref), fname)
            assert_close(scores["assd"], mp.assd(pred, ref, voxelspacing=spacing), fname)
            assert_close(scores["mssd"], mp.hd(pred, ref, voxelspacing=spacing), fname)
            assert_close(scores["precision"], mp.precision(pred, ref), fname)


def test_tumor_burden_and_case_scores():
    ref = np.zeros((6, 6, 4), np.uint8)
    ref[1:5, 1:5] = 1
    ref[2:4, 2:4] = 2  # 2x2x4 = 16 tumor of 4x4x4 = 64 liver voxels
    pred = ref.copy()
    pred[2:4, 1:5] = 2  # 2x4x4 = 32 tumor voxels
    assert metrics.tumor_burden(ref) == 16 / 64
    assert metrics.tumor_burden_error(pred, ref) == 16 / 64 - 32 / 64
    no_liver = np.zeros_like(ref)
    assert metrics.tumor_burden_error(no_liver, ref) == 16 / 64 - metrics.LITS_PENALTY
    assert metrics.tumor_burden_error(no_liver, no_liver) == 0.0
    assert_close(metrics.rmse([0.3, -0.4, 0.0]), np.sqrt((0.09 + 0.16) / 3), "rmse")

    scores = metrics.case_scores(pred, ref, (1.0, 1.0, 2.0))
    assert scores["liver"]["dice"] == 1.0
    assert_close(scores["tumor"]["dice"], mp.dc(pred == 2, ref == 2), "tumor dice")
    assert_close(scores["tumor"]["mssd"], mp.hd(pred == 2, ref == 2, voxelspacing=(1, 1, 2)), "tumor mssd")


BAD_LABELS = [
    (np.full((3, 3), 3, np.uint8), "label value 3"),
    (np.array([0.0, 1.5]), "non-integer"),
    (np.array([-1, 0], np.int16), "label value -1"),
]


@pytest.mark.parametrize("labels,match", BAD_LABELS)
def test_bad_labels_raise(labels, match):
    with pytest.raises(DataError, match=match):
        metrics.check_labels(labels, "case_7")


def test_shape_mismatch_and_spacing_raise():
    with pytest.raises(DataError, match="case_3.*shape"):
        metrics.case_scores(np.zeros((4, 4)), np.zeros((4, 5)), name="case_3")
    with pytest.raises(DataError, match="spacing"):
        metrics.assd(single((3, 3), (1, 1)), single((3, 3), (0, 0)), spacing=(1.0, 0.0))
