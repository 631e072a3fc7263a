"""Export benchmark: TFLite file sizes, LiteRT vs Keras CPU latency, int8 agreement.

`run()` measures, in one process, for every registered model:

- at its paper input size (`SPECS[name].paper_input_shape`; `spec.export.bench_input_shape` where
  that is impractical on a 2-core CPU, said under the table), with fresh weights (sizes and
  latencies do not depend on their values): the file of each quantization mode (int8
  calibrated on real demo CT at that size), and the median latency of one batch-1 inference
  of the fp32 and int8 files in LiteRT (XNNPACK, 2 threads) and of the Keras model (a traced
  `model(x, training=False)`), in the same run;
- at the test size (`fine_tuned_model`, the setting of tests/export/test_all_models.py): the int8
  argmax agreement and foreground Dice with Keras on real demo CT after a brief fine-tune
  (int8 agreement of fresh random weights measures rounding of near-tied scores, not the
  export).

Goals (issue 7): LiteRT fp32 no slower than Keras; int8 at most 0.3x the fp32 size.
"""
import sys
import tempfile

import numpy as np

from liverzoo.benchmarks import machine_line, markdown_table, median_time
from liverzoo.errors import ConfigError

NUM_THREADS = 2


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

    from liverzoo import _keras_internals, export

    infer = export.inference_model(model)
    norms = [layer for layer in _keras_internals.flatten_layers(infer)
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.5
    # Eager steps for a handful of steps (tracing the train function costs more than it saves);
    # a traced one beyond that (150 steps of ynet3d_ee: 11 s instead of 56 s, same losses).
    infer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  run_eagerly=steps <= 20)
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


def fine_tuned_model(name, cases=None, *, shape=None, num_inputs=4):
    """A zoo model at its test size, briefly fine-tuned on real CT, and real inputs to compare on.

    The model is built at `SPECS[name].tiny_input_shape` (or `shape`) with `SPECS[name].tiny_kwargs`, then `fine_tune`d (`spec.export.fine_tune_steps`:
    10, more for slow learners) on 12 inputs of the demo's LiTS 117 training slab
    (liver and tumor on every slice; the whole-abdomen cases are mostly background at test
    sizes). The comparison inputs are other slices of that slab: what an export check
    measures is how faithfully a file computes the model's function where the model is
    decisive, not how well a 10-step model generalises (on the held-out slab its scores are
    near-tied almost everywhere).

    Args:
        name: zoo model name.
        cases: `liverzoo.data.demo.demo_cases()` (LiTS 117 is taken from them, else loaded).
        shape: input shape instead of the test size.
        num_inputs: comparison inputs returned.

    Returns:
        `(model, inputs float32 (num_inputs,) + input_shape)`.

    Example:
        >>> model, inputs = fine_tuned_model("residual_unet")
        >>> export.verify_tflite("residual_unet_int8.tflite", model, inputs)["argmax_agreement"]
    """
    import keras

    from liverzoo import export, models

    spec = models.SPECS[name]
    shape = shape or spec.tiny_input_shape
    keras.utils.set_random_seed(0)
    model = models.build(name, input_shape=shape, **spec.tiny_kwargs)
    train = _fine_tune_case(cases)
    images, labels = export.sample_inputs([train], shape, spec.preset, num_samples=12)
    fine_tune(model, images, labels, steps=spec.export.fine_tune_steps)
    return model, export.sample_inputs([train], shape, spec.preset, num_samples=num_inputs)[0]


#: LiTS 117's inferior slices: the fine-tune data of the int8 fidelity figures (README, tests).
FINE_TUNE_SLICES = (0, 59)


def _fine_tune_case(cases=None):
    """LiTS 117's slices FINE_TUNE_SLICES (liver and tumor) as a `CTVolume`."""
    import dataclasses

    from liverzoo.data import demo

    lits = next((c for c in cases if c.case_id == "lits117"), None) if cases else None
    lits = lits or demo.load_demo_volume("lits117")
    start, stop = FINE_TUNE_SLICES
    return dataclasses.replace(lits, array=np.ascontiguousarray(lits.array[:, :, start:stop]),
                               label=np.ascontiguousarray(lits.label[:, :, start:stop]), case_id="lits117_inferior")


def lite_latency(path, *, repeats=5):
    """Median seconds of one batch-1 inference of a `.tflite` file in LiteRT (XNNPACK)."""
    from liverzoo.lite import LiteModel

    runner = LiteModel(path, num_threads=NUM_THREADS)
    x = np.random.default_rng(0).standard_normal((1,) + runner.input_shape).astype(np.float32)
    return median_time(lambda: runner.predict(x), repeats=repeats, warmup=1)


def _repeats(path, repeats):
    """Fewer repeats for files whose single inference takes seconds (CONV_3D baselines)."""
    return min(repeats, 3) if lite_latency(path, repeats=1) > 5.0 else repeats


