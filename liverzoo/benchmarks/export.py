"""Export benchmark: TFLite file sizes, LiteRT vs Keras CPU latency, int8 agreement.

`run()` takes every registered model at its paper input size (`SPECS[name].paper_input_shape`)
except where that is impractical on a 2-core CPU (`BENCH_OVERRIDES`, said in the table),
briefly fine-tunes it on the embedded real demo CT (`fine_tune`: int8 agreement of fresh
random weights measures rounding of near-tied scores, not the export), converts it to
TFLite in the four modes (`liverzoo.export.TFLiteExporter`) and measures, in one process:
file size per mode, median latency of one batch-1 inference in LiteRT (XNNPACK, 2 threads)
and in Keras (a traced `model(x, training=False)`, same thread budget), and the int8
argmax agreement with Keras on real demo CT inputs. Goals (issue 7): LiteRT fp32 no
slower than Keras; int8 at most 0.3x the fp32 size.
"""
import sys
import tempfile

import numpy as np

from liverzoo.benchmarks import machine_line, markdown_table, median_time
from liverzoo.errors import ConfigError

NUM_THREADS = 2
#: name -> (input shape, builder kwargs, why): where the paper's size is impractical here.
BENCH_OVERRIDES = {
    "ynet3d": ((16, 128, 128, 1), {"base_filters": 8},
               "paper 64x256x256 at VGG19 widths (186 M weights) does not fit this CPU budget"),
    "ynet3d_ee": ((16, 128, 128, 1), {"base_filters": 8},
                  "paper 64x256x256 at VGG19 widths (169 M weights) does not fit this CPU budget"),
}


def _progress(message):
    print(message, file=sys.stderr, flush=True)


def fine_tune(model, images, labels, *, steps=10, batch_size=4, learning_rate=3e-3, seed=0):
    """A few Adam steps of cross-entropy on the segmentation output, in place.

    Fresh random weights give near-tied class scores whose argmax flips under any rounding,
    so an int8 agreement measured on them says nothing about the export; after a few steps
    on real CT the scores are decisive and the mask is the model's, not noise. Batch-norm
    momentum is 0.5 during these steps so that the moving statistics used at inference
    follow the few batches seen (restored afterwards).

    Args:
        model: a zoo model (deep-supervision heads are not trained).
        images: float32 inputs `(N,) + input_shape` (`liverzoo.export.sample_inputs`).
        labels: int labels `(N, H, W)` or `(N, D, H, W)`.
        steps: optimizer steps.
        batch_size: examples per step.
        learning_rate: Adam learning rate.
        seed: batch sampling seed.

    Returns:
        The last training loss.

    Example:
        >>> images, labels = export.sample_inputs(demo.demo_cases(), (32, 32, 1), "residual_unet")
        >>> fine_tune(model, images, labels, steps=10)
    """
    import keras

    from liverzoo import export

    infer = export.inference_model(model)
    norms = [layer for layer in infer._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.5
    # Eager steps: for a handful of steps, tracing the train function costs more than it saves.
    infer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  run_eagerly=True)
    rng = np.random.default_rng(seed)
    loss = None
    try:
        for _ in range(steps):
            index = rng.choice(len(images), min(batch_size, len(images)), replace=False)
            loss = infer.train_on_batch(images[index], labels[index])
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return float(loss)


def lite_latency(path, *, repeats=5):
    """Median seconds of one batch-1 inference of a `.tflite` file in LiteRT (XNNPACK)."""
    from liverzoo.lite import LiteModel

    runner = LiteModel(path, num_threads=NUM_THREADS)
    x = np.random.default_rng(0).standard_normal((1,) + runner.input_shape).astype(np.float32)
    return median_time(lambda: runner.predict(x), repeats=repeats, warmup=1)


