"""Benchmarks: python tools/benchmark.py data|models|inference|export|all [--quick].

`all` runs every section and writes docs/benchmarks.md.
"""
import importlib
import os
import sys

import _path  # noqa: F401
from absl import flags

from liverzoo import cli

cli.quiet_tensorflow()

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Smaller sizes and fewer repeats (a smoke run, not for the README).")
flags.DEFINE_string("output", "docs/benchmarks.md", "Where `all` writes the report.")


def main(argv):
    from liverzoo.benchmarks import SECTIONS, machine_line
    from liverzoo.errors import ConfigError

    if len(argv) != 2 or argv[1] not in SECTIONS + ("all",):
        raise ConfigError(f"usage: benchmark.py {{{'|'.join(SECTIONS + ('all',))}}} [--quick]")
    names = SECTIONS if argv[1] == "all" else (argv[1],)
    parts = []
    for name in names:
        module = importlib.import_module(f"liverzoo.benchmarks.{name}")
        parts.append(module.run(quick=FLAGS.quick))
        print(parts[-1], flush=True)
    if argv[1] == "all":
        text = "# liverzoo benchmarks\n\nMachine: " + machine_line() + "\n\n" + "\n\n".join(parts) + "\n"
        tmp = FLAGS.output + ".tmp"
        os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, FLAGS.output)
        print(f"wrote {FLAGS.output}", file=sys.stderr)


if __name__ == "__main__":
    cli.run(main)
