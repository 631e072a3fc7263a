"""Test-only reference: a minimal port of the LiTS challenge scorer's lesion logic.

Ported, for comparison in tests only, from `program/helpers/calc_metric.py`
(`detect_lesions`, `compute_segmentation_scores`) and `program/evaluate.py` of
github.com/veugene/lits-challenge-scoring (branch master, commit 0ceebcf; the LiTS
challenge's scoring program by Patrick Christ, Eugene Vorontsov et al.). The repository
publishes no license file; this port is attributed to it and kept to the procedure needed
to check liverzoo against it: the same matrix steps in the same order (argmax over the
overlap matrix, columns summed on merges, rows summed on splits, IoU on label masks).

Deliberate differences, each a defect of the original that would make the comparison
depend on accidents: group ids are kept in int32 (the original's uint8 wraps beyond 255);
the fragment-merging dilation is `scipy.ndimage.binary_dilation` with the same 3x3 in-plane
cross (the original's multiprocessing version drops the last few voxels); per-lesion scores
are paired with detection flags by lesion id (`evaluate.py` pairs them by position, which
misaligns them after a merge). Surfaces follow the original `Surface` class: 18-neighbour
erosion and nearest neighbours by KD-tree.
"""
import numpy as np
from medpy import metric
from scipy import ndimage, spatial

LARGE = 9001


def label_reference(tumor, merge_fragments):
    """evaluate.py's reference labelling (with the clinical_eval dilation when asked)."""
    if not merge_fragments:
        return ndimage.label(tumor)[0]
    cross = np.zeros((3, 3, 1), bool)
    cross[1, :, 0] = cross[:, 1, 0] = True
    labels = ndimage.label(ndimage.binary_dilation(tumor, structure=cross))[0]
    labels[~tumor] = 0
    return labels


def _collapse(matrix, axis, indices):
    """Sums the rows (axis 0) or columns (axis 1) `indices` into the first of them."""
    if len(indices) < 2:
        return matrix
    matrix = np.moveaxis(matrix.copy(), axis, 0)
    matrix[indices[0]] = matrix[indices].sum(axis=0)
    matrix = np.delete(matrix, indices[1:], axis=0)
    return np.moveaxis(matrix, 0, axis)


def detect_lesions(pred_labels, ref_labels, min_overlap):
    """The scorer's detect_lesions: (detected mask, merged reference, TP, FP, FN, merges, splits,
    {ref id: detected}, {ref id: group id}); a case without reference tumor gives TP = FN = 0."""
    detected_mask = np.zeros(pred_labels.shape, np.int32)
    mod_ref = ref_labels.astype(np.int32).copy()
    if not ref_labels.any():
        return detected_mask, mod_ref, 0, len(np.unique(pred_labels)) - 1, 0, 0, 0, {}, {}
    p_ids = np.unique(pred_labels[ref_labels.nonzero()])
    p_ids = p_ids[p_ids != 0]
    g_ids = np.unique(ref_labels)
    g_ids = g_ids[g_ids != 0]
    num_fp_untouched = len([p for p in np.unique(pred_labels) if p != 0 and p not in p_ids])
    # The original counts each (p, g) pair with a full-volume logical_and; the same counts, faster.
    inter = np.zeros((len(p_ids), len(g_ids)), np.int64)
    both = (pred_labels > 0) & (ref_labels > 0)
    np.add.at(inter, (np.searchsorted(p_ids, pred_labels[both]), np.searchsorted(g_ids, ref_labels[both])), 1)

    g_groups = {int(g): [int(g)] for g in g_ids}
    merges = 0
    for i in range(len(p_ids)):
        hit = inter[i].nonzero()[0]
        owned = [j for j in hit if np.argmax(inter[:, j]) == i]
        merges += max(0, len(owned) - 1)
        members = [int(g_ids[j]) for j in owned]
        g_ids = np.delete(g_ids, owned[1:])
        for g in members:
            mod_ref[mod_ref == g] = members[0]
            g_groups[g] = members
        inter = _collapse(inter, 1, owned)

    best = np.argmax(inter, axis=1)
    top = inter[np.arange(len(p_ids)), best]
    inter[...] = 0
    inter[np.arange(len(p_ids)), best] = top

    p_groups = {int(p): [int(p)] for p in p_ids}
    splits = 0
    for j, g in enumerate(g_ids):
        rows = inter[:, j].nonzero()[0]
        members = [int(p_ids[i]) for i in rows]
        inter = _collapse(inter, 0, list(rows))
        p_ids = np.delete(p_ids, rows[1:])
        for p in members:
            detected_mask[pred_labels == p] = g
            p_groups[p] = members
        splits += max(0, len(members) - len(g_groups[int(g)]))

    fp = num_fp_untouched
    flags = {int(g): 0 for g in g_ids}
    for i, p in enumerate(p_ids):
        for j, g in enumerate(g_ids):
            if inter[i, j] == 0:
                continue
            union = np.count_nonzero((detected_mask == g) | (mod_ref == g))
            if inter[i, j] / union <= min_overlap:
                detected_mask[detected_mask == g] = 0
                fp += len(p_groups[int(p)])
            else:
                for member in g_groups[int(g)]:
                    flags[member] = 1
    tp = sum(v == 1 for v in flags.values())
    fn = sum(v == 0 for v in flags.values())
    mapping = {g: members[0] for g, members in g_groups.items()}
    return detected_mask, mod_ref, tp, fp, fn, merges, splits, flags, mapping