def benchmark_model(name, input_shape, kwargs, *, workdir, steps=8, repeats=5):
    """One table row: sizes per mode, LiteRT and Keras latency, int8 agreement."""
    import keras

    from liverzoo import export, models
    from liverzoo.benchmarks.models import keras_latency
    from liverzoo.data import demo

    spec = models.SPECS[name]
    keras.utils.set_random_seed(0)
    model = models.build(name, input_shape=input_shape, **kwargs)
    cases = demo.demo_cases()
    images, labels = export.sample_inputs(cases[:-1], input_shape, spec.preset, num_samples=8)
    fine_tune(model, images, labels, steps=steps, batch_size=2)
    val = export.sample_inputs(cases[-1:], input_shape, spec.preset, num_samples=2)[0]
    row = {"name": name, "input_shape": input_shape, "params": model.count_params(), "size": {}}
    with export.TFLiteExporter(model) as exporter:
        for mode in export.QUANTIZE_MODES:
            _progress(f"export: {name} {mode}")
            path = f"{workdir}/{name}_{mode}.tflite"
            try:
                export.write_tflite(exporter.convert(mode, num_calibration=16), path)
            except ConfigError as e:
                row["size"][mode] = None
                row.setdefault("errors", []).append(f"{mode}: {e}")
                continue
            row["size"][mode] = len(open(path, "rb").read())
            if mode == "none":
                row["lite_s"] = lite_latency(path, repeats=repeats)
            if mode == "int8":
                row["int8_agreement"] = export.verify_tflite(path, model, val)["argmax_agreement"]
    row["keras_s"] = keras_latency(export.inference_model(model), input_shape, repeats=repeats)
    del model
    keras.backend.clear_session()
    return row


def _mb(size):
    return "failed" if size is None else f"{size / 1e6:.1f}"


def run(quick=False):
    """Runs the export benchmark and returns its Markdown section."""
    from liverzoo import models

    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="liverzoo-bench-export-") as workdir:
        for name in sorted(models.MODELS):
            spec = models.SPECS[name]
            if quick:
                shape, kwargs, why = spec.tiny_input_shape, spec.tiny_kwargs, "quick run: test size"
            else:
                shape, kwargs, why = BENCH_OVERRIDES.get(name, (spec.paper_input_shape, {}, None))
            if why:
                notes.append(f"- `{name}` at {'x'.join(map(str, shape))}"
                             + (f" with {kwargs}" if kwargs else "") + f": {why}.")
            rows.append(benchmark_model(name, shape, kwargs, workdir=workdir, steps=2 if quick else 8,
                                        repeats=2 if quick else 5))
            for error in rows[-1].get("errors", []):
                notes.append(f"- `{name}` {error}")
    table = []
    for r in rows:
        fp32, int8 = r["size"].get("none"), r["size"].get("int8")
        table.append([
            r["name"], "x".join(map(str, r["input_shape"])), f"{r['params']:,}",
            *(_mb(r["size"].get(m)) for m in ("none", "fp16", "dynamic", "int8")),
            f"{int8 / fp32:.2f}" if fp32 and int8 else "-",
            f"{r['keras_s'] * 1e3:.0f}", f"{r['lite_s'] * 1e3:.0f}" if "lite_s" in r else "-",
            f"{r['keras_s'] / r['lite_s']:.2f}" if "lite_s" in r else "-",
            f"{r['int8_agreement']:.4f}" if "int8_agreement" in r else "-",
        ])
    header = ["model", "input", "params", "fp32 MB", "fp16 MB", "dynamic MB", "int8 MB", "int8/fp32",
              "Keras ms", "LiteRT fp32 ms", "Keras/LiteRT", "int8 agreement"]
    text = [
        "## Export: TFLite sizes, LiteRT vs Keras latency, int8 agreement",
        "",
        f"Machine: {machine_line()}. Batch 1, {NUM_THREADS} threads (LiteRT with XNNPACK; Keras with a "
        f"traced call, on this machine's cores). Median of {2 if quick else 5} runs. Weights: {2 if quick else 8} Adam steps "
        "on the demo training cases; int8 calibrated on the demo CT and compared with Keras on the "
        "held-out demo case (fraction of voxels with the same argmax).",
        "",
        markdown_table(header, table),
    ]
    if notes:
        text += ["", *notes]
    return "\n".join(text)
