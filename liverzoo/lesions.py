"""Lesion-wise detection and per-lesion scores, as the LiTS challenge scored them.

The definitions are those of the challenge's scoring code (Bilic et al., "The Liver Tumor
Segmentation Benchmark (LiTS)", MedIA 2023; github.com/veugene/lits-challenge-scoring,
`program/helpers/calc_metric.py`: `detect_lesions`, `compute_segmentation_scores`),
reimplemented here on sparse overlap counts and bounding boxes:

1. Lesions are the connected components (`scipy.ndimage.label`, 6-connectivity) of the
   predicted and of the reference tumor masks (label 2). With `merge_fragments` (the
   post-challenge analysis of Bilic et al. 2023), the reference mask is first dilated in-plane
   by a 3x3 cross (array axes 0 and 1; axis 2, z, untouched), labelled, and trimmed back, so
   reference fragments one voxel apart in-plane count as one lesion (both grow by a voxel:
   gaps of up to two background voxels along x or y close).
2. Only predicted lesions that overlap a reference lesion take part in matching. Each
   reference lesion that overlaps any prediction is owned by the prediction it overlaps most
   (ties: the lowest prediction label); the reference lesions with the same owner form one
   *merged* group (a merge error for each lesion beyond the first).
3. Each overlapping prediction is then matched to the (merged) group it overlaps most (ties:
   the group whose lowest reference label is lowest); the predictions matched to one group are
   taken together (a split error for each prediction beyond the group's reference count).
4. A group is detected iff IoU = |P∩G| / |P∪G| of its predictions P and references G is
   strictly greater than `min_overlap` (the challenge reports 0.5 and 0). Counts, as the
   scorer accumulates them: TP = the reference lesions in detected groups, FN = the groups not
   detected (a merged group counts once here: the scorer's asymmetry, kept so that figures
   equal the challenge's), FP = the predicted lesions not in a detected group. A case without
   reference tumor has TP = FN = 0 and every predicted lesion a FP (the scorer's code fails on
   such a case; this is its natural reading).
5. Per-lesion scores of a reference lesion in a detected group are those of the group:
   Dice, Jaccard, VOE, RVD = (|G|-|P|)/|P| (the scorer's MedPy `ravd(reference, prediction)`,
   the opposite sign and denominator of the volume-level `metrics.rvd`), and the surface
   distances ASSD, RMSD and MSSD (maximum) in mm between borders found with the scorer's
   18-neighbourhood erosion (MedPy's `connectivity=2`; the volume-level measures of
   `liverzoo.metrics` use MedPy's default face neighbourhood). A lesion that
   is not detected gets the scorer's values: Dice 0, Jaccard 0, VOE 1 and `LITS_PENALTY` for
   the others; summaries average the detected lesions only, as the challenge did.

Two known defects of the scorer are not reproduced: it stores group ids in `uint8` (wrong
beyond 255 lesions), and its multiprocessing dilation drops the last few reference voxels.

Example:
    >>> import numpy as np
    >>> ref = np.zeros((12, 12, 3), np.uint8); ref[2:6, 2:6, 1] = 2; ref[8:11, 8:11, 1] = 2
    >>> pred = ref.copy(); pred[8:11, 8:11, 1] = 0
    >>> result = detect_lesions(pred == 2, ref == 2)
    >>> result["tp"], result["fp"], result["fn"]
    (1, 0, 1)
"""
import math

import numpy as np
from scipy import ndimage

from liverzoo import metrics
from liverzoo.errors import DataError

LESION_MEASURES = ("dice", "jaccard", "voe", "rvd", "assd", "rmsd", "mssd")
# What the scorer records for a reference lesion it did not detect.
UNDETECTED = {"dice": 0.0, "jaccard": 0.0, "voe": 1.0, "rvd": metrics.LITS_PENALTY,
              "assd": metrics.LITS_PENALTY, "rmsd": metrics.LITS_PENALTY, "mssd": metrics.LITS_PENALTY}
