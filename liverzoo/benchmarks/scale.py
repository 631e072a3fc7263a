"""Scaling benchmark: `python tools/benchmark.py scale [--quick]`.

Seconds and peak resident memory of whole-volume segmentation as the scan grows: 512x512
phantom CTs (`liverzoo.data.phantom`, int16 NIfTI in a temporary folder) of 150, 300 and
900 slices, segmented by a `residual_unet` (fresh weights: time and memory do not depend on
training) at the 128x128 working plane, three ways, each case in its own process:

- Keras: the `.keras` file through `liverzoo.runtime.segment_files` (what tools/predict.py runs);
- LiteRT fp32 and LiteRT int8: the `.tflite` files through `liverzoo.lite.segment_nifti`,
  the TensorFlow-free phone path (the worker checks that TensorFlow was never imported).

All three stream (`liverzoo.streaming`): the mask stays in a temporary file, is post-processed
and written slab by slab (`liverzoo.maskfile`). Peak RSS is the worker's own high-water mark
(VmHWM).
Then the int8 fidelity of a really trained checkpoint: the demo run's `best.keras`
(tests/data/trained) exported to int8 the default way (calibrated on the demo CT) and both
files run on every demo CT volume through the runtime (`export.verify_volumes`). Not part of
`all`.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from liverzoo.benchmarks import machine_line, markdown_table
from liverzoo.benchmarks.inference import run_worker, write_phantom

SLICES = (150, 300, 900)
PLANE = 128  # the demo model's working plane
PATHS = ("keras", "litert fp32", "litert int8")
#: The demo run's checkpoint (see its README): int8 fidelity is measured on a trained model.
TRAINED = pathlib.Path(__file__).resolve().parents[2] / "tests" / "data" / "trained" / "residual_unet_demo.keras"


def _worker(args):
    """Segments one file one way in this (fresh) process; prints its figures as one JSON line."""
    import time

    t0 = time.perf_counter()
    if args["path"] == "keras":
        from liverzoo import runtime

        runtime.segment_files(args["model"], args["input"], args["output"], log=lambda *a: None)
    else:
        from liverzoo import lite

        lite.segment_nifti(args["model"], args["input"], args["output"])
    seconds = time.perf_counter() - t0
    print("RESULT " + json.dumps({
        "seconds": seconds, "peak_gb": peak_rss_gb(),
        "tensorflow": "tensorflow" in sys.modules,
    }), flush=True)


def peak_rss_gb():
    """This process's peak resident set (VmHWM) in GB.

    Not `ru_maxrss`: on Linux a forked child starts with its parent's high-water mark, so a
    worker started from a process holding TensorFlow would report TensorFlow's size.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(path, model_file, nifti, output, timeout=3600):
    """(seconds, peak GB, TensorFlow imported) of one case, in a subprocess."""
    args = dict(path=path, model=str(model_file), input=str(nifti), output=str(output))
    return run_worker("liverzoo.benchmarks.scale", args, f"{path} {nifti.name}", timeout)


def _models(folder, plane):
    """The `.keras` file and its fp32 and int8 `.tflite` exports, in `folder`."""
    from liverzoo import models
    from liverzoo.export import export_model

    keras_file = folder / "residual_unet.keras"
    models.build("residual_unet", input_shape=(plane, plane, 1)).save(keras_file)
    files = {"keras": keras_file}
    for path, quantize in (("litert fp32", "none"), ("litert int8", "int8")):
        files[path] = folder / f"residual_unet_{quantize}.tflite"
        export_model(str(files[path]), model_path=str(keras_file), quantize=quantize, verify=False,
                     log=lambda *a: None)
    return files


def run(quick=False):
    """Measures every (slices, path) case; returns a Markdown section with the table."""
    slices, plane = ((8, 24), 32) if quick else (SLICES, PLANE)
    side = 64 if quick else 512
    rows = []
    with tempfile.TemporaryDirectory(prefix="liverzoo-scale-") as tmp:
        tmp = pathlib.Path(tmp)
        files = _models(tmp, plane)
        sizes = {path: os.path.getsize(f) / 1e6 for path, f in files.items()}
        for n in slices:
            nifti = tmp / f"phantom_{n}.nii.gz"
            write_phantom(nifti, (side, side, n))
            for path in PATHS:
                print(f"scale benchmark: {n} slices, {path} ...", file=sys.stderr, flush=True)
                try:
                    r = measure(path, files[path], nifti, tmp / f"mask_{n}.nii.gz")
                except (RuntimeError, subprocess.TimeoutExpired) as e:
                    rows.append([n, path, f"failed: {e}", "", "", ""])
                    continue
                rows.append([n, path, f"{r['seconds']:.1f}", f"{r['peak_gb']:.2f}", f"{sizes[path]:.1f}",
                             "yes" if r["tensorflow"] else "no"])
            nifti.unlink()
    header = ["slices", "path", "seconds", "peak RSS GB", "model file MB", "TensorFlow imported"]
    # --quick (the tool's test) leaves out the trained checkpoint: tests/export/test_trained.py covers it.
    return _table(side, plane, header, rows) + ("" if quick else "\n\n" + trained_int8_section())


def trained_int8_section():
    """Markdown: per demo volume, int8 vs Keras voxel agreement and liver Dice of the trained checkpoint."""
    from liverzoo.data import demo
    from liverzoo.export import export_model, verify_volumes

    if not TRAINED.is_file():
        return f"## int8 on the trained demo checkpoint\n\nnot measured: {TRAINED} not present (a source checkout has it)"
    with tempfile.TemporaryDirectory(prefix="liverzoo-int8-") as tmp:
        path = os.path.join(tmp, "residual_unet_int8.tflite")
        print("scale benchmark: int8 export of the trained checkpoint ...", file=sys.stderr, flush=True)
        export_model(path, model_path=str(TRAINED), quantize="int8", force=True, log=lambda *a: None)
        report = verify_volumes(path, TRAINED, demo.demo_cases())
    rows = [[case, f"{r['agreement']:.4f}", f"{r['liver_dice_keras']:.4f}", f"{r['liver_dice_tflite']:.4f}",
             f"{r['liver_dice_gap']:+.4f}"] for case, r in report["cases"].items()]
    rows.append(["**all**", f"**{report['agreement']:.4f}**", "", "", f"max |gap| {report['max_liver_dice_gap']:.4f}"])
    return ("## int8 on the trained demo checkpoint\n\n"
            "tests/data/trained/residual_unet_demo.keras (the demo run's best.keras) exported with "
            "`--quantize=int8` (default calibration), then every demo CT volume segmented through the runtime "
            "with the checkpoint and with the file (the run's working plane from its config.json, post-processed, "
            "the scan's grid); liver Dice "
            "is against each case's label.\n\n"
            + markdown_table(["case", "int8 vs Keras voxel agreement", "liver Dice Keras", "liver Dice int8",
                              "gap"], rows))


def _table(side, plane, header, rows):
    return (f"## Scale: whole-volume segmentation of {side}x{side}xN phantoms ({plane}x{plane} working plane)\n\n"
            f"Machine: {machine_line()}. residual_unet with fresh weights; read + preprocess + predict + "
            "post-process + write, each case in its own process; peak RSS is that process's.\n\n"
            + markdown_table(header, rows))
