"""The shard worker: one submitit job (a local worker, or one SLURM array task) running its shards, the watch on
the `audiocert` command that started a local one, and the records of shards that failed.

submitit pickles ``ShardWorker`` by this module's path, so a task imports this module (and what it needs) only.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import submitit

from audiocert.progress import progress
from audiocert.provenance import atomic_write_json
from audiocert.shards import ConfigWork, set_threads
from audiocert.status import failure_line, process_start_time

log = logging.getLogger(__name__)

FAILURE_DIR = "failures"


def watch_parent(pid: int, start_time: float | None, poll_s: float = 1.0) -> Callable[[], None]:
    """End this process when the process ``pid`` (the `audiocert certify` that started it) is gone: a thread
    looks every ``poll_s`` seconds, and the returned check looks at once (the worker calls it before each shard,
    so an orphan never starts another one, however short the shards are).

    Local workers run under submitit's controller, which outlives its parent by design; without this, killing
    `audiocert certify` would leave workers computing for nobody. Atomic writes make stopping at any point safe.
    """
    def check() -> None:
        if start_time is None or process_start_time(pid) != start_time:
            print(f"the audiocert process {pid} that started this worker is gone: stopping", flush=True)
            os._exit(3)

    def watch() -> None:
        while True:
            check()
            time.sleep(poll_s)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
    return check


class ShardWorker(submitit.helpers.Checkpointable):
    """A submitit job (a local worker, or one SLURM array task): run a list of (config_dir, shard) pairs in one
    process, skipping those already done; each config's plan, rounds and context are loaded once.

    Checkpointable: on preemption or timeout submitit requeues the same call; shards finished before are
    skipped (their files validate) and an interrupted shard restarts from its first sample, so nothing is
    counted twice. A shard that fails ``attempts`` times is recorded under failures/ with its log path and
    the worker moves on, so one bad shard does not hold up the others. ``parent``: (pid, start time) of a
    local `audiocert certify`; the worker stops when that process is gone.
    """

    def __call__(self, work: Sequence[tuple[str, int]], threads: int | None = None, attempts: int = 2,
                 show_progress: bool = False, parent: tuple[int, float | None] | None = None) -> dict:
        parent_check = watch_parent(*parent) if parent is not None else (lambda: None)
        gc.freeze()  # what the imports made is permanent: collections no longer walk torch's 300k objects
        started = time.monotonic()
        set_threads(threads)
        configs: dict[str, ConfigWork] = {}
        failed = []
        print(f"task of {len(work)} shard(s) started on {socket.gethostname()}", flush=True)
        for config_dir, index in progress(work, desc="shards", unit="shard", disable=not show_progress):
            parent_check()
            # Printed to the job's log: when it appears, submitit's signal handlers are in place.
            print(f"shard {index} of {config_dir}: started", flush=True)
            for attempt in range(1, attempts + 1):
                try:
                    if config_dir not in configs:
                        configs[config_dir] = ConfigWork(config_dir)
                    configs[config_dir].run(index, on_example=functools.partial(print_example_progress, config_dir,
                                                                                index))
                    clear_failure(config_dir, index)
                    break
                except Exception as error:  # record it and move on to the next shard
                    configs.pop(config_dir, None)  # read the plan again on the next attempt
                    log.exception("shard %s of %s failed (attempt %d/%d)", index, config_dir, attempt, attempts)
                    if attempt == attempts:
                        record_failure(config_dir, index, error)
                        failed.append((config_dir, index, f"{error.__class__.__name__}: {error}"))
        print(f"task done: {len(work)} shard(s), {len(failed)} failed, {time.monotonic() - started:.1f} s", flush=True)
        if failed:
            raise RuntimeError(f"{len(failed)} shard(s) failed: " + "; ".join(
                f"shard {i} of {d}: {e}" for d, i, e in failed))
        return {"shards": len(work)}


def print_example_progress(config_dir: str, index: int, done: int, total: int) -> None:
    print(f"shard {index} of {config_dir}: {done}/{total} examples counted", flush=True)


def failure_path(config_dir: str | Path, index: int) -> Path:
    return Path(config_dir) / FAILURE_DIR / f"{index:05d}.json"


def clear_failure(config_dir: str | Path, index: int) -> None:
    try:
        failure_path(config_dir, index).unlink(missing_ok=True)
    except OSError:  # a read-only directory: the stale record is superseded by the valid shard anyway
        pass


def record_failure(config_dir: str | Path, index: int, error: BaseException) -> None:
    """Record why a shard failed under failures/ and, always, as one marked line in the job's log: when the disk
    is full the record cannot be written, and the line is then where `certify` and `status` find the cause."""
    log_path = None
    try:
        env = submitit.JobEnvironment()
        log_path, job_id = str(env.paths.stdout).replace("%j", env.job_id), env.job_id
    except (RuntimeError, KeyError):  # not inside a submitit job (or the debug executor's, which has no folder)
        job_id = None
    failure = {"shard": index, "config_dir": str(config_dir), "error": f"{error.__class__.__name__}: {error}",
               "log": log_path, "job_id": job_id, "time": time.time()}
    print(failure_line(failure), flush=True)
    print(failure_line(failure), file=sys.stderr, flush=True)
    try:
        atomic_write_json(failure_path(config_dir, index), {**failure, "traceback": traceback.format_exc()})
    except OSError as write_error:  # a full or read-only disk: the log line and the exit status still tell
        log.error("shard %s of %s failed (%s) and its failure record could not be written either: %s",
                  index, config_dir, error, write_error)