# Equivalent-diameter bins (mm) of the detection-by-size table: d < 10, 10 <= d <= 20, d > 20.
SIZE_BINS = ("<10 mm", "10-20 mm", ">20 mm")
_IN_PLANE_CROSS = ndimage.generate_binary_structure(2, 1)[:, :, None]
_EIGHTEEN = ndimage.generate_binary_structure(3, 2)


def label_lesions(mask, merge_fragments=False):
    """Connected components (6-connectivity) of a tumor mask.

    Args:
        mask: boolean tumor mask (X, Y, Z).
        merge_fragments: join components one voxel apart in-plane (see the module doc).

    Returns:
        (int32 labels, number of lesions); a lesion may be several fragments when merged.

    Example:
        >>> m = np.zeros((5, 1, 1), bool); m[[0, 2]] = True
        >>> label_lesions(m)[1], label_lesions(m, merge_fragments=True)[1]
        (2, 1)
    """
    mask = np.asarray(mask, bool)
    if not merge_fragments:
        return ndimage.label(mask)
    # Every dilated component holds an original voxel, so labels stay 1..count after trimming.
    labels, count = ndimage.label(ndimage.binary_dilation(mask, structure=_IN_PLANE_CROSS))
    labels[~mask] = 0
    return labels, count


def _crop(pred, ref):
    """Slices of the bounding box of pred | ref, one voxel wider (None if both are empty).

    Components, overlaps and in-plane dilation inside it equal those of the whole volume:
    outside it there is only background.
    """
    union = pred | ref
    plane = union.any(axis=2)  # two passes over the volume instead of one per axis
    hits = [np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0)), np.flatnonzero(union.any(axis=(0, 1)))]
    if hits[0].size == 0:
        return None
    return tuple(slice(max(int(h[0]) - 1, 0), int(h[-1]) + 2) for h in hits)


def _overlaps(pred_labels, ref_labels, num_ref):
    """{(pred id, ref id): overlapping voxels}, from the voxels in both masks only."""
    both = (pred_labels > 0) & (ref_labels > 0)
    keys = pred_labels[both].astype(np.int64) * (num_ref + 1) + ref_labels[both]
    keys, counts = np.unique(keys, return_counts=True)
    return {(int(k) // (num_ref + 1), int(k) % (num_ref + 1)): int(c) for k, c in zip(keys, counts)}


def match_lesions(overlaps, num_ref):
    """Groups reference lesions and predictions as the LiTS scorer does (steps 2-3).

    Args:
        overlaps: {(pred id, ref id): overlapping voxels > 0}.
        num_ref: number of reference lesions (ids 1..num_ref).

    Returns:
        list of (reference ids, matched prediction ids) per group, sorted lists; every
        reference lesion is in exactly one group, each overlapping prediction in one group.

    Example:
        >>> match_lesions({(1, 1): 5, (1, 2): 4, (2, 2): 1}, 3)
        [([1, 2], [1, 2]), ([3], [])]
    """
    owner = {}  # ref id -> (overlap, -pred id): the prediction that overlaps it most
    for (p, g), count in overlaps.items():
        owner[g] = max(owner.get(g, (0, 0)), (count, -p))
    groups = {}  # owner pred id (or the lesion itself when nothing overlaps it) -> ref ids
    for g in range(1, num_ref + 1):
        groups.setdefault(-owner[g][1] if g in owner else ("alone", g), []).append(g)
    rep = {g: members[0] for members in groups.values() for g in members}  # lowest id of its group
    merged = {}  # (pred id, group representative) -> overlap
    for (p, g), count in overlaps.items():
        merged[p, rep[g]] = merged.get((p, rep[g]), 0) + count
    best = {}  # pred id -> (overlap, -representative)
    for (p, r), count in merged.items():
        best[p] = max(best.get(p, (0, 0)), (count, -r))
    preds = {members[0]: [] for members in groups.values()}
    for p in sorted(best):
        preds[-best[p][1]].append(p)
    return sorted((members, preds[members[0]]) for members in groups.values())


def _border(mask):
    """The scorer's `Surface` border: the voxels that 18-neighbourhood erosion removes."""
    return mask ^ ndimage.binary_erosion(mask, structure=_EIGHTEEN)


def _group_scores(pred_mask, ref_mask, spacing):
    """The scorer's per-lesion measures of one matched group (both masks non-empty).

    Nearest border distances come from a KD-tree over the border voxels (as the scorer's
    `Surface` does): exact, and unlike a distance transform its cost does not grow with the
    box of a group that a prediction bridges across the liver.
    """
    from scipy.spatial import cKDTree

    p, r = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(ref_mask))
    inter = int(np.count_nonzero(pred_mask & ref_mask))
    dice = 2.0 * inter / (p + r)
    pred_points = np.argwhere(_border(pred_mask)) * spacing
    ref_points = np.argwhere(_border(ref_mask)) * spacing
    distances = np.concatenate([cKDTree(ref_points).query(pred_points)[0], cKDTree(pred_points).query(ref_points)[0]])
    return {"dice": dice, "jaccard": dice / (2.0 - dice), "voe": 1.0 - dice / (2.0 - dice),
            "rvd": (r - p) / float(p), "assd": float(distances.mean()),
            "rmsd": float(np.sqrt(np.mean(np.square(distances)))), "mssd": float(distances.max())}


def _union_box(boxes):
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(len(boxes[0])))


