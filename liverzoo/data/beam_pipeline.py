"""`write_dataset` with the per-case work on an Apache Beam pipeline (DirectRunner, Dataflow, ...).

The local writer (`tfrecord.write_dataset`) hands each case to a pool's `map` and writes
shards and the manifest from the results in case order. `BeamPool` is such a pool: its
`map` runs one Beam pipeline, `Create(jobs) | Reshuffle | Map(stage)`, whose step calls the
same per-case function the process pool calls (`case_pool.run_case`) and pickles the result
into a staging file, one per case. When the pipeline has finished, `map` reads the files
back in case order, so the ordered writer, and hence every shard byte and the manifest, is
the local writer's own. A `ds_nnunet` preset runs two pipelines (intensity statistics,
then conversion), as the local writer makes two passes.

Where the work runs: on `DirectRunner` in this process (or in local processes with
`--direct_num_workers=N --direct_running_mode=multi_processing`); here that is Beam's
in-process Python runner, which Beam 2.77's DirectRunner otherwise reaches only after
failing to download its Prism binary. On a remote runner
(Dataflow, Flink, Spark) the workers must read the input cases at the same paths and write
the staging folder where this process reads it back: pass `staging_dir` on shared storage
(e.g. `gs://bucket/tmp`, through Beam's file systems) and install liverzoo on the workers
(e.g. `--setup_file`). Shards and the manifest are always written by this process.

`apache-beam` is an optional extra (`pip install liverzoo[beam]`); this module imports it
only when a pipeline runs.
"""
import os
import pickle
import shlex
import uuid

from liverzoo.data import case_pool
from liverzoo.errors import ConfigError, DataError

#: Beam 2.77's DirectRunner first tries Prism, a Go binary it downloads at run time (offline: a
#: failed download, then a fallback); the in-process Python runner it falls back to is used
#: directly. `--runner=PrismRunner` still asks for Prism.
_RUNNER_ALIASES = {"DirectRunner": "FnApiRunner"}
#: The refusal when `apache_beam` does not import.
BEAM_MISSING = "Apache Beam is not installed; pip install liverzoo[beam]"


def require_beam():
    """Imports and returns `apache_beam`; ConfigError naming the extra if it is missing."""
    try:
        import apache_beam
    except ImportError:
        raise ConfigError(BEAM_MISSING) from None
    return apache_beam


def make_pipeline(runner, options=()):
    """A `beam.Pipeline` on `runner` with `options` (list or one shell-quoted string).

    Raises:
        ConfigError: Beam missing, an unknown runner, or options the runner's validation
            refuses (e.g. Dataflow without project, region or temp_location).
    """
    beam = require_beam()
    from apache_beam.options.pipeline_options import PipelineOptions

    options = shlex.split(options) if isinstance(options, str) else list(options)
    try:
        return beam.Pipeline(runner=_RUNNER_ALIASES.get(runner, runner), options=PipelineOptions(options))
    except ValueError as e:
        raise ConfigError(f"Beam refuses runner {runner}: " + "; ".join(str(e).split("\n")).strip("; ")) from None


class _Failure:
    """A staged result standing for a non-DataError failure; the reader raises it as DataError."""

    def __init__(self, message):
        self.message = message


def _stage(job, fn):
    """Pipeline step: runs `fn` on one case and pickles the result to the job's staging path."""
    from apache_beam.io.filesystems import FileSystems

    path, name, args = job
    try:
        result = case_pool.run_case(fn, args)
    except Exception as e:  # noqa: BLE001 - one line naming the case, as the process pool does
        result = _Failure(f"{name}: conversion failed in a Beam worker ({type(e).__name__}: {e})")
    with FileSystems.create(path) as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


