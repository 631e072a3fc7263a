"""Leave-one-patient-out cross-validation on the embedded real patients.

One model per held-out whole-abdomen patient, trained with the demo recipe on the other
patients, then the held-out patient's whole scan is segmented through the predict path
(`liverzoo.runtime.load_segmenter(...).segment`, post-processing on) and scored on its own grid.
The table's figure is the **last** checkpoint's: the trainer also keeps `best.keras`, selected
on the held-out patient itself, which would flatter the result (its Dice is shown beside, marked).
"""
import dataclasses
import os
import time

import numpy as np

from liverzoo.errors import ConfigError


def patient_folds(seed=0):
    """`[(fold, held-out patient, split)]` over the embedded demo patients, one fold each."""
    from liverzoo.data import demo, splits

    patients = list(demo.DEMO_SPLIT)
    folds = []
    for fold in range(len(patients)):
        split = splits.split_cases(patients, seed=seed, num_folds=len(patients), fold=fold)
        (held,) = [p for p, part in split.items() if part == "val"]
        folds.append((fold, held, split))
    return folds


def _score(model_path, ct):
    from liverzoo import metrics, runtime

    mask = runtime.load_segmenter(model_path).segment(ct)
    liver = metrics.dice(mask >= 1, ct.label >= 1)
    tumor = metrics.dice(mask == 2, ct.label == 2) if (ct.label == 2).any() else None
    return float(liver), None if tumor is None else float(tumor)


def leave_one_patient_out(config, *, patients=None, log=print):
    """Trains and scores one fold per held-out whole-abdomen demo patient.

    Args:
        config: a `TrainConfig` for the demo data (`data=None`); `model_dir` is the parent of
            the per-patient runs (default `runs/crossval_MODEL`); `num_folds`/`fold` are set here.
        patients: the held-out patients to run (default: every whole-abdomen patient).
        log: where progress and the table go.

    Returns:
        `{"rows": [{"patient", "liver_dice", "tumor_dice", "best_liver_dice", "seconds"}],
        "liver_mean", "liver_worst"}` (tumor Dice None where the patient has no tumor label).

    Raises:
        ConfigError: `config.data` is set (the folds are over the embedded patients).
    """
    from liverzoo.data import demo
    from liverzoo.training.config import resolve
    from liverzoo.training.loop import train

    if config.data is not None:
        raise ConfigError(f"--data={config.data}: cross-validation runs on the embedded demo patients (no --data)")
    parent = config.model_dir or os.path.join("runs", f"crossval_{config.model}")
    if patients is not None and not (patients and all(patients)):
        # An empty --patients ran every fold (an hour at 6 x 180 steps) instead of none.
        raise ConfigError(f"--patients={','.join(patients)}: an empty patient name; leave the flag out for every "
                          f"whole-abdomen patient ({', '.join(demo.FULL_FIELD_OF_VIEW)})")
    unknown = sorted(set(patients or ()) - set(demo.FULL_FIELD_OF_VIEW))
    if unknown:
        raise ConfigError(f"--patients: {', '.join(unknown)} is not a whole-abdomen demo patient "
                          f"({', '.join(demo.FULL_FIELD_OF_VIEW)})")
    folds = patient_folds(config.seed)
    # Every flag is checked before the first fold says it is training.
    resolve(dataclasses.replace(config, model_dir=parent, num_folds=len(folds[0][2]), fold=0))
    rows = []
    for fold, held, split in folds:
        if patients and held not in patients:
            continue
        if held not in demo.FULL_FIELD_OF_VIEW:
            log(f"fold {fold}: {held} is a liver crop, not a whole abdomen: not a held-out patient here")
            continue
        demo.check_patient_split(split, f"fold {fold}")
        run_dir = os.path.join(parent, held)
        start = time.time()
        log(f"fold {fold}: training on {', '.join(p for p, s in split.items() if s == 'train')}, holding out {held}")
        train(dataclasses.replace(config, model_dir=run_dir, num_folds=len(split), fold=fold))
        ct = demo.load_demo_volume(held)
        liver, tumor = _score(os.path.join(run_dir, "last.keras"), ct)
        best_liver, _ = _score(os.path.join(run_dir, "best.keras"), ct)
        rows.append(dict(patient=held, liver_dice=liver, tumor_dice=tumor, best_liver_dice=best_liver,
                         seconds=round(time.time() - start)))
    livers = [r["liver_dice"] for r in rows]
    result = dict(rows=rows, liver_mean=float(np.mean(livers)), liver_worst=float(np.min(livers)))
    for line in table_lines(result):
        log(line)
    return result


def table_lines(result):
    """The cross-validation table as Markdown lines."""
    lines = ["| held-out patient | liver Dice (last) | tumor Dice | liver Dice (best, selected on it) | time |",
             "|---|---|---|---|---|"]
    for r in result["rows"]:
        tumor = "no tumor label" if r["tumor_dice"] is None else f"{r['tumor_dice']:.3f}"
        lines.append(f"| {r['patient']} | {r['liver_dice']:.3f} | {tumor} | {r['best_liver_dice']:.3f} | "
                     f"{r['seconds']} s |")
    lines.append(f"| **mean / worst** | **{result['liver_mean']:.3f} / {result['liver_worst']:.3f}** | | | |")
    return lines
