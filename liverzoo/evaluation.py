"""LiTS evaluation of a folder of predicted label maps against a folder of references.

Cases are paired by file name (`NAME.nii` or `NAME.nii.gz` in both folders; the case is
`NAME`). For every case the LiTS measures of `liverzoo.metrics.case_scores` are computed
for the liver (labels 1 and 2) and the tumor (label 2), with the voxel spacing of the
reference header, as the LiTS scoring code does, and the lesion-wise detection of
`liverzoo.lesions` (IoU > `min_overlap`). `evaluate` writes into `output_dir`:

- `cases.csv`: one row per case, every measure (empty cell = undefined, e.g. the surface
  distance of two empty tumor masks; the LiTS placeholder 9001 where LiTS assigns it), and
  the case's lesion counts;
- `lesions.csv`: one row per reference lesion (volume, equivalent diameter, detected, the
  ids of its merged group and matched predictions, per-lesion scores; an undetected lesion
  has the LiTS values Dice 0 and 9001 for RVD, ASSD, RMSD and MSSD);
- `summary.json`: per structure the Dice per case (mean over cases), the Dice global
  (2 sum|P∩R| / sum(|P|+|R|) over all voxels of all cases), the means of Jaccard, VOE, RVD,
  ASSD, MSSD, sensitivity, specificity and precision over the cases where they are defined
  (a LiTS placeholder is never averaged: `{measure}_cases` says how many cases the mean is
  over, `{measure}_undefined_cases` how many were left out), the tumor-burden RMSE and
  maximum error (over the cases with a predicted liver), `lesions` (detection totals,
  precision, recall, F1, per-lesion means, detection by size), the per-case Dice values and
  the skipped cases;
- `overlays/CASE_zK.png`: the slices with the most wrongly labelled voxels of the cases
  with the lowest liver Dice, with a legend and the case's scores;
- `report.html` with `report=True`: one self-contained page of all of it (`liverzoo.report`).

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

from liverzoo import lesions, metrics
from liverzoo import report as report_lib
from liverzoo.data import io
from liverzoo.errors import DataError
from liverzoo.report import render_overlay, worst_slices  # noqa: F401 (public here before)

STRUCTURES = ("liver", "tumor")
MEASURES = ("dice", "jaccard", "voe", "rvd", "assd", "mssd", "sensitivity", "specificity", "precision")
COUNTS = ("pred_voxels", "ref_voxels", "intersection")
BURDEN = ("tumor_burden_ref", "tumor_burden_pred", "tumor_burden_error")
LESION_COUNTS = ("num_reference", "num_predicted", "tp", "fp", "fn", "merges", "splits")
COLUMNS = (
    ("case",)
    + tuple(f"{s}_{m}" for s in STRUCTURES for m in MEASURES + COUNTS)
    + BURDEN
    + tuple(f"lesions_{k}" for k in LESION_COUNTS)
    + ("spacing_x", "spacing_y", "spacing_z")
)
LESION_COLUMNS = ("case", "lesion", "voxels", "volume_ml", "diameter_mm", "detected", "iou", "merged_lesions",
                  "pred_lesions") + lesions.LESION_MEASURES
# Measures that a case's voxel counts can leave undefined: (needs a reference, needs a prediction).
_NEEDS = {"rvd": (True, False), "assd": (True, True), "mssd": (True, True)}
AFFINE_TOLERANCE = 1e-3
_LABEL_FILE = re.compile(r"^(?P<case>.+?)(\.nii(\.gz)?|\.dcm)$", re.IGNORECASE)


def list_cases(folder, what):
    """{case name: path} of the NIfTI files and DICOM SEG (`.dcm`) files in a folder (hidden files ignored).

    Args:
        folder: the folder.
        what: how to call it in errors (the flag name).

    Returns:
        dict, case name (file name without .nii/.nii.gz/.dcm) -> path.

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
        match = _LABEL_FILE.match(name)
        if name.startswith(".") or not match or not os.path.isfile(os.path.join(folder, name)):
            continue
        if match["case"] in cases:
            raise DataError(f"case {match['case']}: two files in {folder} ({os.path.basename(cases[match['case']])}, {name})")
        cases[match["case"]] = os.path.join(folder, name)
    return cases


