"""Whole-volume inference benchmark: `python tools/benchmark.py inference [--quick]`.

A 512x512x300 phantom CT (`liverzoo.data.phantom`, 0.8x0.8x2.5 mm) is written as NIfTI;
every row then runs in a fresh Python process (so peak memory is its own): build the model
with fresh weights, read the NIfTI (`load_volume`), `segment` it (preset preprocessing,
`predict_volume`, back to the CT grid, post-processing), write the mask (`save_mask`).
Reported: seconds per stage, end-to-end seconds (read + predict + write, model build
excluded) and the process's peak resident memory (`ru_maxrss`, TensorFlow included).
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from liverzoo.benchmarks import machine_line, markdown_table

REPO = pathlib.Path(__file__).resolve().parents[2]
MEMORY_TARGET_GB = 4.0

# (model, input shape it is built with, segment() options, what the row measures)
ROWS = [
    ("residual_unet", (256, 256, 1), {},
     "2D, 256x256 slices (paper 002 input, preset plane), batch 8"),
    ("lw_hcn", (20, 256, 256, 1), {"inplane_size": 256, "window": 20, "step": 10},
     "3D, 20-slice windows every 10 slices (paper 001 test setting) on a 256x256 plane"),
    ("lw_hcn", (20, 512, 512, 1), {"window": 20, "step": 10},
     "3D, paper 001 test setting as printed: 20x512x512 windows every 10 slices"),
]
QUICK_ROWS = [
    ("residual_unet", (64, 64, 1), {"inplane_size": 64}, "quick smoke run"),
    ("lw_hcn", (8, 64, 64, 1), {"inplane_size": 64, "window": 8, "step": 4}, "quick smoke run"),
]


def _worker(args):
    """Runs one row in this (fresh) process and prints its figures as one JSON line."""
    import resource
    import time

    from liverzoo import models
    from liverzoo.data.io import load_volume, save_mask
    from liverzoo.inference import segment

    t0 = time.perf_counter()
    model = models.build(args["model"], input_shape=tuple(args["input_shape"]))
    t1 = time.perf_counter()
    ct = load_volume(args["input"])
    t2 = time.perf_counter()
    mask = segment(model, ct, model_name=args["model"], **args["options"])
    t3 = time.perf_counter()
    save_mask(mask, ct, args["output"])
    t4 = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print("RESULT " + json.dumps({
        "build_s": t1 - t0, "read_s": t2 - t1, "predict_s": t3 - t2, "write_s": t4 - t3,
        "end_to_end_s": t4 - t1, "peak_gb": peak_kb * 1024 / 1e9, "liver_voxels": int((mask >= 1).sum()),
    }), flush=True)


def measure(model, input_shape, options, nifti, output, timeout=3600):
    """Figures of one row, measured in a subprocess; raises RuntimeError if it fails."""
    args = dict(model=model, input_shape=list(input_shape), options=options, input=str(nifti), output=str(output))
    return run_worker("liverzoo.benchmarks.inference", args, f"{model} {tuple(input_shape)}", timeout)


def run_worker(module, args, what, timeout=3600):
    """Runs `module._worker(args)` in a fresh Python process; returns its `RESULT` JSON line.

    Raises:
        RuntimeError: the worker failed (its last stderr line is in the message).
    """
    code = f"import json, sys; from {module} import _worker; _worker(json.loads(sys.argv[1]))"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=REPO,
                            env=env, timeout=timeout)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{what}: worker failed (exit {result.returncode}): {tail}")


def write_phantom(path, shape, spacing=(0.8, 0.8, 2.5)):
    """Writes a phantom CT as int16 NIfTI (what a scanner export looks like)."""
    import nibabel as nib
    import numpy as np

    from liverzoo.data.phantom import make_phantom

    hu, _ = make_phantom(shape, spacing=spacing, seed=0)
    nib.save(nib.Nifti1Image(hu, np.diag(list(spacing) + [1.0])), str(path))


def run(quick=False, models=None):
    """Measures the rows (all, or those of the model names in `models`); returns Markdown.

    Args:
        quick: a 128x128x24 phantom and small shapes (a smoke run, not for the README).
        models: optional model names to restrict the rows to.

    Returns:
        a Markdown section with the table.

    Example:
        >>> print(run(quick=True))  # doctest: +SKIP
    """
    from liverzoo.models import MODELS

    shape = (128, 128, 24) if quick else (512, 512, 300)
    rows = [r for r in (QUICK_ROWS if quick else ROWS) if models is None or r[0] in models]
    table = []
    with tempfile.TemporaryDirectory(prefix="liverzoo-bench-") as tmp:
        nifti = pathlib.Path(tmp) / "phantom.nii.gz"
        write_phantom(nifti, shape)
        for name, input_shape, options, what in rows:
            if name not in MODELS:
                table.append([name, str(input_shape), what, "not registered", "", "", "", "", ""])
                continue
            print(f"inference benchmark: {name} {input_shape} ...", file=sys.stderr, flush=True)
            try:
                r = measure(name, input_shape, options, nifti, pathlib.Path(tmp) / f"{name}.nii.gz")
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                table.append([name, str(input_shape), what, f"failed: {e}", "", "", "", "", ""])
                continue
            table.append([name, str(input_shape), what, f"{r['read_s']:.1f}", f"{r['predict_s']:.1f}",
                          f"{r['write_s']:.1f}", f"{r['end_to_end_s']:.1f}", f"{r['peak_gb']:.2f}",
                          "yes" if r["peak_gb"] < MEMORY_TARGET_GB else "no"])
    header = ["model", "built input", "setting", "read s", "predict s", "write s", "end-to-end s",
              "peak RSS GB", f"< {MEMORY_TARGET_GB:g} GB"]
    return (f"## Inference ({'x'.join(map(str, shape))} phantom, read + predict + write)\n\n"
            f"Machine: {machine_line()}. Fresh weights; each row in its own process; peak RSS includes "
            "TensorFlow.\n\n" + markdown_table(header, table))
