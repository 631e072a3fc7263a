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
import os

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
flags.DEFINE_string("target_spacing", None, "Resample to this spacing first, 'x,y,z' in mm (empty entry keeps an axis; "
                    "smoothed before an axis shrinks). With --inplane_size=0 and x = y, a run on the "
                    "shards records x and predict draws new CT at it.")
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


def main(argv):
    from liverzoo.data import convert
    from liverzoo.errors import ConfigError

    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])}")
    for name in ("input_dir", "output_dir", "preset"):
        if not getattr(FLAGS, name):
            raise ConfigError(f"--{name} is required")
    convert.convert_folder(
        FLAGS.input_dir, FLAGS.output_dir, preset=FLAGS.preset, num_shards=FLAGS.num_shards,
        val_fraction=FLAGS.val_fraction, seed=FLAGS.seed, compression=FLAGS.compression,
        inplane_size=FLAGS.inplane_size, target_spacing=FLAGS.target_spacing, skip_bad=FLAGS.skip_bad,
        num_workers=FLAGS.num_workers, num_workers_given=FLAGS["num_workers"].present, runner=FLAGS.runner,
        beam_options=FLAGS.beam_options, beam_staging_dir=FLAGS.beam_staging_dir)


if __name__ == "__main__":
    cli.run(main)