def detect_lesions(pred_mask, ref_mask, spacing=None, *, min_overlap=0.5, merge_fragments=False):
    """Lesion-wise detection and per-lesion scores of one case (see the module doc).

    Args:
        pred_mask: boolean predicted tumor mask (X, Y, Z).
        ref_mask: boolean reference tumor mask of the same shape.
        spacing: voxel size per axis in mm (the reference header's).
        min_overlap: a group is detected iff its IoU is strictly greater (0 <= t <= 1).
        merge_fragments: join reference fragments one voxel apart in-plane first.

    Returns:
        dict: num_reference, num_predicted, tp, fp, fn, merges, splits, and `lesions`, one
        dict per reference lesion (id order): lesion, voxels, volume_ml, diameter_mm (of the
        sphere of equal volume), detected, iou (of its group; 0 without a matched
        prediction), merged_lesions and pred_lesions (ids of its group), and the measures of
        `LESION_MEASURES` (`UNDETECTED` values when not detected).

    Raises:
        DataError: different shapes or `min_overlap` outside [0, 1].

    Example:
        >>> ref = np.zeros((9, 9, 1), bool); ref[1:4, 1:4] = True; ref[5:8, 5:8] = True
        >>> pred = np.zeros_like(ref); pred[1:8, 1:8] = True
        >>> r = detect_lesions(pred, ref, min_overlap=0.0)
        >>> r["tp"], r["merges"], r["lesions"][1]["merged_lesions"]
        (2, 1, [1, 2])
    """
    pred_mask, ref_mask = np.asarray(pred_mask, bool), np.asarray(ref_mask, bool)
    if pred_mask.shape != ref_mask.shape:
        raise DataError(f"prediction shape {pred_mask.shape} differs from reference shape {ref_mask.shape}")
    if not 0.0 <= min_overlap <= 1.0:
        raise DataError(f"min_overlap {min_overlap} must be in [0, 1]")
    spacing = metrics._spacing(spacing, pred_mask.ndim)
    box = _crop(pred_mask, ref_mask)
    if box is None:
        return {"num_reference": 0, "num_predicted": 0, "tp": 0, "fp": 0, "fn": 0, "merges": 0, "splits": 0,
                "lesions": []}
    pred_labels, num_pred = label_lesions(pred_mask[box])
    ref_labels, num_ref = label_lesions(ref_mask[box], merge_fragments)
    pred_boxes, ref_boxes = ndimage.find_objects(pred_labels), ndimage.find_objects(ref_labels)
    # Counting only the lesion voxels: a bincount over the whole box costs seconds.
    pred_voxels = np.bincount(pred_labels[pred_labels > 0], minlength=num_pred + 1)
    ref_voxels = np.bincount(ref_labels[ref_labels > 0], minlength=num_ref + 1)
    overlaps = _overlaps(pred_labels, ref_labels, num_ref)
    result = {"num_reference": num_ref, "num_predicted": num_pred, "tp": 0, "fp": num_pred, "fn": 0,
              "merges": 0, "splits": 0, "lesions": []}
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for refs, preds in match_lesions(overlaps, num_ref):
        result["merges"] += len(refs) - 1
        result["splits"] += max(0, len(preds) - len(refs))
        inter = sum(overlaps.get((p, g), 0) for p in preds for g in refs)
        union = int(pred_voxels[preds].sum() + ref_voxels[refs].sum()) - inter
        iou = inter / union if preds else 0.0
        detected = bool(preds) and iou > min_overlap
        scores = dict(UNDETECTED)
        if detected:
            result["tp"] += len(refs)
            result["fp"] -= len(preds)
            sub = _union_box([pred_boxes[p - 1] for p in preds] + [ref_boxes[g - 1] for g in refs])
            scores = _group_scores(np.isin(pred_labels[sub], preds), np.isin(ref_labels[sub], refs), spacing)
        else:
            result["fn"] += 1  # the scorer counts an undetected merged group once
        for g in refs:
            volume = float(ref_voxels[g]) * voxel_ml
            result["lesions"].append({
                "lesion": g, "voxels": int(ref_voxels[g]), "volume_ml": volume,
                "diameter_mm": (6000.0 * volume / math.pi) ** (1.0 / 3.0), "detected": detected, "iou": iou,
                "merged_lesions": list(refs), "pred_lesions": list(preds), **scores})
    result["lesions"].sort(key=lambda lesion: lesion["lesion"])
    return result


