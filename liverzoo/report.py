"""What a person reads of an evaluation: the printed summary, overlays, and report.html.

`summary_lines` turns `liverzoo.evaluation.summarize`'s dict into text where every mean says
over how many cases it was taken ("tumor ASSD 4.59 mm over 1 of 3 cases; undefined for 2").
`render_overlay` draws one slice's contours with a legend. `write_report` writes one
self-contained HTML page (images embedded as base64 PNG): the summary tables, the lesion
detection tables, the per-case table, Dice box plots by class, and the overlays.

Example:
    >>> print(format_mean(4.5912, 1, 3, " mm"))
    4.591 mm over 1 of 3 cases; undefined for 2
"""
import base64
import html
import io
import os

import numpy as np

from liverzoo import metrics

# Contour colours: (liver, tumor) of the reference and of the prediction.
REFERENCE_COLORS = ("lime", "yellow")
PREDICTION_COLORS = ("red", "magenta")
_MEASURES = (("dice_per_case", "Dice per case", "dice", ""), ("voe", "VOE", "voe", ""),
             ("rvd", "RVD", "rvd", ""), ("assd", "ASSD", "assd", " mm"), ("mssd", "MSSD", "mssd", " mm"))


def _cases(n):
    return f"{n} case" if n == 1 else f"{n} cases"


def format_mean(value, cases, total, unit="", penalized=0):
    """A mean with the number of cases it is over, e.g. "4.591 mm over 1 of 3 cases; undefined for 2".

    Args:
        value: the mean, or None.
        cases: cases it was taken over.
        total: cases evaluated.
        unit: appended to the value.
        penalized: cases left out because LiTS gives them its 9001 placeholder (one mask
            empty: every tumor missed, or tumor marked in a case without one), said apart
            from the undefined ones so that a model that misses every tumor is not hidden.

    Returns:
        str ("undefined for all N cases" when `value` is None).

    Example:
        >>> format_mean(0.9, 3, 3)
        '0.900'
        >>> format_mean(None, 0, 1, penalized=1)
        'no mean: LiTS penalty 9001 for 1 case (one mask empty)'
    """
    undefined = total - cases - penalized
    left_out = ([f"LiTS penalty 9001 for {_cases(penalized)} (one mask empty)"] if penalized else []) + (
        [f"undefined for {undefined}"] if undefined else [])
    if value is None:
        return f"undefined for all {_cases(total)}" if not penalized else "no mean: " + "; ".join(left_out)
    text = f"{value:.3f}{unit}"
    return text if cases == total else f"{text} over {cases} of {_cases(total)}; " + "; ".join(left_out)


def _case_assd(row):
    pred, ref = row["tumor_pred_voxels"], row["tumor_ref_voxels"]
    if pred and ref:
        return _num(row["tumor_assd"])
    return "9001 (one mask empty)" if pred or ref else "undefined"


def _penalized(block, measure):
    return block.get(f"{measure}_penalized_cases", 0)


def _num(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def case_scores_line(row):
    """One case's headline scores, for an overlay's title.

    Example:
        >>> case_scores_line({"liver_dice": 0.95, "tumor_dice": 0.5, "lesions_tp": 2, "lesions_fp": 1,
        ...                   "lesions_fn": 0})
        'liver Dice 0.950  tumor Dice 0.500  lesions TP 2 FP 1 FN 0'
    """
    return (f"liver Dice {row['liver_dice']:.3f}  tumor Dice {row['tumor_dice']:.3f}  "
            f"lesions TP {row['lesions_tp']} FP {row['lesions_fp']} FN {row['lesions_fn']}")


def summary_lines(summary):
    """The printed summary: one line per structure, the lesion detection, tumor burden.

    Args:
        summary: dict from `liverzoo.evaluation.summarize`.

    Returns:
        list of str.
    """
    total = summary["num_cases"]
    lines = [f"{_cases(total)} evaluated, {len(summary['skipped'])} skipped"]
    for structure in ("liver", "tumor"):
        block = summary[structure]
        parts = [f"{name} {format_mean(block[key], block[f'{counted}_cases'], total, unit, _penalized(block, counted))}"
                 for key, name, counted, unit in _MEASURES]
        parts.insert(1, f"Dice global {_num(block['dice_global'])}")
        lines.append(f"{structure}: " + ", ".join(parts))
    lesions = summary.get("lesions")
    if lesions:
        lines.append(
            f"lesions (IoU > {lesions['min_overlap']:g}{', fragments merged' if lesions['merge_fragments'] else ''}): "
            f"precision {_num(lesions['precision'])}, recall {_num(lesions['recall'])}, F1 {_num(lesions['f1'])} "
            f"(TP {lesions['tp']}, FP {lesions['fp']}, FN {lesions['fn']}; merges {lesions['merges']}, "
            f"splits {lesions['splits']}; {lesions['num_reference']} reference, {lesions['num_predicted']} predicted)")
        per = lesions["per_lesion"]
        lines.append(f"per detected lesion ({lesions['num_detected']}): Dice {_num(per['dice'])}, "
                     f"ASSD {_num(per['assd'])} mm, MSSD {_num(per['mssd'])} mm, RVD {_num(per['rvd'])}")
        lines.append("detection by size: " + ", ".join(
            f"{b['size']} {b['detected']}/{b['reference']}" for b in lesions["by_size"]))
    burden = summary["tumor_burden_cases"]
    lines.append(f"tumor burden: RMSE {format_mean(summary['tumor_burden_rmse'], burden, total)}, "
                 f"max error {_num(summary['tumor_burden_max_error'])}")
    return lines


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


def _figure(size):
    """A matplotlib Figure on the Agg canvas (object API: no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def render_overlay(path, ref_slice, pred_slice, image_slice=None, title="", spacing=(1.0, 1.0)):
    """Writes a PNG: contours of reference (green liver, yellow tumor) and prediction (red
    liver, magenta tumor) on the CT slice (window [-200, 250] HU) or on black, with a legend.

    Slices are canonical (RAS) `(X, Y)`; they are shown as radiologists read axial CT
    (patient's right on the left of the screen, anterior up) with the pixel aspect of
    `spacing`.

    Args:
        path: output PNG file.
        ref_slice: reference labels (X, Y).
        pred_slice: predicted labels (X, Y).
        image_slice: optional CT slice in HU.
        title: figure title (the case's scores).
        spacing: (x, y) pixel size in mm.

    Example:
        >>> render_overlay("z40.png", ref[:, :, 40], pred[:, :, 40], ct[:, :, 40])  # doctest: +SKIP
    """
    from matplotlib.lines import Line2D

    fig = _figure((5, 5.6))
    ax = fig.add_axes((0, 0.1, 1, 0.8))
    background = np.zeros(ref_slice.shape, np.float32) if image_slice is None else np.clip(image_slice, -200, 250)
    ax.imshow(background.T, cmap="gray", origin="lower", interpolation="nearest", aspect=spacing[1] / spacing[0])
    for labels, colors in ((ref_slice, REFERENCE_COLORS), (pred_slice, PREDICTION_COLORS)):
        for level, color in zip((metrics.LIVER, metrics.TUMOR), colors):
            mask = (labels >= level).astype(np.float32).T
            if mask.any() and not mask.all():
                ax.contour(mask, levels=[0.5], colors=color, linewidths=1.0, origin="lower")
    ax.invert_xaxis()  # +X is the patient's right: put it on the screen's left
    ax.set_axis_off()
    handles = [Line2D([], [], color=c, lw=2, label=f"{who} {what}")
               for who, colors in (("reference", REFERENCE_COLORS), ("prediction", PREDICTION_COLORS))
               for what, c in zip(("liver", "tumor"), colors)]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, format="png")


def dice_box_plot(summary, rows):
    """PNG bytes: box plots of the Dice per case (liver, tumor) and per detected lesion."""
    data = [list(summary["dice_per_case"]["liver"].values()), list(summary["dice_per_case"]["tumor"].values())]
    names = ["liver\n(per case)", "tumor\n(per case)"]
    per_lesion = [x["dice"] for r in rows for x in r.get("lesions", {}).get("lesions", []) if x["detected"]]
    if per_lesion:
        data.append(per_lesion)
        names.append("lesion\n(per detected lesion)")
    fig = _figure((6, 3.6))
    ax = fig.add_subplot()
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(data) + 1), [f"{n}\nn={len(d)}" for n, d in zip(names, data)])
    ax.set_ylabel("Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _img(png, alt):
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header, body, caption):
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><caption>{html.escape(caption)}</caption><tr>{cells}</tr>{rows}</table>"


def _tables(summary, rows):
    total = summary["num_cases"]
    structures = _table(["", "Dice global"] + [name for _, name, _, _ in _MEASURES], [
        [s, _num(summary[s]["dice_global"])] + [format_mean(summary[s][k], summary[s][f"{c}_cases"], total, u,
                                                            _penalized(summary[s], c))
                                                for k, _, c, u in _MEASURES] for s in ("liver", "tumor")],
        f"Segmentation, {total} cases (undefined values and LiTS 9001 penalties are left out of the means "
        "and counted)")
    parts = [structures]
    lesions = summary.get("lesions")
    if lesions:
        parts.append(_table(
            ["IoU >", "precision", "recall", "F1", "TP", "FP", "FN", "merges", "splits", "mean Dice per lesion"],
            [[f"{lesions['min_overlap']:g}", _num(lesions["precision"]), _num(lesions["recall"]), _num(lesions["f1"]),
              lesions["tp"], lesions["fp"], lesions["fn"], lesions["merges"], lesions["splits"],
              _num(lesions["per_lesion"]["dice"])]], "Lesion detection"))
        parts.append(_table(["equivalent diameter", "reference lesions", "detected", "recall"],
                            [[b["size"], b["reference"], b["detected"], _num(b["recall"])] for b in lesions["by_size"]],
                            "Detection by lesion size"))
    burden = format_mean(summary["tumor_burden_rmse"], summary["tumor_burden_cases"], total)
    parts.append(_table(["RMSE", "max error"], [[burden, _num(summary["tumor_burden_max_error"])]], "Tumor burden"))
    parts.append(_table(
        ["case", "liver Dice", "tumor Dice", "tumor ASSD (mm)", "ref lesions", "pred lesions", "TP", "FP", "FN"],
        [[r["case"], _num(r["liver_dice"]), _num(r["tumor_dice"]),
          _case_assd(r),
          r["lesions_num_reference"], r["lesions_num_predicted"], r["lesions_tp"], r["lesions_fp"], r["lesions_fn"]]
         for r in rows], "Per case"))
    return parts


_STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}caption{text-align:left;font-weight:bold}"
          "figure{display:inline-block;margin:.5em}img{max-width:100%}")


def write_report(path, summary, rows, folder):
    """Writes the self-contained report.html.

    Args:
        path: the HTML file.
        summary: dict from `liverzoo.evaluation.summarize`, with "overlays" (paths relative
            to `folder`).
        rows: dicts from `liverzoo.evaluation.evaluate_case`.
        folder: where the overlay PNGs are.

    Example:
        >>> write_report("eval/report.html", summary, rows, "eval")  # doctest: +SKIP
    """
    figures = [f"<figure>{_img(dice_box_plot(summary, rows), 'Dice box plots by class')}"
               "<figcaption>Dice by class (triangle: mean)</figcaption></figure>"]
    for name in summary.get("overlays", []):
        with open(os.path.join(folder, name), "rb") as f:
            figures.append(f"<figure>{_img(f.read(), name)}<figcaption>{html.escape(name)}</figcaption></figure>")
    skipped = "".join(f"<li>{html.escape(s['error'])}</li>" for s in summary["skipped"])
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>liverzoo evaluation</title>"
            f"<style>{_STYLE}</style></head><body><h1>LiTS evaluation</h1>"
            + "".join(_tables(summary, rows))
            + (f"<h2>Skipped</h2><ul>{skipped}</ul>" if skipped else "")
            + "<h2>Figures</h2>" + "".join(figures) + "</body></html>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
