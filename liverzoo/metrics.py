"""LiTS segmentation measures in NumPy/SciPy, equal to MedPy 0.5.2 `medpy.metric.binary`.

The LiTS challenge scored submissions with MedPy's definitions (Bilic et al., "The Liver
Tumor Segmentation Benchmark (LiTS)", 2019/2023; scoring code
github.com/PatrickChrist/lits-challenge-scoring). This module reimplements them without
MedPy (a test-only dependency) and adds the LiTS conventions for empty masks.

Definitions (P = prediction, R = reference, both binary):

- `dice` = 2|P∩R| / (|P|+|R|) (MedPy `dc`), `jaccard` = |P∩R| / |P∪R| (MedPy `jc`),
  `voe` = 1 - jaccard, `rvd` = (|P|-|R|) / |R| (MedPy `ravd(P, R)`: positive means
  over-segmentation).
- Surfaces are MedPy's: a mask's border is `mask ^ binary_erosion(mask)` with the
  face-connected (connectivity 1) structure; voxels outside the array count as background.
  `assd` = mean of all border-to-other-border distances in both directions (MedPy 0.5.2
  `assd`, which concatenates the two directed sets), `mssd` = the maximum of them (the
  symmetric Hausdorff distance, MedPy `hd`). Distances are in millimetres from `spacing`.
- `sensitivity` = TP/(TP+FN), `specificity` = TN/(TN+FP), `precision` = TP/(TP+FP);
  nan where the denominator is empty (undefined), which is what MedPy 0.5.2
  `recall`/`specificity`/`precision` return under NumPy 2 (their 0.0 fallback for
  `ZeroDivisionError` never fires on NumPy integers).
- Tumor burden of a label map = |tumor| / |liver incl. tumor|; LiTS reports the RMSE of
  (reference burden - predicted burden) over cases.

Empty masks (MedPy raises for these; the LiTS scoring defines them):

| P, R | dice, jaccard | voe | rvd | assd, mssd |
|---|---|---|---|---|
| both empty | 1.0 (LiTS tumor Dice per case; MedPy `jc`, and `dc`'s intended fallback) | 0.0 | nan (undefined) | nan (undefined) |
| P empty, R not | 0.0 | 1.0 | -1.0 (well defined) | `LITS_PENALTY` |
| R empty, P not | 0.0 | 1.0 | `LITS_PENALTY` | `LITS_PENALTY` |

`LITS_PENALTY` (9001, the `LARGE` value of the LiTS scoring code) is the "maximum
penalty" LiTS assigns to measures that have no meaning when one mask is empty; `nan` means
nothing to measure and is left out of averages (`nanmean`). A predicted label map without
liver gets a tumor burden of `LITS_PENALTY`, as LiTS does (LiTS tests label 1 only; here any
liver voxel, label 1 or 2, counts).

Surface distances run `distance_transform_edt` on the bounding box of P∪R, not on all
pairs of points. This is exact: every border voxel lies inside the box (so the EDT finds the
same nearest one), and just outside the box there is only background, which is also what
erosion assumes beyond the box's edge.

Example:
    >>> import numpy as np
    >>> from liverzoo import metrics
    >>> p = np.zeros((8, 8, 8), bool); p[2:6, 2:6, 2:6] = True
    >>> r = np.zeros_like(p); r[3:7, 2:6, 2:6] = True
    >>> round(metrics.dice(p, r), 3), metrics.mssd(p, r, spacing=(2.0, 1.0, 1.0))
    (0.75, 2.0)
"""
import numpy as np
from scipy import ndimage

from liverzoo.errors import DataError

# The `LARGE` penalty of the LiTS scoring code for measures undefined on an empty mask.
LITS_PENALTY = 9001.0

LIVER, TUMOR = 1, 2
_NAN = float("nan")


def _pair(pred, ref):
    pred = np.asarray(pred).astype(bool, copy=False)
    ref = np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return pred, ref


def _counts(pred, ref):
    """(TP, FP, FN, TN) voxel counts of two boolean masks."""
    tp = int(np.count_nonzero(pred & ref))
    p = int(np.count_nonzero(pred))
    r = int(np.count_nonzero(ref))
    return tp, p - tp, r - tp, pred.size - p - r + tp