class BeamPool:
    """A `case_pool.CasePool` stand-in whose `map` runs a Beam pipeline; results in case order.

    Args:
        runner: Beam runner name (`DirectRunner`, `DataflowRunner`, `FlinkRunner`, ...).
        options: Beam pipeline flags, a list or one shell-quoted string, passed unchanged
            to `PipelineOptions` (e.g. `"--direct_num_workers=2
            --direct_running_mode=multi_processing"`, or Dataflow's project, region and
            temp_location).
        staging_dir: folder under which a unique staging folder is made and removed at the
            end; a remote runner needs shared storage here (e.g. `gs://...`).

    Raises:
        ConfigError: Beam missing, or a runner or options Beam refuses.

    Example:
        >>> with BeamPool("DirectRunner", staging_dir=out) as pool:  # doctest: +SKIP
        ...     for case_id, result in pool.map(prepare, [(c.case_id, (c,)) for c in cases]):
        ...         ...
    """

    def __init__(self, runner="DirectRunner", options=(), staging_dir="."):
        self.runner, self.staging_dir, self._staging = runner, os.fspath(staging_dir), None
        self.options = options
        make_pipeline(runner, options)  # a bad runner or option fails here, before any work

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._staging is not None:
            from apache_beam.io.filesystems import FileSystems

            try:
                FileSystems.delete([self._staging])
            except Exception:  # noqa: BLE001, S110 - cleanup must not hide the real error
                pass
        return False

    def map(self, fn, jobs, progress=None):
        """Yields `(name, fn(*args))` for each `(name, args)` of `jobs`, in that order.

        The whole pipeline runs first; `progress(index, total, name)` is then called as each
        result is read back. A `DataError` raised by `fn` is yielded as the result; any other
        failure raises DataError naming the case.
        """
        jobs = list(jobs)
        paths = self._run(fn, jobs)
        from apache_beam.io.filesystems import FileSystems

        for k, ((name, _), path) in enumerate(zip(jobs, paths)):
            if progress:
                progress(k, len(jobs), name)
            with FileSystems.open(path) as f:
                result = pickle.load(f)
            FileSystems.delete([path])
            if isinstance(result, _Failure):
                raise DataError(result.message)
            yield name, result

    def _run(self, fn, jobs):
        """Runs the pipeline over `jobs`; returns their staging paths, in job order."""
        beam = require_beam()
        from apache_beam.io.filesystems import FileSystems

        if self._staging is None:
            self._staging = FileSystems.join(self.staging_dir, f".beam-staging-{uuid.uuid4().hex}")
            FileSystems.mkdirs(self._staging)
        prefix = FileSystems.join(self._staging, f"{uuid.uuid4().hex[:8]}-")
        paths = [f"{prefix}{k:07d}.pickle" for k in range(len(jobs))]
        pipeline = make_pipeline(self.runner, self.options)
        _ = (pipeline
             | "Cases" >> beam.Create([(path, name, args) for path, (name, args) in zip(paths, jobs)])
             | "Spread" >> beam.Reshuffle()  # one case per work item on runners that would fuse them
             | "Convert" >> beam.Map(_stage, fn))
        try:
            pipeline.run().wait_until_finish()
        except ImportError as e:  # a runner whose dependencies are not installed
            raise ConfigError(f"Beam runner {self.runner} is not usable here: {e}") from None
        return paths


def write_dataset(cases, output_dir, *, runner="DirectRunner", beam_options=(), staging_dir=None, **kwargs):
    """`tfrecord.write_dataset` with the per-case work on a Beam pipeline; the same files.

    Args:
        cases: as for `tfrecord.write_dataset`; each must pickle (e.g. `io.CaseSource`).
        output_dir: destination folder.
        runner: Beam runner name.
        beam_options: pipeline flags for `PipelineOptions` (list or one string).
        staging_dir: where per-case results are staged (default: `output_dir`); shared
            storage for a remote runner.
        **kwargs: the other `tfrecord.write_dataset` arguments (preset, num_shards, seed,
            ...); `num_workers` does not apply (Beam's options set the parallelism).

    Returns:
        The manifest dict, identical to the local writer's for the same arguments.

    Example:
        >>> options = "--direct_num_workers=2 --direct_running_mode=multi_processing"
        >>> write_dataset(io.find_cases("LiTS"), "tfrecords/lits", preset="ds_nnunet",
        ...               runner="DirectRunner", beam_options=options)  # doctest: +SKIP
    """
    from liverzoo.data import tfrecord

    if "num_workers" in kwargs:
        raise ConfigError("num_workers does not apply to a Beam pipeline; set the runner's parallelism "
                          "in beam_options (e.g. --direct_num_workers=2 --direct_running_mode=multi_processing)")
    pool = BeamPool(runner, beam_options, output_dir if staging_dir is None else staging_dir)
    return tfrecord.write_dataset(cases, output_dir, pool=pool, **kwargs)
