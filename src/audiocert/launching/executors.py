"""Running a sweep's shards through submitit here: the ``Launcher`` base (rounds until every config is settled,
then reduce), ``DebugLauncher`` (in this process) and ``LocalLauncher`` (worker processes, waited for with live
progress), and finalising a config (reduce; W&B is the monitor's: ``audiocert.monitor``)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from audiocert.kinds import kind_of
from audiocert.launching.worker import ShardWorker
from audiocert.monitor import MonitorProcess
from audiocert.progress import progress
from audiocert.provenance import CorruptFileError, atomic_write_json, read_json
from audiocert.shards import ShardInventory, inventory, known_shards, next_work, read_plan
from audiocert.status import JOBS_FILE, process_start_time
from audiocert.tracking import log_config_run

log = logging.getLogger(__name__)


def finalize_config(config_dir: str | Path, logger_cfg: Mapping[str, Any] | None, sweep_name: str,
                    found: ShardInventory | None = None) -> dict:
    """Reduce a config, then (``logger_cfg`` given: `audiocert reduce --wandb`) log it to W&B, resuming its run.

    The launchers pass no logger: their monitor logs the results it finds, and a SLURM reducer job (a compute
    node) never talks to W&B. ``found``: the config's inventory with merged counts, when the caller just took it.
    """
    summary = kind_of(read_plan(config_dir)).reduce(Path(config_dir), found)
    if logger_cfg is not None:
        log_config_run(Path(config_dir), dict(logger_cfg), sweep_name)
    return summary


def start_monitor(entries: Sequence[Mapping[str, Any]]) -> MonitorProcess:
    """The sweep's W&B monitor in a child process (nothing when logging is disabled)."""
    logger = dict(entries[0].get("logger") or {"mode": "disabled"})
    return MonitorProcess([Path(e["config_dir"]) for e in entries], logger, Path(entries[0]["sweep_dir"]),
                          float(logger.get("live_interval_s") or 20.0)).start()


def read_jobs(config_dir: Path) -> dict[str, Any]:
    try:
        record = read_json(config_dir / JOBS_FILE) if (config_dir / JOBS_FILE).is_file() else {}
    except CorruptFileError:
        record = {}
    return record if isinstance(record, dict) else {}


