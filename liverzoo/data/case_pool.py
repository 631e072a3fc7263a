"""Per-case work on several processes, handed back in the cases' own order.

`write_dataset` preprocesses every case with the same pure function, then writes shards in
a fixed order. `CasePool.map` runs that function in a pool of worker processes and yields
the results in input order, whatever order the workers finish in, so the shards and the
manifest do not depend on the worker count. Workers pickle their result into a file in a
staging folder and send back only its path: a preprocessed CT is hundreds of megabytes,
too much to queue in a pipe, and the parent reads back one at a time. The pool uses the
'spawn' start method because TensorFlow's threads do not survive `fork`.
"""
import concurrent.futures
import multiprocessing
import numbers
import os
import pickle
import shutil
import tempfile

from liverzoo.errors import ConfigError, DataError


def check_num_workers(num_workers):
    """Returns `num_workers` as an int; ConfigError unless it is a positive integer."""
    if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 1:
        raise ConfigError(f"num_workers must be a positive integer, got {num_workers!r}")
    return int(num_workers)


def run_case(fn, args):
    """`fn(*args)`, or the `DataError` it raised (a bad case is a result; the caller may skip it)."""
    try:
        return fn(*args)
    except DataError as e:
        return e


def _run_staged(fn, args, path):
    """Worker side: `fn(*args)` pickled to `path`; a DataError is the result, not a failure.

    `path + ".started"` marks the job as in flight, to name it if the process dies.
    """
    open(path + ".started", "wb").close()
    result = run_case(fn, args)
    with open(path, "wb") as f:
        pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


class CasePool:
    """Worker processes that run per-case functions; `map` yields results in case order.

    A `DataError` raised by the function is yielded as the result (the caller decides
    whether to skip the case); any other failure in a worker, including a worker process
    that dies, raises `DataError` naming the case. With `num_workers=1` the functions run
    in this process and other exceptions propagate unchanged. Leaving the `with` block
    stops the workers and removes the staging folder; one pool serves several `map`s, so
    the workers import TensorFlow once.

    Args:
        num_workers: processes; 1 runs in this process.
        staging_dir: folder where the hidden staging folder is made (the output folder:
            same file system, and never a small /tmp).

    Example:
        >>> with CasePool(4, out) as pool:  # doctest: +SKIP
        ...     for case_id, result in pool.map(prepare, [(c.case_id, (c,)) for c in cases]):
        ...         ...
    """

    def __init__(self, num_workers=1, staging_dir="."):
        self.num_workers = check_num_workers(num_workers)
        self.staging_dir, self._staging, self._pool, self._count = staging_dir, None, None, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
        return False

    def map(self, fn, jobs, progress=None):
        """Yields `(name, fn(*args))` for each `(name, args)` of `jobs`, in that order.

        Args:
            fn: a module-level function (workers import it by name).
            jobs: list of `(name, args)`; `args` must pickle.
            progress: optional `callable(index, total, name)` called before each job
                (with workers: before waiting for its result).
        """
        jobs = list(jobs)
        if self.num_workers == 1:
            for k, (name, args) in enumerate(jobs):
                if progress:
                    progress(k, len(jobs), name)
                yield name, run_case(fn, args)
            return
        if self._pool is None:
            self._staging = tempfile.mkdtemp(prefix=".staging-", dir=self.staging_dir)
            self._pool = concurrent.futures.ProcessPoolExecutor(self.num_workers,
                                                                mp_context=multiprocessing.get_context("spawn"))
        paths = [self._next_path() for _ in jobs]
        futures = [self._pool.submit(_run_staged, fn, args, path) for (_, args), path in zip(jobs, paths)]
        for k, ((name, _), future) in enumerate(zip(jobs, futures)):
            if progress:
                progress(k, len(jobs), name)
            try:
                future.result()
            except concurrent.futures.process.BrokenProcessPool:
                raise DataError(_died(fn, jobs, paths, self.num_workers)) from None
            except Exception as e:  # noqa: BLE001 - any worker failure becomes one line naming the case
                raise DataError(f"{name}: conversion failed in a worker process "
                                f"({type(e).__name__}: {e})") from None
            with open(paths[k], "rb") as f:
                result = pickle.load(f)
            os.remove(paths[k])
            os.remove(paths[k] + ".started")
            yield name, result

    def _next_path(self):
        self._count += 1
        return os.path.join(self._staging, f"{self._count:07d}.pickle")


def _died(fn, jobs, paths, num_workers):
    """The error line for a dead worker, naming the case that kills a process alone."""
    suspects = [k for k, p in enumerate(paths) if os.path.exists(p + ".started") and not os.path.exists(p)]
    if len(suspects) > 1:
        # Several cases were in flight: rerun each alone in a fresh process to find the one.
        for k in suspects:
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                try:
                    pool.submit(_run_staged, fn, jobs[k][1], paths[k]).result()
                except concurrent.futures.process.BrokenProcessPool:
                    suspects = [k]
                    break
                except Exception:  # noqa: BLE001, S110 - not a crash; keep looking
                    pass
    if not suspects:
        return ("the worker processes died before converting any case (a script that starts workers "
                "needs its main code under `if __name__ == '__main__':`)")
    names = ", ".join(jobs[k][0] for k in suspects)
    if len(suspects) == 1:
        return f"{names}: the worker process converting this case died (crash, out of memory or killed)"
    return (f"{names}: a worker process died while converting these cases and none dies alone "
            f"(out of memory with --num_workers={num_workers}? try fewer)")