def load_label_map(path, case):
    """Reads a NIfTI label map as stored (`evaluate_case` brings the prediction into the
    reference's axis order, then compares voxelwise).

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


def is_seg(path):
    """True for a DICOM SEG file name (`.dcm`)."""
    return str(path).lower().endswith(".dcm")


def series_folder(dicom_dir, case):
    """The DICOM series of `case` under `dicom_dir`: `dicom_dir/case/`, else `dicom_dir` itself."""
    if dicom_dir is None:
        raise DataError("a DICOM SEG is read onto its source series: pass --dicom_dir")  # the caller names the case
    folder = os.path.join(dicom_dir, case)
    return folder if os.path.isdir(folder) else dicom_dir


def _load_pair(case, pred_path, ref_path, dicom_dir):
    """(pred, pred affine, ref, ref affine, spacing); both maps canonical when either is a SEG."""
    if not (is_seg(pred_path) or is_seg(ref_path)):
        pred, pred_affine, _ = load_label_map(pred_path, case)
        ref, ref_affine, spacing = load_label_map(ref_path, case)
        return pred, pred_affine, ref, ref_affine, spacing

    try:
        series = io.load_volume(series_folder(dicom_dir, case))
        pred, ref = io.load_label(pred_path, series), io.load_label(ref_path, series)
    except DataError as e:
        raise DataError(f"case {case}: {e}") from None
    return pred.label, pred.affine, ref.label, ref.affine, tuple(float(v) for v in series.spacing)


def _to_reference_axes(pred, pred_affine, ref_affine):
    """The prediction's voxel axes permuted and flipped into the reference's order, where the two
    files store their grids in different axis orders (a mask written on a DICOM series' LPS-like
    grid against a NIfTI label stored LAS); unchanged where the orders agree. The affine check
    that follows still refuses grids that differ."""
    from nibabel import orientations

    have, want = orientations.io_orientation(pred_affine), orientations.io_orientation(ref_affine)
    if np.array_equal(have, want):
        return pred, pred_affine
    transform = orientations.ornt_transform(have, want)
    return (orientations.apply_orientation(pred, transform),
            pred_affine @ orientations.inv_ornt_aff(transform, pred.shape))


def evaluate_case(case, pred_path, ref_path, *, min_overlap=0.5, merge_fragments=False, dicom_dir=None):
    """One row of `cases.csv`: a dict keyed by `COLUMNS`, plus its lesions.

    Args:
        case: case name.
        pred_path: predicted label map.
        ref_path: reference label map (its header gives the spacing).
        min_overlap: IoU a lesion must exceed to count as detected.
        merge_fragments: join reference fragments one voxel apart in-plane.
        dicom_dir: the DICOM series (`dicom_dir/case/` or `dicom_dir`) when either map is a
            DICOM SEG; both maps are then compared on the series' canonical grid.

    Returns:
        dict of the case's measures (`liverzoo.metrics.case_scores`, flattened), and under
        "lesions" the `liverzoo.lesions.detect_lesions` result.

    Raises:
        DataError: unreadable files, label values outside {0, 1, 2}, or prediction and
            reference of different shapes or affines; the message names the case.

    Example:
        >>> evaluate_case("volume-0", "pred/volume-0.nii.gz", "ref/volume-0.nii")["liver_dice"]  # doctest: +SKIP
        0.961
    """
    pred, pred_affine, ref, ref_affine, spacing = _load_pair(case, pred_path, ref_path, dicom_dir)
    pred, pred_affine = _to_reference_axes(pred, pred_affine, ref_affine)
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
    found = lesions.detect_lesions(pred == metrics.TUMOR, ref == metrics.TUMOR, spacing, min_overlap=min_overlap,
                                   merge_fragments=merge_fragments)
    row.update({f"lesions_{k}": found[k] for k in LESION_COUNTS}, lesions=found)
    row.update(spacing_x=spacing[0], spacing_y=spacing[1], spacing_z=spacing[2])
    return row


def _clean(value):
    """JSON-safe float: nan -> None."""
    value = float(value)
    return None if math.isnan(value) else value


def _defined(row, structure, measure):
    """False where the case's masks leave the measure undefined (nan or a LiTS placeholder)."""
    value = row[f"{structure}_{measure}"]
    if isinstance(value, float) and math.isnan(value):
        return False
    needs_ref, needs_pred = _NEEDS.get(measure, (False, False))
    return not ((needs_ref and not row[f"{structure}_ref_voxels"]) or (needs_pred and not row[f"{structure}_pred_voxels"]))