def size_bin(diameter_mm):
    """Index into `SIZE_BINS` of an equivalent diameter in mm.

    Example:
        >>> [size_bin(d) for d in (9.9, 10.0, 20.0, 20.1)]
        [0, 1, 1, 2]
    """
    return 0 if diameter_mm < 10.0 else 1 if diameter_mm <= 20.0 else 2


def _ratio(num, den):
    return num / den if den else None


def summarize_lesions(cases, *, min_overlap=0.5, merge_fragments=False):
    """Totals over cases: detection counts, precision, recall, F1, per-lesion means, sizes.

    Precision, recall and F1 come from the summed counts (None when their denominator is
    0). Per-lesion means are over the detected reference lesions of all cases (a merged
    group's scores count once per reference lesion in it, as the scorer counts them); the
    `UNDETECTED` placeholder values never enter a mean.

    Args:
        cases: results of `detect_lesions`.
        min_overlap: recorded in the summary.
        merge_fragments: recorded in the summary.

    Returns:
        JSON-ready dict.

    Example:
        >>> s = summarize_lesions([{"tp": 3, "fp": 1, "fn": 1, "merges": 0, "splits": 1,
        ...                         "num_reference": 4, "num_predicted": 5, "lesions": []}])
        >>> s["precision"], s["recall"], s["f1"]
        (0.75, 0.75, 0.75)
    """
    totals = {k: int(sum(c[k] for c in cases)) for k in ("tp", "fp", "fn", "merges", "splits", "num_reference",
                                                         "num_predicted")}
    precision = _ratio(totals["tp"], totals["tp"] + totals["fp"])
    recall = _ratio(totals["tp"], totals["tp"] + totals["fn"])
    f1 = None if precision is None or recall is None else (
        2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    lesions = [lesion for c in cases for lesion in c["lesions"]]
    detected = [lesion for lesion in lesions if lesion["detected"]]
    per_lesion = {m: (float(np.mean([lesion[m] for lesion in detected])) if detected else None)
                  for m in LESION_MEASURES}
    by_size = []
    for index, name in enumerate(SIZE_BINS):
        inside = [lesion for lesion in lesions if size_bin(lesion["diameter_mm"]) == index]
        hits = sum(lesion["detected"] for lesion in inside)
        by_size.append({"size": name, "reference": len(inside), "detected": hits, "recall": _ratio(hits, len(inside))})
    return {"min_overlap": min_overlap, "merge_fragments": merge_fragments, **totals, "precision": precision,
            "recall": recall, "f1": f1, "num_detected": len(detected), "per_lesion": per_lesion, "by_size": by_size}