def benchmark_model(name, input_shape, kwargs, *, workdir, repeats=5, num_calibration=4):
    """One table row: sizes and latencies at `input_shape`, int8 fidelity at the test size."""
    import os

    import keras

    from liverzoo import export, models
    from liverzoo.benchmarks.models import keras_latency

    row = {"name": name, "input_shape": input_shape, "size": {}, "errors": []}
    # int8 fidelity on a fine-tuned model at the test size (fresh weights give near-tied scores).
    model, inputs = fine_tuned_model(name)
    row["test_shape"] = inputs.shape[1:]
    _progress(f"export: {name} int8 fidelity at {row['test_shape']}")
    try:
        path = export.write_tflite(export.convert_tflite(model, "int8", num_calibration=16),
                                   f"{workdir}/{name}_test_int8.tflite")
        report = export.verify_tflite(path, model, inputs)
        row["int8_agreement"], row["int8_dice"] = report["argmax_agreement"], report["dice"]["foreground"]
    except ConfigError as e:
        row["errors"].append(f"int8 at the test size: {e}")
    del model
    keras.backend.clear_session()

    # Sizes and speed at the benchmark size; fresh weights (neither depends on their values).
    keras.utils.set_random_seed(0)
    model = models.build(name, input_shape=input_shape, **kwargs)
    row["params"] = model.count_params()
    paths = {}
    with export.TFLiteExporter(model) as exporter:
        for mode in export.QUANTIZE_MODES:
            _progress(f"export: {name} {mode} at {input_shape}")
            try:
                # int8: calibrated on real demo CT preprocessed to this input size.
                data = exporter.convert(mode, num_calibration=num_calibration)
            except ConfigError as e:
                row["size"][mode] = None
                row["errors"].append(f"{mode}: {e}")
                continue
            paths[mode] = export.write_tflite(data, f"{workdir}/{name}_{mode}.tflite")
            row["size"][mode] = os.path.getsize(paths[mode])
    _progress(f"export: {name} LiteRT latency")
    row["repeats"] = _repeats(paths["none"], repeats)
    row["lite_s"] = lite_latency(paths["none"], repeats=row["repeats"])
    row["lite_int8_s"] = lite_latency(paths["int8"], repeats=row["repeats"]) if "int8" in paths else None
    _progress(f"export: {name} Keras latency")
    row["keras_s"] = keras_latency(export.inference_model(model), input_shape, repeats=row["repeats"])
    del model
    keras.backend.clear_session()
    return row


def _mb(size):
    return "failed" if size is None else f"{size / 1e6:.1f}"


def _ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.0f}"


def run(quick=False):
    """Runs the export benchmark.

    Returns:
        (Markdown section, {"latency": [(model, {"Keras": ms, "LiteRT fp32": ms}), ...]}),
        the data for tools/benchmark.py's latency chart.
    """
    from liverzoo import models

    rows, notes = [], []
    repeats = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="liverzoo-bench-export-") as workdir:
        for name in sorted(models.MODELS):
            spec = models.SPECS[name]
            if quick:
                shape, kwargs, why = spec.tiny_input_shape, spec.tiny_kwargs, "quick run: test size"
            elif spec.export.bench_input_shape:
                shape, kwargs, why = spec.export.bench_input_shape, spec.export.bench_kwargs, spec.export.bench_why
            else:
                shape, kwargs, why = spec.paper_input_shape, {}, None
            if why:
                notes.append(f"- `{name}` at {'x'.join(map(str, shape))}"
                             + (f" with {kwargs}" if kwargs else "") + f": {why}.")
            rows.append(benchmark_model(name, shape, kwargs, workdir=workdir, repeats=repeats))
            notes += [f"- `{name}` {error}" for error in rows[-1]["errors"]]
    table = []
    for r in rows:
        fp32, int8 = r["size"].get("none"), r["size"].get("int8")
        table.append([
            r["name"], "x".join(map(str, r["input_shape"])), f"{r['params']:,}",
            *(_mb(r["size"].get(m)) for m in ("none", "fp16", "dynamic", "int8")),
            f"{int8 / fp32:.2f}" if fp32 and int8 else "-",
            _ms(r["keras_s"]), _ms(r["lite_s"]), f"{r['keras_s'] / r['lite_s']:.2f}", _ms(r["lite_int8_s"]),
            "x".join(map(str, r["test_shape"])),
            f"{r['int8_agreement']:.4f} / {r['int8_dice']:.3f}" if "int8_agreement" in r else "-",
        ])
        if r["repeats"] != repeats:
            notes.append(f"- `{r['name']}`: medians of {r['repeats']} runs (one inference takes seconds).")
    header = ["model", "input", "params", "fp32 MB", "fp16 MB", "dynamic MB", "int8 MB", "int8/fp32", "Keras ms",
              "LiteRT fp32 ms", "Keras/LiteRT", "LiteRT int8 ms", "test size", "int8 agreement / fg Dice"]
    steps = {name: spec.export.fine_tune_steps for name, spec in models.SPECS.items()}
    more = ", ".join(f"{n} for {name}" for name, n in sorted(steps.items()) if n != 10)
    text = [
        "## Export: TFLite sizes, LiteRT vs Keras latency, int8 agreement",
        "",
        f"Machine: {machine_line()}. Each model at the input size shown (the paper's unless noted below), "
        "fresh weights (sizes and latencies do not depend on their values): the file of each `--quantize` mode, "
        "int8 calibrated on 4 inputs of the embedded demo CT preprocessed to that size. Latency: batch 1, LiteRT "
        f"with XNNPACK and {NUM_THREADS} threads vs Keras (a traced `model(x, training=False)` on the machine's "
        f"cores), medians of {repeats} runs after a warm-up, in the same run. int8 agreement and foreground Dice: "
        f"as tests/export/test_all_models.py measures them, on the model at the test size shown after 10 Adam steps "
        f"({more}) "
        "on the demo's LiTS 117 training slab, int8 calibrated on 16 "
        "inputs of the demo CT and compared with Keras on other slices of that slab. Goals (issue 7): "
        "Keras/LiteRT >= 1; int8/fp32 <= 0.3; agreement >= 0.98.",
        "",
        markdown_table(header, table),
    ]
    if notes:
        text += ["", *notes]
    latency = [(r["name"], {"Keras": r["keras_s"] * 1e3, "LiteRT fp32": r["lite_s"] * 1e3,
                            **({"LiteRT int8": r["lite_int8_s"] * 1e3} if r["lite_int8_s"] else {})})
               for r in rows]
    return "\n".join(text), {"latency": latency}
