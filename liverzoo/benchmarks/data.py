"""Data benchmark: 2.5D stacks per second, tf.data reader vs a naive nibabel loader.

Both deliver the same batches: 16 stacks of T = 7 slices, 256 x 256, preprocessed with the
`ds_nnunet` preset (the 2.5D T = 7 model) at in-plane size 256, from (a) the embedded demo
CT and (b) a 512 x 512 x 300 phantom. The tf.data reader reads GZIP shards written by
`write_dataset` (each case preprocessed once) with its defaults. The naive loader does what
a first script would: for each batch it opens one case's NIfTI with nibabel, reorients it,
then for each stack resizes and normalises the T slices in Python and stacks them.
Throughputs are measured in the same run, after a warm-up.

Conversion: the wall time of `write_dataset` over a set of phantom cases with 1 and 2
worker processes (`make_tfrecords --num_workers`) and on Apache Beam's DirectRunner
(`make_tfrecords --runner=DirectRunner`, where apache-beam is installed), same files checked
byte for byte.
"""
import filecmp
import os
import tempfile
import time

import numpy as np

from liverzoo.benchmarks import machine_line, markdown_table

BATCH, T, SIZE, PRESET = 16, 7, 256, "ds_nnunet"


def naive_batches(paths, preset, seed=0):
    """Batches from NIfTI files the naive way: nibabel per batch, slices stacked in Python."""
    import nibabel as nib

    from liverzoo.data import preprocess, sampling

    rng = np.random.default_rng(seed)
    while True:
        image = nib.as_closest_canonical(nib.load(paths[rng.integers(len(paths))]))
        volume = image.get_fdata(dtype=np.float32)
        depth = volume.shape[2]
        stacks = []
        for _ in range(BATCH):
            centre = int(rng.integers(depth))
            slices = [preprocess.resize_inplane(volume[:, :, k:k + 1], SIZE)[:, :, 0]
                      for k in sampling.stack_indices(centre, depth, T, 1)]
            stacks.append(preprocess.apply_preset(np.stack(slices, axis=-1), preset))
        yield np.stack(stacks)


def _rate(batches, count, warmup):
    for _ in range(warmup):
        next(batches)
    start = time.perf_counter()
    for _ in range(count):
        next(batches)
    return count * BATCH / (time.perf_counter() - start)


def _measure(name, cases, nifti_paths, folder, reader_batches, naive_count):
    from liverzoo.data import preprocess, tfrecord

    start = time.perf_counter()
    manifest = tfrecord.write_dataset(cases, folder, preset=PRESET, num_shards=2, val_fraction=0.0,
                                      inplane_size=SIZE, seed=0)
    write_s = time.perf_counter() - start
    preset = preprocess.Preset.from_dict(manifest["preset"])
    dataset = tfrecord.make_dataset(folder, mode="dense", stack_size=T, batch_size=BATCH, split="all")
    reader = _rate(iter(dataset), reader_batches, warmup=5)
    print(f"  {name}: tf.data {reader:.0f} stacks/s", flush=True)
    naive = _rate(naive_batches(nifti_paths, preset), naive_count, warmup=1)
    print(f"  {name}: naive {naive:.1f} stacks/s", flush=True)
    megabytes = sum(s["bytes"] for s in manifest["shards"]) / 1e6
    return [name, f"{reader:.0f}", f"{naive:.1f}", f"{reader / naive:.0f}x", f"{write_s:.1f}", f"{megabytes:.0f}"]