def summarize(rows, skipped=(), *, min_overlap=0.5, merge_fragments=False):
    """The summary dict (see the module docstring) of evaluated case rows.

    Args:
        rows: dicts from `evaluate_case`.
        skipped: (case, error message) pairs.
        min_overlap: the lesion IoU threshold the rows were computed with.
        merge_fragments: whether reference fragments were merged.

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
            defined = [float(r[f"{structure}_{measure}"]) for r in rows if _defined(r, structure, measure)]
            key = "dice_per_case" if measure == "dice" else measure
            block[key] = _clean(np.mean(defined)) if defined else None
            block[f"{measure}_cases"] = len(defined)
            block[f"{measure}_undefined_cases"] = len(rows) - len(defined)
            if measure in _NEEDS:
                block[f"{measure}_penalized_cases"] = sum(r[f"{structure}_{measure}"] == metrics.LITS_PENALTY
                                                          for r in rows)
        block["dice_global"] = 2.0 * intersection / total if total else 1.0
        summary[structure] = block
    # A prediction without liver gets the LiTS placeholder burden: left out, counted.
    errors = [r["tumor_burden_error"] for r in rows if r["liver_pred_voxels"] or not r["liver_ref_voxels"]]
    summary["tumor_burden_rmse"] = _clean(metrics.rmse(errors))
    summary["tumor_burden_max_error"] = _clean(max(np.abs(errors))) if errors else None
    summary["tumor_burden_cases"] = len(errors)
    summary["tumor_burden_undefined_cases"] = len(rows) - len(errors)
    found = [r["lesions"] for r in rows if "lesions" in r]
    if found:
        summary["lesions"] = lesions.summarize_lesions(found, min_overlap=min_overlap, merge_fragments=merge_fragments)
    summary["dice_per_case"] = {s: {r["case"]: r[f"{s}_dice"] for r in rows} for s in STRUCTURES}
    summary["skipped"] = [{"case": c, "error": e} for c, e in skipped]
    summary["lits_penalty"] = metrics.LITS_PENALTY
    return summary


def _cell(value):
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, bool):
        return int(value)
    return " ".join(str(v) for v in value) if isinstance(value, list) else value


def _write_csv(rows, path, columns=COLUMNS):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row[c]) for c in columns])


def lesion_rows(rows):
    """The rows of `lesions.csv`: one per reference lesion of every case, keyed by `LESION_COLUMNS`.

    Args:
        rows: dicts from `evaluate_case`.

    Returns:
        list of dicts.

    Example:
        >>> lesion_rows([{"case": "a", "lesions": {"lesions": [{"lesion": 1}]}}])
        [{'lesion': 1, 'case': 'a'}]
    """
    return [{**lesion, "case": r["case"]} for r in rows for lesion in r["lesions"]["lesions"]]


def _load_canonical(path, labels=True, series=None):
    """(data, in-plane spacing) in RAS orientation, for drawing; a DICOM SEG is read onto
    `series`, the `CTVolume` it references."""
    import nibabel as nib

    if is_seg(path):
        volume = io.load_label(path, series)
        return volume.label, tuple(volume.spacing[:2])
    image = nib.as_closest_canonical(nib.load(path))
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data.astype(np.uint8 if labels else np.float32), image.header.get_zooms()[:2]


def _overlays(rows, pairs, image_dir, staging, num_cases, slices_per_case, dicom_dir=None):
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
        # A SEG's series is read once for both maps, and is the CT to draw on unless --image_dir
        # says otherwise (scoring has read it already, so it loads).
        series = io.load_volume(series_folder(dicom_dir, case)) if is_seg(pred_path) or is_seg(ref_path) else None
        (pred, _), (ref, spacing) = _load_canonical(pred_path, series=series), _load_canonical(ref_path, series=series)
        image = None if series is None else series.array
        if image_dir:
            image = _overlay_image(case, images, image_dir)
            if image.shape != ref.shape:
                raise DataError(f"case {case}: CT shape {image.shape} differs from reference shape {ref.shape}")
        for k in worst_slices(pred, ref, slices_per_case):
            name = os.path.join("overlays", f"{case}_z{k:04d}.png")
            title = f"{case}  z={k}\n{report_lib.case_scores_line(row)}"
            render_overlay(os.path.join(staging, name), ref[:, :, k], pred[:, :, k],
                           None if image is None else image[:, :, k], title, spacing)
            written.append(name)
    return written


def _overlay_image(case, images, image_dir):
    """The CT of `case` in `image_dir`: CASE.nii[.gz], or a DICOM series in the folder CASE/."""
    if case in images and not is_seg(images[case]):
        return _load_canonical(images[case], labels=False)[0]
    folder = os.path.join(image_dir, case)
    if not os.path.isdir(folder):
        raise DataError(f"case {case}: no CT image {case}.nii[.gz] or DICOM series folder {case}/ in {image_dir} "
                        "for the overlay")
    try:
        return io.load_volume(folder).array
    except DataError as e:
        raise DataError(f"case {case}: {e}") from None


def _remove_stale(output_dir, written):
    """Removes this tool's outputs of an earlier run into the same folder that this run did not
    write (a report.html without --report, overlays of other cases), so that the folder shows
    one run."""
    old = [os.path.join("overlays", n) for n in sorted(os.listdir(os.path.join(output_dir, "overlays")))
           if n.endswith(".png")] if os.path.isdir(os.path.join(output_dir, "overlays")) else []
    for name in old + ["report.html"]:
        if name not in written and os.path.isfile(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))


def evaluate(pred_dir, ref_dir, output_dir, *, image_dir=None, dicom_dir=None, skip_bad=False, num_overlays=3,
             overlay_slices=2, min_overlap=0.5, merge_fragments=False, report=False, progress=None):
    """Evaluates every case and writes cases.csv, lesions.csv, summary.json, overlays/ and
    optionally report.html (see module doc).

    Args:
        pred_dir: folder of predicted label maps (`NAME.nii[.gz]` or DICOM SEG `NAME.dcm`).
        ref_dir: folder of reference label maps with the same names.
        output_dir: where the outputs go (created if needed).
        image_dir: optional folder of the CTs to draw overlays on: `CASE.nii[.gz]` or a DICOM
            series folder `CASE/` (default: a SEG's own series, else none).
        dicom_dir: the DICOM series the SEG files reference: `dicom_dir/NAME/` per case, or one
            series folder for a single case.
        skip_bad: skip (and list in the summary) cases that cannot be evaluated, instead
            of failing on the first.
        num_overlays: number of worst cases to draw.
        overlay_slices: slices drawn per case.
        min_overlap: IoU a lesion must exceed to count as detected (LiTS: 0.5, also 0).
        merge_fragments: join reference fragments one voxel apart in-plane (Bilic et al. 2023).
        report: also write the self-contained report.html.
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
    io.check_creatable_dir(output_dir, "--output_dir")  # before the scoring, not after it
    names = sorted(set(preds) | set(refs), key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    if not names:
        raise DataError(f"no NIfTI or DICOM SEG cases in {pred_dir} or {ref_dir}")
    rows, skipped, pairs = [], [], {}
    for index, case in enumerate(names):
        if progress is not None:
            progress(index, len(names), case)
        try:
            if case not in preds:
                raise DataError(f"case {case}: no prediction in {pred_dir}")
            if case not in refs:
                raise DataError(f"case {case}: no reference in {ref_dir}")
            row = evaluate_case(case, preds[case], refs[case], min_overlap=min_overlap,
                                merge_fragments=merge_fragments, dicom_dir=dicom_dir)
        except DataError as e:
            if not skip_bad:
                raise
            skipped.append((case, str(e)))
            continue
        rows.append(row)
        pairs[case] = (preds[case], refs[case])
    if not rows:
        raise DataError(f"no case could be evaluated ({len(skipped)} skipped; first: {skipped[0][1]})" if skipped
                        else "no case could be evaluated")
    summary = summarize(rows, skipped, min_overlap=min_overlap, merge_fragments=merge_fragments)

    io.check_output_dir(output_dir)
    staging = tempfile.mkdtemp(prefix=".evaluate-", dir=output_dir)
    try:
        summary["overlays"] = _overlays(rows, pairs, image_dir, staging, num_overlays, overlay_slices, dicom_dir)
        _write_csv(rows, os.path.join(staging, "cases.csv"))
        _write_csv(lesion_rows(rows), os.path.join(staging, "lesions.csv"), LESION_COLUMNS)
        with open(os.path.join(staging, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2, allow_nan=False)
        names = summary["overlays"] + ["cases.csv", "lesions.csv", "summary.json"]
        if report:
            report_lib.write_report(os.path.join(staging, "report.html"), summary, rows, staging)
            names.append("report.html")
        if summary["overlays"]:
            os.makedirs(os.path.join(output_dir, "overlays"), exist_ok=True)
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        _remove_stale(output_dir, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary
