"""LiTS evaluation of a folder of predicted label maps against a folder of references.

Cases are paired by file name (`NAME.nii` or `NAME.nii.gz` in both folders; the case is
`NAME`). For every case the LiTS measures of `liverzoo.metrics.case_scores` are computed
for the liver (labels 1 and 2) and the tumor (label 2), with the voxel spacing of the
reference header, as the LiTS scoring code does. `evaluate` writes into `output_dir`:

- `cases.csv`: one row per case, every measure (empty cell = undefined, e.g. the surface
  distance of two empty tumor masks);
- `summary.json`: per structure the Dice per case (mean over cases), the Dice global
  (2 sum|P∩R| / sum(|P|+|R|) over all voxels of all cases), the means of Jaccard, VOE, RVD,
  ASSD, MSSD, sensitivity, specificity and precision (undefined values left out, LiTS
  penalties kept, both counted), the tumor-burden RMSE and maximum error, the per-case Dice
  values and the skipped cases;
- `overlays/CASE_zK.png`: the slices with the most wrongly labelled voxels of the cases
  with the lowest liver Dice (reference contours green/yellow, prediction red/magenta, on
  the CT when `image_dir` is given).

All outputs are written to a staging folder and moved into place only when everything has
been computed: a failed run leaves no partial output.

Example:
    >>> from liverzoo import evaluation
    >>> summary = evaluation.evaluate("preds/", "labels/", "eval/")  # doctest: +SKIP
    >>> summary["liver"]["dice_per_case"]  # doctest: +SKIP
    0.953
"""
import csv
import json
import math
import os
import re
import shutil
import tempfile

import numpy as np

from liverzoo import metrics
from liverzoo.errors import DataError

STRUCTURES = ("liver", "tumor")
MEASURES = ("dice", "jaccard", "voe", "rvd", "assd", "mssd", "sensitivity", "specificity", "precision")
COUNTS = ("pred_voxels", "ref_voxels", "intersection")
BURDEN = ("tumor_burden_ref", "tumor_burden_pred", "tumor_burden_error")
COLUMNS = (
    ("case",)
    + tuple(f"{s}_{m}" for s in STRUCTURES for m in MEASURES + COUNTS)
    + BURDEN
    + ("spacing_x", "spacing_y", "spacing_z")
)
AFFINE_TOLERANCE = 1e-3
_NIFTI = re.compile(r"^(?P<case>.+?)\.nii(\.gz)?$")


def list_cases(folder, what):
    """{case name: path} of the NIfTI files in a folder (hidden files ignored).

    Args:
        folder: the folder.
        what: how to call it in errors (the flag name).

    Returns:
        dict, case name (file name without .nii/.nii.gz) -> path.

    Raises:
        DataError: the folder does not exist or two files share a case name.

    Example:
        >>> list_cases("preds", "--pred_dir")  # doctest: +SKIP
        {'volume-0': 'preds/volume-0.nii.gz'}
    """
    if not os.path.isdir(folder):
        raise DataError(f"{what} {folder}: no such folder")
    cases = {}
    for name in sorted(os.listdir(folder)):
        match = _NIFTI.match(name)
        if name.startswith(".") or not match or not os.path.isfile(os.path.join(folder, name)):
            continue
        if match["case"] in cases:
            raise DataError(f"case {match['case']}: two files in {folder} ({os.path.basename(cases[match['case']])}, {name})")
        cases[match["case"]] = os.path.join(folder, name)
    return cases


def load_label_map(path, case):
    """Reads a NIfTI label map as stored (no reorientation: both maps are compared voxelwise).

    Args:
        path: `.nii[.gz]` file.
        case: case name for error messages.

    Returns:
        (uint8 labels, 4x4 affine, (3,) spacing in mm from the header zooms, as LiTS does).

    Raises:
        DataError: unreadable, not 3D, or label values outside {0, 1, 2}; names the case.

    Example:
        >>> labels, affine, spacing = load_label_map("ref/volume-0.nii", "volume-0")  # doctest: +SKIP
    """
    import nibabel as nib

    try:
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
    except Exception as e:  # nibabel raises many types for broken files
        raise DataError(f"case {case}: cannot read {path} ({type(e).__name__}: {e})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"case {case}: {path} is not a 3D label map (shape {data.shape})")
    labels = metrics.check_labels(data, f"case {case} ({path})")
    return labels, image.affine, tuple(float(z) for z in image.header.get_zooms()[:3])


def evaluate_case(case, pred_path, ref_path):
    """One row of `cases.csv`: a dict keyed by `COLUMNS`.

    Args:
        case: case name.
        pred_path: predicted label map.
        ref_path: reference label map (its header gives the spacing).

    Returns:
        dict of the case's measures (`liverzoo.metrics.case_scores`, flattened).

    Raises:
        DataError: unreadable files, label values outside {0, 1, 2}, or prediction and
            reference of different shapes or affines; the message names the case.

    Example:
        >>> evaluate_case("volume-0", "pred/volume-0.nii.gz", "ref/volume-0.nii")["liver_dice"]  # doctest: +SKIP
        0.961
    """
    pred, pred_affine, _ = load_label_map(pred_path, case)
    ref, ref_affine, spacing = load_label_map(ref_path, case)
    if pred.shape != ref.shape:
        raise DataError(f"case {case}: prediction shape {pred.shape} differs from reference shape {ref.shape}")
    diff = float(np.abs(pred_affine - ref_affine).max())
    if diff > AFFINE_TOLERANCE:
        raise DataError(f"case {case}: prediction affine differs from the reference affine by {diff:.4g}")
    scores = metrics.case_scores(pred, ref, spacing, name=f"case {case}")
    row = {"case": case}
    for structure in STRUCTURES:
        for key in MEASURES + COUNTS:
            row[f"{structure}_{key}"] = scores[structure][key]
    row.update({k: scores[k] for k in BURDEN})
    row.update(spacing_x=spacing[0], spacing_y=spacing[1], spacing_z=spacing[2])
    return row


def _clean(value):
    """JSON-safe float: nan -> None."""
    value = float(value)
    return None if math.isnan(value) else value


def summarize(rows, skipped=()):
    """The summary dict (see the module docstring) of evaluated case rows.

    Args:
        rows: dicts from `evaluate_case`.
        skipped: (case, error message) pairs.

    Returns:
        JSON-ready dict (nan replaced by None).

    Example:
        >>> row = {f"{s}_{m}": 1.0 for s in STRUCTURES for m in MEASURES}
        >>> row.update(case="a", tumor_burden_error=0.0, **{f"{s}_{c}": 5 for s in STRUCTURES for c in COUNTS})
        >>> summarize([row])["liver"]["dice_global"]
        1.0
    """
    summary = {"num_cases": len(rows), "cases": [r["case"] for r in rows]}
    for structure in STRUCTURES:
        block = {}
        intersection = sum(r[f"{structure}_intersection"] for r in rows)
        total = sum(r[f"{structure}_pred_voxels"] + r[f"{structure}_ref_voxels"] for r in rows)
        for measure in MEASURES:
            values = np.array([r[f"{structure}_{measure}"] for r in rows], np.float64)
            defined = values[~np.isnan(values)]
            key = "dice_per_case" if measure == "dice" else measure
            block[key] = _clean(defined.mean()) if defined.size else None
            if measure in ("rvd", "assd", "mssd"):
                block[f"{measure}_undefined_cases"] = int(values.size - defined.size)
                block[f"{measure}_penalized_cases"] = int(np.count_nonzero(defined == metrics.LITS_PENALTY))
        block["dice_global"] = 2.0 * intersection / total if total else 1.0
        summary[structure] = block
    errors = [r["tumor_burden_error"] for r in rows]
    summary["tumor_burden_rmse"] = _clean(metrics.rmse(errors))
    summary["tumor_burden_max_error"] = _clean(max(np.abs(errors))) if errors else None
    summary["dice_per_case"] = {s: {r["case"]: r[f"{s}_dice"] for r in rows} for s in STRUCTURES}
    summary["skipped"] = [{"case": c, "error": e} for c, e in skipped]
    summary["lits_penalty"] = metrics.LITS_PENALTY
    return summary


def _write_csv(rows, path):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if isinstance(row[c], float) and math.isnan(row[c]) else row[c] for c in COLUMNS])


def worst_slices(pred, ref, count):
    """Indices of the `count` slices (last axis) with the most disagreeing voxels, worst first.

    Args:
        pred: predicted label map (X, Y, Z).
        ref: reference label map.
        count: number of slices.

    Returns:
        list of int.

    Example:
        >>> worst_slices(np.array([[[0, 1, 1]]]), np.zeros((1, 1, 3), int), 2)
        [1, 2]
    """
    errors = np.count_nonzero(pred != ref, axis=(0, 1))
    order = np.argsort(-errors, kind="stable")[:count]
    return [int(k) for k in order]


def render_overlay(path, ref_slice, pred_slice, image_slice=None, title="", spacing=(1.0, 1.0)):
    """Writes a PNG: contours of reference (green liver, yellow tumor) and prediction (red
    liver, magenta tumor) on the CT slice (window [-200, 250] HU) or on black.

    Slices are canonical (RAS) `(X, Y)`; they are shown as radiologists read axial CT
    (patient's right on the left of the screen, anterior up) with the pixel aspect of
    `spacing`. Uses matplotlib's object API with the Agg canvas (no global backend switch).

    Args:
        path: output PNG file.
        ref_slice: reference labels (X, Y).
        pred_slice: predicted labels (X, Y).
        image_slice: optional CT slice in HU.
        title: figure title.
        spacing: (x, y) pixel size in mm.

    Example:
        >>> render_overlay("z40.png", ref[:, :, 40], pred[:, :, 40], ct[:, :, 40])  # doctest: +SKIP
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.93))
    background = np.zeros(ref_slice.shape, np.float32) if image_slice is None else np.clip(image_slice, -200, 250)
    ax.imshow(background.T, cmap="gray", origin="lower", interpolation="nearest", aspect=spacing[1] / spacing[0])
    for labels, colors in ((ref_slice, ("lime", "yellow")), (pred_slice, ("red", "magenta"))):
        for level, color in zip((metrics.LIVER, metrics.TUMOR), colors):
            mask = (labels >= level).astype(np.float32).T
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors=color, linewidths=1.0, origin="lower")
    ax.invert_xaxis()  # +X is the patient's right: put it on the screen's left
    ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, format="png")


def _load_canonical(path, labels=True):
    """(data, in-plane spacing) in RAS orientation, for drawing."""
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data.astype(np.uint8 if labels else np.float32), image.header.get_zooms()[:2]


def _overlays(rows, pairs, image_dir, staging, num_cases, slices_per_case):
    """Renders the overlays of the worst cases (by liver Dice) into `staging/overlays`."""
    if num_cases <= 0 or not rows:
        return []
    images = list_cases(image_dir, "--image_dir") if image_dir else {}
    worst = sorted(rows, key=lambda r: (r["liver_dice"], r["tumor_dice"]))[:num_cases]
    os.makedirs(os.path.join(staging, "overlays"))
    written = []
    for row in worst:
        case = row["case"]
        pred_path, ref_path = pairs[case]
        (pred, _), (ref, spacing) = _load_canonical(pred_path), _load_canonical(ref_path)
        image = None
        if image_dir:
            if case not in images:
                raise DataError(f"case {case}: no CT image in {image_dir} for the overlay")
            image, _ = _load_canonical(images[case], labels=False)
            if image.shape != ref.shape:
                raise DataError(f"case {case}: CT shape {image.shape} differs from reference shape {ref.shape}")
        for k in worst_slices(pred, ref, slices_per_case):
            name = os.path.join("overlays", f"{case}_z{k:04d}.png")
            title = f"{case}  z={k}  liver Dice {row['liver_dice']:.3f}  tumor Dice {row['tumor_dice']:.3f}"
            render_overlay(os.path.join(staging, name), ref[:, :, k], pred[:, :, k],
                           None if image is None else image[:, :, k], title, spacing)
            written.append(name)
    return written


def evaluate(pred_dir, ref_dir, output_dir, *, image_dir=None, skip_bad=False, num_overlays=3,
             overlay_slices=2, progress=None):
    """Evaluates every case and writes cases.csv, summary.json and overlays/ (see module doc).

    Args:
        pred_dir: folder of predicted label maps (`NAME.nii[.gz]`).
        ref_dir: folder of reference label maps with the same names.
        output_dir: where the outputs go (created if needed).
        image_dir: optional folder of the CTs (same names) to draw overlays on.
        skip_bad: skip (and list in the summary) cases that cannot be evaluated, instead
            of failing on the first.
        num_overlays: number of worst cases to draw.
        overlay_slices: slices drawn per case.
        progress: optional `progress(index, total, case)` callback.

    Returns:
        the summary dict (also written to summary.json).

    Raises:
        DataError: a missing case, unreadable file, bad label values, or different shapes or
            affines (unless `skip_bad`), or no case could be evaluated; nothing is written.

    Example:
        >>> evaluate("preds", "labels", "eval", skip_bad=True)["skipped"]  # doctest: +SKIP
        [{'case': 'volume-3', 'error': 'case volume-3: no prediction in preds'}]
    """
    preds, refs = list_cases(pred_dir, "--pred_dir"), list_cases(ref_dir, "--ref_dir")
    names = sorted(set(preds) | set(refs), key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    if not names:
        raise DataError(f"no NIfTI cases in {pred_dir} or {ref_dir}")
    rows, skipped, pairs = [], [], {}
    for index, case in enumerate(names):
        if progress is not None:
            progress(index, len(names), case)
        try:
            if case not in preds:
                raise DataError(f"case {case}: no prediction in {pred_dir}")
            if case not in refs:
                raise DataError(f"case {case}: no reference in {ref_dir}")
            row = evaluate_case(case, preds[case], refs[case])
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append((case, str(e)))
            continue
        rows.append(row)
        pairs[case] = (preds[case], refs[case])
    if not rows:
        raise DataError(f"no case could be evaluated ({len(skipped)} skipped)")
    summary = summarize(rows, skipped)

    os.makedirs(output_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".evaluate-", dir=output_dir)
    try:
        summary["overlays"] = _overlays(rows, pairs, image_dir, staging, num_overlays, overlay_slices)
        _write_csv(rows, os.path.join(staging, "cases.csv"))
        with open(os.path.join(staging, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, allow_nan=False)
        if summary["overlays"]:
            os.makedirs(os.path.join(output_dir, "overlays"), exist_ok=True)
        for name in summary["overlays"] + ["cases.csv", "summary.json"]:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