def conversion(quick=False):
    """Seconds to convert phantom cases with 1 and 2 workers and on Beam; returns the Markdown table."""
    from liverzoo.data import beam_pipeline, case_pool, io, tfrecord
    from liverzoo.data.phantom import save_phantom
    from liverzoo.errors import ConfigError

    count, shape = (4, (128, 128, 32)) if quick else (6, (512, 512, 80))
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"data benchmark: converting {count} phantoms {'x'.join(map(str, shape))}", flush=True)
        os.mkdir(os.path.join(tmp, "in"))
        for k in range(count):
            save_phantom(os.path.join(tmp, "in", f"volume-{k}.nii.gz"),
                         os.path.join(tmp, "in", f"segmentation-{k}.nii.gz"), shape, (0.8, 0.8, 1.0), seed=k,
                         fov_padding=True)
        cases = io.find_cases(os.path.join(tmp, "in"))
        for workers in (1, 2):
            start = time.perf_counter()
            tfrecord.write_dataset(cases, os.path.join(tmp, str(workers)), preset=PRESET, num_shards=2,
                                   val_fraction=0.0, inplane_size=SIZE, seed=0, num_workers=workers)
            times[workers] = time.perf_counter() - start
            print(f"  {workers} worker(s): {times[workers]:.1f} s", flush=True)
        # Start-up alone: two fresh workers import TensorFlow (to unpickle a tfrecord function).
        start = time.perf_counter()
        with case_pool.CasePool(2, tmp) as pool:
            list(pool.map(tfrecord.shard_name, [(str(k), ("train", k, 2, None)) for k in range(2)]))
        startup = time.perf_counter() - start
        try:
            beam_pipeline.require_beam()
        except ConfigError as e:  # apache-beam not installed: the row says so instead of a time
            beam_missing = str(e)
        else:
            start = time.perf_counter()
            beam_pipeline.write_dataset(cases, os.path.join(tmp, "beam"), runner="DirectRunner", preset=PRESET,
                                        num_shards=2, val_fraction=0.0, inplane_size=SIZE, seed=0)
            times["beam"] = time.perf_counter() - start
            print(f"  Beam DirectRunner: {times['beam']:.1f} s", flush=True)
        names = sorted(os.listdir(os.path.join(tmp, "1")))
        for other in [k for k in times if k != 1]:
            _, mismatch, errors = filecmp.cmpfiles(os.path.join(tmp, "1"), os.path.join(tmp, str(other)), names,
                                                   shallow=False)
            if mismatch or errors:
                raise AssertionError(f"1 worker and {other} wrote different files: {mismatch + errors}")
    label = {1: "1 worker process", 2: "2 worker processes", "beam": "Apache Beam DirectRunner (in-process)"}
    rows = [[label[k], f"{t:.1f}", f"{times[1] / t:.2f}x"] for k, t in times.items()]
    rows.insert(2, ["(of which starting 2 workers)", f"{startup:.1f}", ""])
    if "beam" not in times:
        rows.append([label["beam"], "-", beam_missing])
    return (f"### Conversion: {count} phantom cases {'x'.join(map(str, shape))} to shards\n\n"
            f"`write_dataset` (`make_tfrecords --num_workers`), preset `{PRESET}` at {SIZE} x {SIZE}, GZIP; "
            "the time includes starting the worker processes (each imports TensorFlow), measured alone below; "
            "all runs wrote byte-identical files.\n\n"
            + markdown_table(["conversion", "wall time (s)", "speed-up"], rows))


def run(quick=False):
    """Measures and returns the Markdown section (see module docstring)."""
    from liverzoo.data import demo, io
    from liverzoo.data.phantom import save_phantom

    depth = 64 if quick else 300
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print("data benchmark: demo CT", flush=True)
        demo_paths = [demo.demo_path(image) for image, _ in demo.FILES.values()]
        demo_cases = [demo.load_demo_volume(name) for name in demo.FILES]
        rows.append(_measure("demo CT (3 real volumes)", demo_cases, demo_paths, os.path.join(tmp, "demo"),
                             reader_batches=20 if quick else 100, naive_count=3 if quick else 10))
        print(f"data benchmark: phantom 512x512x{depth}", flush=True)
        image, label = os.path.join(tmp, "volume-0.nii.gz"), os.path.join(tmp, "segmentation-0.nii.gz")
        save_phantom(image, label, (512, 512, depth), (0.8, 0.8, 1.0), seed=0, fov_padding=True)
        rows.append(_measure(f"phantom 512x512x{depth}", [io.CaseSource("phantom", image, label)], [image],
                             os.path.join(tmp, "phantom"), reader_batches=20 if quick else 100,
                             naive_count=2 if quick else 5))
    header = ["data", "tf.data reader (stacks/s)", "naive nibabel loader (stacks/s)", "ratio",
              "write shards (s)", "shards (MB)"]
    return ("## Data: 2.5D stacks per second (T = 7, 256 x 256, batch 16)\n\n"
            f"Machine: {machine_line()}. Preset `{PRESET}` at 256 x 256; reader defaults "
            "(GZIP shards, samples_per_case, cases_in_flight); the naive loader opens the NIfTI with nibabel "
            "for every batch and resizes/normalises/stacks slices in Python."
            + (" Quick run: smaller phantom, fewer batches." if quick else "") + "\n\n"
            + markdown_table(header, rows) + "\n\n" + conversion(quick))