def _border(mask):
    return mask ^ ndimage.binary_erosion(mask, ndimage.generate_binary_structure(3, 2))


def segmentation_scores(detected_mask, mod_ref, spacing, mapping):
    """The scorer's compute_segmentation_scores: {ref id: {measure: value}}."""
    scores = {}
    for g, m in mapping.items():
        p, r = detected_mask == m, mod_ref == m
        box = ndimage.find_objects((p | r).astype(np.uint8))[0]  # the original crops the same way
        p, r = p[box], r[box]
        if p.any() and r.any():
            dice = metric.dc(p, r)
            a = np.argwhere(_border(p)) * np.asarray(spacing)
            b = np.argwhere(_border(r)) * np.asarray(spacing)
            ab, ba = spatial.cKDTree(b).query(a)[0], spatial.cKDTree(a).query(b)[0]
            both = np.concatenate([ab, ba])
            scores[g] = {"dice": dice, "jaccard": dice / (2 - dice), "voe": 1 - dice / (2 - dice),
                         "rvd": metric.ravd(r, p), "assd": both.mean(), "rmsd": np.sqrt(np.mean(both ** 2)),
                         "mssd": both.max()}
        else:
            scores[g] = {"dice": 0, "jaccard": 0, "voe": 1.0, "rvd": LARGE, "assd": LARGE, "rmsd": LARGE,
                         "mssd": LARGE}
    return scores


def score_cases(cases, spacing, min_overlap=0.5, merge_fragments=False):
    """evaluate.py's lesion totals over (pred labels map, ref label map) pairs."""
    totals = {"tp": 0, "fp": 0, "fn": 0, "merges": 0, "splits": 0}
    dices = []
    for pred, ref in cases:
        pred_labels = ndimage.label(pred == 2)[0]
        ref_labels = label_reference(ref == 2, merge_fragments)
        out = detect_lesions(pred_labels, ref_labels, min_overlap)
        for key, value in zip(("tp", "fp", "fn", "merges", "splits"), out[2:7]):
            totals[key] += value
        scores = segmentation_scores(out[0], out[1], spacing, out[8])
        dices += [scores[g]["dice"] for g, flag in out[7].items() if flag]
    tp, fp, fn = totals["tp"], totals["fp"], totals["fn"]
    totals.update(precision=tp / (tp + fp) if tp + fp else 0.0, recall=tp / (tp + fn) if tp + fn else 0.0,
                  mean_dice=float(np.mean(dices)) if dices else float("nan"))
    return totals