class Launcher:
    """How a sweep's shards run: ``submit`` work, ``wait`` for it, ``finish`` the configs.

    ``finish`` runs rounds until every config is settled (one round for Cohen's CERTIFY; a sequential config
    asks for more samples for its unsettled points after each round), then reduces each config. Everything
    it needs comes from the entries ``plan_config`` returned; nothing is kept between sweeps.
    """

    name = ""

    def __init__(self, entries: Sequence[Mapping[str, Any]], progress: bool = True) -> None:
        self.entries = list(entries)
        self.launcher = dict(self.entries[0]["launcher"])
        self.progress = progress
        self.errors: dict[str, str] = {}  # config_dir -> why it cannot go on
        self.work_rounds: set[int] = set()  # the rounds (0 = the plan's) that next_work's shards belong to
        self.inventories: dict[str, ShardInventory | None] = {}  # merged counts of configs with nothing left to run

    def submit(self, work: list[tuple[str, int]]) -> list[Any]:
        raise NotImplementedError

    def wait(self, jobs: list[Any]) -> None:
        raise NotImplementedError

    def next_work(self) -> list[tuple[str, int]]:
        """The shards every config needs now (missing ones, else its next round); a config that cannot go on
        (damaged round file, a full disk) is set aside with its error, and the others go on. Each config's
        shard files are read once here; a config with nothing left keeps its merged inventory for the reducer."""
        work = []
        self.work_rounds = set()
        for entry in self.entries:
            config_dir = entry["config_dir"]
            if config_dir in self.errors:
                continue
            try:
                plan = read_plan(config_dir)
                found = inventory(config_dir, plan, merge=True)
                indices = set(next_work(config_dir, plan, found))
                self.inventories[config_dir] = None if indices else found
                work += [(config_dir, i) for i in sorted(indices)]
                self.work_rounds |= {s.round for s in known_shards(config_dir, plan) if s.index in indices}
            except Exception as error:
                log.error("%s: cannot plan its next round: %s", config_dir, error)
                self.errors[config_dir] = f"{error}"
        return work

    def finish(self) -> list[dict[str, Any]]:
        attempted: set[tuple[str, int]] = set()
        monitor = start_monitor(self.entries)  # W&B in its own process: never in the way of a shard or a result
        try:
            while work := [w for w in self.next_work() if w not in attempted]:
                attempted.update(work)  # a shard that failed all its attempts is not retried in this run
                self.wait(self.submit(work))
            results = [self.finalize(entry) for entry in self.entries]
        finally:
            self.mark_ended()
            monitor.stop()
        return results

    def finalize(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        if entry["config_dir"] in self.errors:
            error = self.errors[entry["config_dir"]]
            return {"config_dir": entry["config_dir"], "label": entry["label"], "error": error}
        return finalize_entry(entry, found=self.inventories.get(entry["config_dir"]))

    def record_jobs(self, record: dict[str, Any]) -> None:
        for entry in self.entries:
            atomic_write_json(Path(entry["config_dir"]) / JOBS_FILE, record)

    def mark_ended(self) -> None:
        """Say in jobs.json that this command's workers are done, so `status` (and the status printed after a
        FAILED run by this very process) never calls them running."""
        for entry in self.entries:
            record = read_jobs(Path(entry["config_dir"]))
            if record.get("parent_pid") == os.getpid() and "ended_at" not in record:
                try:
                    atomic_write_json(Path(entry["config_dir"]) / JOBS_FILE, {**record, "ended_at": time.time()})
                except OSError as error:  # a full disk: status then judges by the process, which is ending
                    log.warning("could not mark %s ended: %s", entry["config_dir"], error)


class DebugLauncher(Launcher):
    """submitit's DebugExecutor: every shard in this process, in order (for debugging with pdb)."""

    name = "debug"

    def submit(self, work: list[tuple[str, int]]) -> list[Any]:
        self.record_jobs({"executor": "debug", "host": socket.gethostname(), "parent_pid": os.getpid(),
                          "parent_start": process_start_time(os.getpid()), "submitted_at": time.time()})
        executor = submitit.DebugExecutor(folder=Path(self.entries[0]["sweep_dir"]) / "logs" / "debug")
        return [executor.submit(ShardWorker(), work, self.launcher.get("threads"), int(self.launcher["attempts"]),
                                self.progress)]

    def wait(self, jobs: list[Any]) -> None:
        for job in jobs:
            try:
                job.result()
            except Exception as error:  # recorded under failures/; the reducer names what is missing
                log.error("%s", error)


class LocalLauncher(Launcher):
    """submitit's LocalExecutor: ``launcher.workers`` processes on this machine, each config's W&B run fed
    with live progress. If this process is interrupted or killed, its workers stop too (``watch_parent``);
    shards already written stay valid and a rerun resumes from them."""

    name = "local"

    def __init__(self, entries: Sequence[Mapping[str, Any]], progress: bool = True) -> None:
        super().__init__(entries, progress)
        self.work: list[tuple[str, int]] = []

    def submit(self, work: list[tuple[str, int]]) -> list[Any]:
        self.work = work
        workers = max(1, min(int(self.launcher["workers"]), len(work)))
        executor = submitit.LocalExecutor(folder=Path(self.entries[0]["sweep_dir"]) / "logs" / "local")
        executor.update_parameters(timeout_min=int(self.launcher["time_min"]))
        parent = (os.getpid(), process_start_time(os.getpid()))
        # Round-robin so every worker gets a mix of configs and shards finish across the sweep evenly.
        jobs = [executor.submit(ShardWorker(), work[w::workers], self.launcher.get("threads"),
                                int(self.launcher["attempts"]), False, parent) for w in range(workers)]
        self.record_jobs({"executor": "local", "jobs": [str(j.job_id) for j in jobs], "host": socket.gethostname(),
                          "parent_pid": parent[0], "parent_start": parent[1],
                          "logs": {str(j.job_id): str(j.paths.stdout) for j in jobs}, "submitted_at": time.time()})
        return jobs

    def wait(self, jobs: list[Any]) -> None:
        low, high = min(self.work_rounds, default=0), max(self.work_rounds, default=0)
        label = "" if high == 0 else f" (round {high})" if low == high else f" (rounds {low}-{high})"
        try:
            wait_for_shards(self.work, jobs, show_progress=self.progress, round_label=label)
        except BaseException:  # interrupted or failed while waiting: leave no worker behind
            for job in jobs:
                job.cancel(check=False)
            raise


MAX_POLL_S = 15.0


def poll_interval(look_s: float) -> float:
    """Seconds until the next look at the shard files: ten times what the last look took (a sweep of many files
    is not read back to back), between 1 s and MAX_POLL_S. The cap matters: a command suspended during a look
    (Ctrl-Z, SIGSTOP, a starved machine) measured a look of minutes and then slept ten times that after it went on."""
    return min(MAX_POLL_S, max(1.0, 10 * look_s))


def wait_for_shards(work: Sequence[tuple[str, int]], jobs: list[Any], show_progress: bool = True,
                    round_label: str = "") -> None:
    """Wait for the local jobs running ``work``: a progress bar over its shards done (files that validate) with
    the rate of the kind's unit (noise samples/s for certification; the W&B runs get theirs from the monitor).
    Files already validated are not read again (see shards.validated_summary), and the poll slows down when a look
    at the files takes long."""
    plans = {d: read_plan(d) for d in sorted({d for d, _ in work})}
    wanted = {(d, i) for d, i in work}
    # What a shard's "samples" counts is the kind's (noise samples; attacked point x budget pairs; ...)
    units = {kind_of(plan).progress_unit for plan in plans.values()}
    rate_name = f"{units.pop() if len(units) == 1 else 'samples'}_per_s"
    started = time.time()
    with progress(total=len(wanted), desc=f"shards done{round_label}", unit="shard", disable=not show_progress) as bar:
        while True:
            finished = all(job.done() for job in jobs)
            look = time.monotonic()
            records = [r for d, p in plans.items() for i, r in inventory(d, p).records.items() if (d, i) in wanted]
            fresh = sum(r["samples"] for r in records if r["finished_at"] >= started)  # this run's, not resumed
            bar.set_postfix({rate_name: f"{fresh / max(time.time() - started, 1e-9):.3g}"})
            bar.update(len(records) - bar.n)
            if finished:
                break
            time.sleep(poll_interval(time.monotonic() - look))
    for job in jobs:
        try:
            error = job.exception()
        except Exception as unreadable:  # no result file: killed, or its disk is full
            error = unreadable
        if error is not None:
            log.error("local job %s failed (%s); its log: %s", job.job_id, str(error).strip().splitlines()[-1:],
                      job.paths.stdout)


def finalize_entry(entry: Mapping[str, Any], found: ShardInventory | None = None) -> dict[str, Any]:
    """Reduce one config (its monitor logs it); any failure becomes this config's outcome, never another's."""
    config_dir = Path(entry["config_dir"])
    try:
        summary = finalize_config(config_dir, None, entry["sweep_name"], found)
        return {"config_dir": str(config_dir), "label": entry["label"], "summary": summary}
    except Exception as error:  # an incomplete sweep, a full disk, a damaged file: named, and the others go on
        log.error("%s", error)
        return {"config_dir": str(config_dir), "label": entry["label"], "error": f"{error}"}
