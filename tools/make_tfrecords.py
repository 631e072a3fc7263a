"""Preprocesses a folder of labelled CT cases into sharded TFRecords plus manifest.json.

    python tools/make_tfrecords.py --input_dir=LiTS/train --output_dir=tfrecords/lits \
        --preset=ds_nnunet --num_shards=16 --val_fraction=0.2 --seed=0

--input_dir holds LiTS names (volume-N.nii[.gz] + segmentation-N.nii[.gz]) or the Decathlon
layout (imagesTr/ + labelsTr/). Cases are preprocessed by --num_workers processes (default:
every core); the shards and manifest are byte-identical for any worker count. With
--runner (e.g. DirectRunner, DataflowRunner) the cases are converted by an Apache Beam pipeline
instead (`pip install liverzoo[beam]`; --beam_options go to its PipelineOptions) and the files
are the same again. Bad input ends in one `error: ...` line naming the file and
nothing is left in --output_dir; --skip_bad continues past bad cases and lists them.
"""
import functools
import logging
import os
import sys

import _path  # noqa: F401
from absl import flags

from liverzoo import cli
from liverzoo.data.preprocess import PRESETS

cli.quiet_tensorflow()

FLAGS = flags.FLAGS
flags.DEFINE_string("input_dir", None, "Folder of cases: LiTS names or Decathlon imagesTr/ + labelsTr/.")
flags.DEFINE_string("output_dir", None, "Where shards and manifest.json are written.")
flags.DEFINE_string("preset", None, f"Preprocessing preset (model family): {', '.join(PRESETS)}; "
                    "a zoo model's is `liverzoo.models.SPECS[name].preset`.")
flags.DEFINE_integer("num_shards", 4, "Shards per split (fewer if a split has fewer cases).")
flags.DEFINE_float("val_fraction", 0.2, "Share of cases held out for validation (split by case).")
flags.DEFINE_integer("seed", 0, "Seed of the train/validation split.")
flags.DEFINE_enum("compression", "GZIP", ["GZIP", "none"], "Shard compression.")
flags.DEFINE_integer("inplane_size", None, "Override the preset's in-plane size (0: keep the slices as they are).")
flags.DEFINE_string("target_spacing", None, "Resample to this spacing first, 'x,y,z' in mm (empty entry keeps an axis).")
flags.DEFINE_bool("skip_bad", False, "Skip cases that cannot be read or fail checks, and list them at the end.")
flags.DEFINE_integer("num_workers", os.cpu_count() or 1,
                     "Processes preprocessing cases at once (default: the machine's cores); same files for any count.")
flags.DEFINE_string("runner", None, "Convert on Apache Beam with this runner (DirectRunner, DataflowRunner, "
                    "FlinkRunner, ...) instead of --num_workers processes; needs `pip install liverzoo[beam]`.")
flags.DEFINE_string("beam_options", "", "With --runner: pipeline flags for Beam's PipelineOptions, one string, e.g. "
                    "'--direct_num_workers=2 --direct_running_mode=multi_processing' or Dataflow's "
                    "'--project=... --region=... --temp_location=gs://...'.")
flags.DEFINE_string("beam_staging_dir", None, "With --runner: where per-case results are staged (default: "
                    "--output_dir); a remote runner needs storage its workers share with this process, e.g. gs://.")


def _target_spacing(text):
    from liverzoo.errors import ConfigError

    if not text:
        return None
    parts = text.split(",")
    try:
        values = [float(p) if p.strip() else None for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v is not None and v <= 0 for v in values):
        raise ConfigError(f"--target_spacing={text}: expected three positive numbers 'x,y,z' (empty keeps an axis)")
    return tuple(values)


class _Progress:
    """A one-line progress bar on a terminal; one line per case in a log."""

    def __init__(self, stream=sys.stderr, width=30):
        self.stream, self.width = stream, width
        self.tty = stream.isatty()

    def __call__(self, index, total, case_id):
        done = int(self.width * index / max(total, 1))
        line = f"[{'#' * done}{'.' * (self.width - done)}] {index + 1}/{total} {case_id}"
        if self.tty:
            self.stream.write("\r" + line[:120].ljust(120))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def main(argv):
    from liverzoo.data import beam_pipeline, io, preprocess
    from liverzoo.errors import ConfigError
    from liverzoo.quiet import silenced_stderr

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("input_dir", "output_dir", "preset"):
        if not getattr(FLAGS, name):
            raise ConfigError(f"--{name} is required")
    preprocess.get_preset(FLAGS.preset)
    if FLAGS.num_shards < 1:
        raise ConfigError(f"--num_shards={FLAGS.num_shards}: must be at least 1")
    if not 0 <= FLAGS.val_fraction < 1:
        raise ConfigError(f"--val_fraction={FLAGS.val_fraction}: must be in [0, 1)")
    if FLAGS.num_workers < 1:
        raise ConfigError(f"--num_workers={FLAGS.num_workers}: must be at least 1")
    if FLAGS.runner:
        if FLAGS["num_workers"].present:
            raise ConfigError("--num_workers does not apply with --runner: set Beam's parallelism in --beam_options "
                              "(e.g. --beam_options=\"--direct_num_workers=2 --direct_running_mode=multi_processing\")")
        # Importing Beam logs notices about optional Google Cloud clients; the runner's INFO lines too.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        try:
            with silenced_stderr():
                beam_pipeline.make_pipeline(FLAGS.runner, FLAGS.beam_options)
        except ConfigError as e:
            raise ConfigError(f"--runner={FLAGS.runner}: {e}") from None
    elif FLAGS.beam_options or FLAGS.beam_staging_dir:
        raise ConfigError("--beam_options and --beam_staging_dir need --runner (e.g. --runner=DirectRunner)")
    if FLAGS.inplane_size is not None and FLAGS.inplane_size < 0:
        raise ConfigError(f"--inplane_size={FLAGS.inplane_size}: must be 0 (keep) or a positive size")
    target_spacing = _target_spacing(FLAGS.target_spacing)
    # Cheap checks first: a wrong folder fails before TensorFlow is imported.
    cases = io.find_cases(FLAGS.input_dir)
    io.check_output_dir(FLAGS.output_dir)

    from liverzoo.data import tfrecord

    if FLAGS.runner:
        write = functools.partial(beam_pipeline.write_dataset, runner=FLAGS.runner, beam_options=FLAGS.beam_options,
                                  staging_dir=FLAGS.beam_staging_dir)
    else:
        write = functools.partial(tfrecord.write_dataset, num_workers=FLAGS.num_workers)
    progress = _Progress()
    try:
        manifest = write(
            cases, FLAGS.output_dir, preset=FLAGS.preset, num_shards=FLAGS.num_shards,
            val_fraction=FLAGS.val_fraction, seed=FLAGS.seed,
            compression=None if FLAGS.compression == "none" else "GZIP",
            inplane_size=FLAGS.inplane_size, target_spacing=target_spacing,
            skip_bad=FLAGS.skip_bad, progress=progress)
    finally:
        progress.close()
    splits = manifest["splits"]
    slices = sum(c["num_slices"] for c in manifest["cases"])
    print(f"wrote {len(splits['train'])} train + {len(splits['val'])} val cases ({slices} slices) in "
          f"{len(manifest['shards'])} shards to {FLAGS.output_dir} (preset {FLAGS.preset})")
    if manifest["skipped"]:
        print(f"skipped {len(manifest['skipped'])} bad case(s):")
        for item in manifest["skipped"]:
            print(f"  {item['case_id']}: {item['error']}")


if __name__ == "__main__":
    cli.run(main)