def _ratio(num, den, empty):
    return num / den if den else empty


def _overlap(pred, ref):
    """The voxel-count measures of two masks, each defined in one place."""
    tp, fp, fn, tn = _counts(*_pair(pred, ref))
    return {
        "dice": _ratio(2.0 * tp, 2 * tp + fp + fn, 1.0),
        "jaccard": _ratio(float(tp), tp + fp + fn, 1.0),
        "sensitivity": _ratio(float(tp), tp + fn, _NAN),
        "specificity": _ratio(float(tn), tn + fp, _NAN),
        "precision": _ratio(float(tp), tp + fp, _NAN),
        "pred_voxels": tp + fp,
        "ref_voxels": tp + fn,
        "intersection": tp,
    }


def dice(pred, ref):
    """Dice coefficient 2|P∩R|/(|P|+|R|); 1.0 when both masks are empty (LiTS, MedPy `dc`).

    Args:
        pred: predicted mask, any shape; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1].

    Example:
        >>> dice(np.array([1, 1, 0]), np.array([1, 0, 0]))
        0.6666666666666666
    """
    return _overlap(pred, ref)["dice"]


def jaccard(pred, ref):
    """Jaccard index |P∩R|/|P∪R|; 1.0 when both masks are empty (MedPy `jc`).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1].

    Example:
        >>> jaccard(np.array([1, 1, 0]), np.array([1, 0, 0]))
        0.5
    """
    return _overlap(pred, ref)["jaccard"]


def voe(pred, ref):
    """Volumetric overlap error 1 - Jaccard (LiTS VOE).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1].

    Example:
        >>> voe(np.array([1, 1, 0]), np.array([1, 0, 0]))
        0.5
    """
    return 1.0 - jaccard(pred, ref)


def rvd(pred, ref):
    """Relative volume difference (|P|-|R|)/|R| (MedPy `ravd(pred, ref)`), signed.

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float; nan when both masks are empty, `LITS_PENALTY` when only `ref` is empty.

    Example:
        >>> rvd(np.array([1, 1, 0]), np.array([1, 0, 0]))
        1.0
    """
    pred, ref = _pair(pred, ref)
    p, r = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    if r == 0:
        return float("nan") if p == 0 else LITS_PENALTY
    return (p - r) / float(r)


def sensitivity(pred, ref):
    """True positive rate TP/(TP+FN); nan when the reference is empty (MedPy `recall`).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1] or nan.

    Example:
        >>> sensitivity(np.array([1, 0, 0]), np.array([1, 1, 0]))
        0.5
    """
    return _overlap(pred, ref)["sensitivity"]


def specificity(pred, ref):
    """True negative rate TN/(TN+FP); nan when the reference is all foreground (MedPy).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1] or nan.

    Example:
        >>> specificity(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
        0.6666666666666666
    """
    return _overlap(pred, ref)["specificity"]


def precision(pred, ref):
    """Positive predictive value TP/(TP+FP); nan when the prediction is empty (MedPy).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.

    Returns:
        float in [0, 1] or nan.

    Example:
        >>> precision(np.array([1, 1, 0]), np.array([1, 0, 0]))
        0.5
    """
    return _overlap(pred, ref)["precision"]


def _spacing(spacing, ndim):
    if spacing is None:
        return np.ones(ndim)
    spacing = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)).copy()
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise DataError(f"voxel spacing {tuple(spacing)} must be positive and finite")
    return spacing


def _border(mask, structure):
    return mask ^ ndimage.binary_erosion(mask, structure=structure, iterations=1)


def surface_distances(pred, ref, spacing=None):
    """Distances in mm from each border voxel of one mask to the other mask's border.

    Args:
        pred: non-empty predicted mask.
        ref: non-empty reference mask of the same shape.
        spacing: voxel size per axis in mm (a scalar or one value per axis; None = 1).

    Returns:
        (pred_to_ref, ref_to_pred): float64 arrays, one distance per border voxel of `pred`
        (to the nearest border voxel of `ref`) and of `ref`, in MedPy's voxel order.

    Raises:
        DataError: when either mask is empty or the shapes differ.

    Example:
        >>> p = np.zeros((5, 5), bool); p[1:3, 1:3] = True
        >>> d_pr, d_rp = surface_distances(p, np.roll(p, 1, axis=0))
        >>> float(d_pr.max())
        1.0
    """
    pred, ref = _pair(pred, ref)
    if not pred.any() or not ref.any():
        raise DataError("surface distances need a non-empty prediction and reference")
    spacing = _spacing(spacing, pred.ndim)
    # Crop to the union's bounding box: background surrounds it, which is what erosion
    # assumes past the crop's edge, and all border voxels are inside, so it is exact.
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    structure = ndimage.generate_binary_structure(pred.ndim, 1)
    pred_border = _border(pred[box], structure)
    ref_border = _border(ref[box], structure)
    to_ref = ndimage.distance_transform_edt(~ref_border, sampling=spacing)[pred_border]
    to_pred = ndimage.distance_transform_edt(~pred_border, sampling=spacing)[ref_border]
    return to_ref, to_pred


def _surface_measure(pred, ref, spacing, reduce):
    pred, ref = _pair(pred, ref)
    has_p, has_r = pred.any(), ref.any()
    if not has_p and not has_r:
        return float("nan")
    if not has_p or not has_r:
        return LITS_PENALTY
    return reduce(*surface_distances(pred, ref, spacing))


def _assd(to_ref, to_pred):
    return float(np.concatenate([to_ref, to_pred]).mean())


def _mssd(to_ref, to_pred):
    return float(max(to_ref.max(), to_pred.max()))


def assd(pred, ref, spacing=None):
    """Average symmetric surface distance in mm (MedPy 0.5.2 `assd`).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.
        spacing: voxel size per axis in mm.

    Returns:
        float; nan when both masks are empty, `LITS_PENALTY` when one is.

    Example:
        >>> p = np.zeros((6, 6), bool); p[1:4, 1:4] = True
        >>> assd(p, p, spacing=(1.0, 2.0))
        0.0
    """
    return _surface_measure(pred, ref, spacing, _assd)


def mssd(pred, ref, spacing=None):
    """Maximum symmetric surface distance (symmetric Hausdorff) in mm (MedPy `hd`).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.
        spacing: voxel size per axis in mm.

    Returns:
        float; nan when both masks are empty, `LITS_PENALTY` when one is.

    Example:
        >>> p = np.zeros((6, 6), bool); p[1:3, 1:3] = True
        >>> mssd(p, np.roll(p, 2, axis=1), spacing=(1.0, 2.0))
        4.0
    """
    return _surface_measure(pred, ref, spacing, _mssd)


def binary_scores(pred, ref, spacing=None):
    """Every per-mask LiTS measure at once (one pass over the surfaces).

    Args:
        pred: predicted mask; nonzero is foreground.
        ref: reference mask of the same shape.
        spacing: voxel size per axis in mm.

    Returns:
        dict with dice, jaccard, voe, rvd, assd, mssd, sensitivity, specificity, precision,
        and the voxel counts pred_voxels, ref_voxels, intersection.

    Example:
        >>> s = binary_scores(np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]]))
        >>> s["dice"], s["rvd"], s["mssd"]
        (0.6666666666666666, 1.0, 1.0)
    """
    pred, ref = _pair(pred, ref)
    scores = _overlap(pred, ref)
    scores["voe"] = 1.0 - scores["jaccard"]
    scores["rvd"] = rvd(pred, ref)
    if scores["pred_voxels"] and scores["ref_voxels"]:
        distances = surface_distances(pred, ref, spacing)
        scores["assd"], scores["mssd"] = _assd(*distances), _mssd(*distances)
    else:
        scores["assd"] = scores["mssd"] = _surface_measure(pred, ref, spacing, None)
    return scores


def check_labels(labels, name="mask"):
    """Checks a LiTS label map (integers in {0, 1, 2}) and returns it as uint8.

    Args:
        labels: array of labels.
        name: what to call it in the error (a case or file name).

    Returns:
        uint8 array of the same shape.

    Raises:
        DataError: for values outside {0, 1, 2} or non-integer values.

    Example:
        >>> check_labels(np.array([0.0, 2.0])).dtype
        dtype('uint8')
    """
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        rounded = np.rint(labels) if labels.dtype.kind == "f" else labels
        if labels.dtype.kind == "f" and not np.array_equal(rounded, labels):
            raise DataError(f"{name}: labels must be integers 0, 1, 2 (found non-integer values)")
        if labels.size and (rounded.min() < 0 or rounded.max() > 255):
            bad = rounded[(rounded < 0) | (rounded > 255)].flat[0]
            raise DataError(f"{name}: label value {bad:g} is outside {{0, 1, 2}}")
        labels = rounded.astype(np.uint8)
    if labels.size and labels.max() > TUMOR:
        raise DataError(f"{name}: label value {int(labels.max())} is outside {{0, 1, 2}}")
    return labels


def tumor_burden(labels):
    """Tumor burden |tumor| / |liver incl. tumor| of a LiTS label map.

    Args:
        labels: label map with 0 = background, 1 = liver, 2 = tumor.

    Returns:
        float in [0, 1]; 0.0 for a map without liver.

    Example:
        >>> tumor_burden(np.array([0, 1, 1, 2]))
        0.3333333333333333
    """
    labels = np.asarray(labels)
    liver = int(np.count_nonzero(labels >= LIVER))
    return int(np.count_nonzero(labels == TUMOR)) / liver if liver else 0.0


def tumor_burden_error(pred_labels, ref_labels):
    """Reference minus predicted tumor burden (the LiTS per-case term of the RMSE).

    Args:
        pred_labels: predicted label map.
        ref_labels: reference label map.

    Returns:
        float; the predicted burden is `LITS_PENALTY` when the prediction has no liver
        but the reference has.

    Example:
        >>> tumor_burden_error(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 2]))
        -0.25
    """
    pred_labels, ref_labels = np.asarray(pred_labels), np.asarray(ref_labels)
    if not np.any(pred_labels >= LIVER) and np.any(ref_labels >= LIVER):
        return tumor_burden(ref_labels) - LITS_PENALTY
    return tumor_burden(ref_labels) - tumor_burden(pred_labels)


def rmse(errors):
    """Root mean square of per-case errors (LiTS tumor-burden RMSE).

    Args:
        errors: per-case values, e.g. from `tumor_burden_error`.

    Returns:
        float; nan for an empty list.

    Example:
        >>> rmse([0.3, -0.4])
        0.3535533905932738
    """
    errors = np.asarray(errors, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(errors)))) if errors.size else float("nan")


def case_scores(pred_labels, ref_labels, spacing=None, name="case"):
    """LiTS measures of one case: liver (labels >= 1) and tumor (label 2) masks.

    Args:
        pred_labels: predicted label map (0/1/2).
        ref_labels: reference label map of the same shape.
        spacing: voxel size per axis in mm.
        name: case name for error messages.

    Returns:
        {"liver": binary_scores, "tumor": binary_scores, "tumor_burden_pred": float,
        "tumor_burden_ref": float, "tumor_burden_error": float}.

    Raises:
        DataError: for different shapes or labels outside {0, 1, 2}.

    Example:
        >>> s = case_scores(np.array([[0, 1], [1, 2]]), np.array([[0, 1], [2, 2]]))
        >>> s["liver"]["dice"], s["tumor"]["dice"]
        (1.0, 0.6666666666666666)
    """
    pred_labels = check_labels(pred_labels, f"{name} (prediction)")
    ref_labels = check_labels(ref_labels, f"{name} (reference)")
    if pred_labels.shape != ref_labels.shape:
        raise DataError(
            f"{name}: prediction shape {pred_labels.shape} differs from reference shape {ref_labels.shape}"
        )
    return {
        "liver": binary_scores(pred_labels >= LIVER, ref_labels >= LIVER, spacing),
        "tumor": binary_scores(pred_labels == TUMOR, ref_labels == TUMOR, spacing),
        "tumor_burden_pred": tumor_burden(pred_labels),
        "tumor_burden_ref": tumor_burden(ref_labels),
        "tumor_burden_error": tumor_burden_error(pred_labels, ref_labels),
    }
