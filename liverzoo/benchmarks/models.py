"""Model benchmarks: LW-HCN with DSTS vs standard 3D convolutions, and the zoo's size table.

`run()` measures, in one process: parameters, GFLOPs (`liverzoo.models.summary`) and the
median Keras CPU latency of LW-HCN `conv_type="dsts"` and `"standard"` on the same
12x256x256 input, with their latency ratio (the paper, ../shared/papers/001_bb2d5e6c0ac559d5.txt
Table 1, measured 708.1 / 404.8 ms = 1.75x on a P100 GPU at 12x512x512); then parameters
and GFLOPs of every registered model at its paper input size next to the paper's count.
"""
import sys

import numpy as np

from liverzoo.benchmarks import machine_line, markdown_table, median_time

LW_HCN_SHAPE = (12, 256, 256, 1)
QUICK_LW_HCN_SHAPE = (4, 64, 64, 1)
PAPER_MS = {"dsts": 404.8, "standard": 708.1}


def _progress(message):
    print(message, file=sys.stderr, flush=True)


def keras_latency(model, input_shape, *, repeats=5):
    """Median seconds of one inference (batch of one) through a traced `model(x, training=False)`."""
    import tensorflow as tf

    x = tf.constant(np.random.default_rng(0).standard_normal((1,) + tuple(input_shape)).astype("float32"))
    fn = tf.function(lambda t: model(t, training=False))
    return median_time(lambda: fn(x).numpy(), repeats=repeats, warmup=1)


def lw_hcn_comparison(input_shape=LW_HCN_SHAPE, *, repeats=5):
    """Rows (conv_type, params, GFLOPs, latency s) for "dsts" and "standard" on one input shape."""
    import keras

    from liverzoo.models import summary
    from liverzoo.models.lw_hcn import build_lw_hcn

    rows = []
    for conv_type in ("dsts", "standard"):
        _progress(f"models: lw_hcn {conv_type} at {input_shape}")
        keras.utils.set_random_seed(0)
        model = build_lw_hcn(input_shape, conv_type=conv_type)
        info = summary(model)
        rows.append((conv_type, info["params"], info["gflops"], keras_latency(model, input_shape, repeats=repeats)))
        del model
        keras.backend.clear_session()
    return rows


def zoo_table(*, quick=False):
    """Rows (name, input shape, params, paper params, GFLOPs) for every model in MODELS."""
    import keras

    from liverzoo import models

    rows = []
    for name in sorted(models.MODELS):
        spec = models.SPECS[name]
        shape = spec.tiny_input_shape if quick else spec.paper_input_shape
        _progress(f"models: summary of {name} at {shape}")
        info = models.summary(name, input_shape=shape)
        rows.append((name, shape, info["params"], spec.paper_params, info["gflops"]))
        keras.backend.clear_session()
    return rows


def _millions(n):
    return "-" if n is None else f"{n / 1e6:.2f} M"


def run(quick=False):
    """Measures and returns the Markdown section of docs/benchmarks.md for the models.

    Args:
        quick: a smoke run: LW-HCN at 4x64x64 with 2 repeats, the zoo at its tiny shapes.

    Returns:
        (Markdown text, data): data["zoo"] holds the `zoo_table` rows for the parameter chart.

    Example:
        >>> print(run(quick=True))  # doctest: +SKIP
    """
    shape = QUICK_LW_HCN_SHAPE if quick else LW_HCN_SHAPE
    repeats = 2 if quick else 5
    rows = lw_hcn_comparison(shape, repeats=repeats)
    (_, p_dsts, g_dsts, t_dsts), (_, p_std, g_std, t_std) = rows
    lw_rows = [
        (t, _millions(p), f"{g:.1f}", f"{s * 1e3:.0f}", f"{PAPER_MS[t]:.1f}") for t, p, g, s in rows
    ]
    lw_rows.append(
        ("standard / dsts", f"{p_std / p_dsts:.1f}x", f"{g_std / g_dsts:.1f}x", f"{t_std / t_dsts:.2f}x",
         f"{PAPER_MS['standard'] / PAPER_MS['dsts']:.2f}x")
    )
    zoo = zoo_table(quick=quick)
    zoo_rows = [
        (name, "x".join(str(d) for d in shape), _millions(params), _millions(paper),
         "-" if paper is None else f"{params / paper:.2f}", f"{gflops:.1f}")
        for name, shape, params, paper, gflops in zoo
    ]
    size = "x".join(str(d) for d in shape[:3])
    text = "\n\n".join(
        [
            "## Models",
            f"Machine: {machine_line()}." + (" **Quick run (smoke sizes), not for the README.**" if quick else ""),
            f"### LW-HCN: DSTS vs standard 3D convolutions, one {size} sub-volume, batch 1\n\n"
            f"Keras CPU latency: median of {repeats} runs of a traced `model(x, training=False)` after one "
            "warm-up. Paper: Table 1 of 001_bb2d5e6c0ac559d5.txt, 12x512x512 on a P100 GPU. "
            "GFLOPs count a multiply-add as 2.",
            markdown_table(["conv_type", "parameters", "GFLOPs", "CPU latency (ms)", "paper P100 (ms)"], lw_rows),
            "### The zoo at the papers' input sizes\n\nParameters (all weights) and GFLOPs of one "
            "input (batch 1) at `SPECS[name].paper_input_shape`, next to the paper's parameter count.",
            markdown_table(["model", "input", "parameters", "paper", "ours / paper", "GFLOPs"], zoo_rows),
        ]
    )
    return text, {"zoo": zoo}
