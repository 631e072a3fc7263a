"""PNG charts for docs/benchmarks.md, each stamped with the machine it was measured on."""
import numpy as np


def _figure(title, machine):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.8))
    ax.set_title(title)
    fig.text(0.01, 0.01, machine, fontsize=7, color="0.4")
    return fig, ax


def _save(fig, path):
    import matplotlib.pyplot as plt

    from liverzoo.data import io

    fig.tight_layout(rect=(0, 0.03, 1, 1))
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def params_chart(zoo_rows, path, machine):
    """Bar chart: parameters of every zoo model against the paper's figure (log scale).

    Args:
        zoo_rows: rows (name, input shape, params, paper params or None, GFLOPs) as
            `liverzoo.benchmarks.models.zoo_table` returns them.
        path: PNG file to write.
        machine: the machine line stamped on the figure.
    """
    names = [r[0] for r in zoo_rows]
    ours = np.array([r[2] for r in zoo_rows], dtype=float) / 1e6
    paper = np.array([np.nan if r[3] is None else r[3] for r in zoo_rows], dtype=float) / 1e6
    fig, ax = _figure("Parameters: liverzoo vs the papers", machine)
    x = np.arange(len(names))
    ax.bar(x - 0.2, ours, 0.4, label="liverzoo")
    ax.bar(x + 0.2, np.nan_to_num(paper), 0.4, label="paper (missing = not reported)")
    ax.set_yscale("log")
    ax.set_ylabel("parameters (millions, log scale)")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.legend()
    _save(fig, path)


def latency_chart(rows, path, machine):
    """Grouped bars: Keras CPU latency vs LiteRT latency per model and mode.

    Args:
        rows: list of (model name, {label: milliseconds}) pairs, e.g.
            ("residual_unet", {"Keras": 120.0, "LiteRT fp32": 80.0, "LiteRT int8": 40.0}).
        path: PNG file to write.
        machine: the machine line stamped on the figure.
    """
    labels = sorted({k for _, d in rows for k in d}, key=lambda k: (k != "Keras", k))
    fig, ax = _figure("Latency per inference, batch 1: Keras vs LiteRT (XNNPACK)", machine)
    x = np.arange(len(rows))
    width = 0.8 / max(len(labels), 1)
    for i, label in enumerate(labels):
        values = [d.get(label, np.nan) for _, d in rows]
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("milliseconds (log scale)")
    ax.set_xticks(x, [name for name, _ in rows], rotation=30, ha="right")
    ax.legend()
    _save(fig, path)
