"""Benchmarks behind `python tools/benchmark.py SECTION`.

Each section module (`data`, `models`, `inference`, `export`) exposes
`run(quick: bool = False) -> str`: it measures, prints progress, and returns a Markdown
section (tables with the figures) that `tools/benchmark.py all` collects into
docs/benchmarks.md. Comparisons are ratios measured in the same run; times are medians.
"""
import os
import platform
import time

SECTIONS = ("data", "models", "inference", "export")
# Sections run only by name, not by `all` (docs/benchmarks.md holds the `all` report).
EXTRA_SECTIONS = ("lesions", "scale", "gpu")
#: Sections run by name that keep their own "## " section in the report; `all` leaves them as they are.
REPORT_SECTIONS = {"gpu": "## GPU"}


def machine_line():
    """One line naming CPU, core count and TensorFlow version, stamped on every table."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorflow as tf

    return f"{cpu}, {os.cpu_count()} cores, TensorFlow {tf.__version__}"


def median_time(fn, repeats=5, warmup=1):
    """Median wall time of `fn()` in seconds over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def replace_section(text, heading, section):
    """`text` with its Markdown section under `heading` (up to the next "## ") replaced by `section`.

    The section is appended where `text` has none; `section=None` returns the current one
    (or None).
    """
    lines = text.splitlines(keepends=True)
    start = next((k for k, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    end = start if start is None else next((k for k in range(start + 1, len(lines)) if lines[k].startswith("## ")),
                                           len(lines))
    if section is None:
        return None if start is None else "".join(lines[start:end]).rstrip("\n")
    if start is None:
        return text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    rest = "".join(lines[end:])
    return "".join(lines[:start]) + section.rstrip("\n") + "\n" + ("\n" + rest if rest else "")


def markdown_table(header, rows):
    """Renders a Markdown table from a header list and row lists."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
