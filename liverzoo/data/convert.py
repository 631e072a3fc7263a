"""`tools/make_tfrecords.py`'s work: a folder of labelled CT cases to sharded TFRecords.

Cases are converted by a pool of processes or, with `runner`, by an Apache Beam pipeline;
the files are byte-identical either way (`liverzoo.data.tfrecord`, `beam_pipeline`).
"""
import functools
import logging
import os
import sys

from liverzoo.errors import ConfigError


def parse_target_spacing(text):
    """'x,y,z' in mm (an empty entry keeps that axis) -> tuple, or None for empty text."""
    if not text:
        return None
    try:
        values = [float(p) if p.strip() else None for p in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or any(v is not None and v <= 0 for v in values):
        raise ConfigError(f"--target_spacing={text}: expected three positive numbers 'x,y,z' (empty keeps an axis)")
    return tuple(values)


class Progress:
    """A one-line progress bar over cases on a terminal; one line per case in a log."""

    def __init__(self, stream=sys.stderr, width=30):
        self.stream, self.width = stream, width
        self.tty = stream.isatty()

    def __call__(self, index, total, case_id):
        done = int(self.width * index / max(total, 1))
        line = f"[{'#' * done}{'.' * (self.width - done)}] {index + 1}/{total} {case_id}"
        self.stream.write("\r" + line[:120].ljust(120) if self.tty else line + "\n")
        self.stream.flush()

    def close(self):
        if self.tty:
            self.stream.write("\n")


def _check(preset, num_shards, val_fraction, num_workers, inplane_size, runner, beam_options, beam_staging_dir,
           num_workers_given):
    from liverzoo.data import beam_pipeline, preprocess
    from liverzoo.quiet import silenced_stderr

    preprocess.get_preset(preset)
    if num_shards < 1:
        raise ConfigError(f"--num_shards={num_shards}: must be at least 1")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"--val_fraction={val_fraction}: must be in [0, 1)")
    if num_workers < 1:
        raise ConfigError(f"--num_workers={num_workers}: must be at least 1")
    if inplane_size is not None and inplane_size < 0:
        raise ConfigError(f"--inplane_size={inplane_size}: must be 0 (keep) or a positive size")
    if not runner:
        if beam_options or beam_staging_dir:
            raise ConfigError("--beam_options and --beam_staging_dir need --runner (e.g. --runner=DirectRunner)")
        return
    if num_workers_given:
        raise ConfigError("--num_workers does not apply with --runner: set Beam's parallelism in --beam_options "
                          "(e.g. --beam_options=\"--direct_num_workers=2 --direct_running_mode=multi_processing\")")
    # Importing Beam logs notices about optional Google Cloud clients; the runner's INFO lines too.
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    try:
        with silenced_stderr():
            beam_pipeline.make_pipeline(runner, beam_options)
    except ConfigError as e:
        raise ConfigError(f"--runner={runner}: {e}") from None


def convert_folder(input_dir, output_dir, *, preset, num_shards=4, val_fraction=0.2, seed=0, compression="GZIP",
                   inplane_size=None, target_spacing=None, skip_bad=False, num_workers=1, num_workers_given=False,
                   runner=None, beam_options="", beam_staging_dir=None, log=print):
    """Checks every option, then converts the cases of `input_dir` into `output_dir`.

    Args:
        input_dir: LiTS names (volume-N / segmentation-N) or the Decathlon layout.
        output_dir: where shards and manifest.json go (nothing is left there on error).
        preset, num_shards, val_fraction, seed, inplane_size, skip_bad: see
            `liverzoo.data.tfrecord.write_dataset`.
        compression: "GZIP" or "none".
        target_spacing: 'x,y,z' text or a tuple (None: the preset's).
        num_workers: processes converting cases at once.
        num_workers_given: whether the user set `num_workers` (refused with `runner`).
        runner, beam_options, beam_staging_dir: convert on Apache Beam (`beam_pipeline`).
        log: where the summary lines go.

    Returns:
        The manifest dict.
    """
    from liverzoo.data import beam_pipeline, io, tfrecord

    _check(preset, num_shards, val_fraction, num_workers, inplane_size, runner, beam_options, beam_staging_dir,
           num_workers_given)
    if isinstance(target_spacing, str):
        target_spacing = parse_target_spacing(target_spacing)
    # Cheap checks first: a wrong folder fails before any conversion starts.
    cases = io.find_cases(input_dir)
    created = not os.path.isdir(output_dir)
    io.check_output_dir(output_dir)
    if runner:
        write = functools.partial(beam_pipeline.write_dataset, runner=runner, beam_options=beam_options,
                                  staging_dir=beam_staging_dir)
    else:
        write = functools.partial(tfrecord.write_dataset, num_workers=num_workers)
    progress = Progress()
    try:
        manifest = write(cases, output_dir, preset=preset, num_shards=num_shards, val_fraction=val_fraction,
                         seed=seed, compression=None if compression == "none" else "GZIP",
                         inplane_size=inplane_size, target_spacing=target_spacing, skip_bad=skip_bad,
                         progress=progress)
    except BaseException:
        if created and os.path.isdir(output_dir) and not os.listdir(output_dir):
            os.rmdir(output_dir)  # a failed run leaves no empty folder it made
        raise
    finally:
        progress.close()
    splits = manifest["splits"]
    slices = sum(c["num_slices"] for c in manifest["cases"])
    log(f"wrote {len(splits['train'])} train + {len(splits['val'])} val cases ({slices} slices) in "
        f"{len(manifest['shards'])} shards to {output_dir} (preset {preset})")
    if manifest["skipped"]:
        log(f"skipped {len(manifest['skipped'])} bad case(s):")
        for item in manifest["skipped"]:
            log(f"  {item['case_id']}: {item['error']}")
    return manifest
