"""Fanning shards out through submitit (slurm | local | debug) and finalising configs when they are done.

A sweep runs in two steps, so that nothing starts before every config has been checked:
1. ``plan_config`` (one Hydra job per config): prepare data, check the config, load the checkpoint
   (weights_only) and every certified example, write plan.json, list the pending shards. Any error fails the
   Hydra run before a single shard runs or is submitted.
2. ``finish_sweep`` (after Hydra returns; ``FinalizeSweep`` collects the jobs' results through Hydra's
   callback API) hands the pending shards to the launcher:
   - slurm: job arrays (split to stay under MaxArraySize, with array parallelism), then a reducer job per
     config that depends on them (afterok);
   - local: pending shards of every config are pooled and run by ``launcher.workers`` processes of
     submitit's LocalExecutor, then reduced here;
   - debug: submitit's DebugExecutor, in this process, then reduced.
   It returns one outcome per config; ``audiocert certify`` exits non-zero when any config is not certified.
Shards already done (their counts file validates) are never submitted again, so rerunning a sweep resumes it.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from audiocert.prepare import ensure_dataset
from audiocert.provenance import atomic_write_json, check_safe_name, read_json
from audiocert.reducer import reduce_config
from audiocert.shards import (
    config_label,
    inventory,
    known_shards,
    make_plan,
    next_work,
    read_plan,
    run_shards,
    write_plan,
)
from audiocert.status import JOBS_FILE, failure_summary, format_status, process_start_time, wait_for_configs
from audiocert.tracking import ConfigRun, log_config_run, open_config_run

log = logging.getLogger(__name__)

FAILURE_DIR = "failures"


def config_dir_for(sweep_dir: Path, plan: Mapping[str, Any]) -> Path:
    return sweep_dir / f"{check_safe_name(plan['label'], 'label')}-{plan['config_hash'][:8]}"


def watch_parent(pid: int, start_time: float | None, poll_s: float = 1.0) -> None:
    """End this process when the process ``pid`` (the `audiocert certify` that started it) is gone.

    Local workers run under submitit's controller, which outlives its parent by design; without this, killing
    `audiocert certify` would leave workers computing for nobody. Atomic writes make stopping at any point safe.
    """
    def watch() -> None:
        while process_start_time(pid) == start_time and start_time is not None:
            time.sleep(poll_s)
        print(f"the audiocert process {pid} that started this worker is gone: stopping", flush=True)
        os._exit(3)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


class ShardWorker(submitit.helpers.Checkpointable):
    """A submitit job: run a list of (config_dir, shard) pairs, skipping those already done.

    Checkpointable: on preemption or timeout submitit requeues the same call; shards finished before are
    skipped (their files validate) and an interrupted shard restarts from its first sample, so nothing is
    counted twice. A shard that fails ``attempts`` times is recorded under failures/ with its log path and
    the worker moves on, so one bad shard does not hold up the others. ``parent``: (pid, start time) of a
    local `audiocert certify`; the worker stops when that process is gone.
    """

    def __call__(self, work: Sequence[tuple[str, int]], threads: int | None = None, attempts: int = 2,
                 progress: bool = False, parent: tuple[int, float | None] | None = None) -> dict:
        from tqdm import tqdm

        if parent is not None:
            watch_parent(*parent)
        failed = []
        for config_dir, index in tqdm(work, desc="shards", unit="shard", disable=not progress, dynamic_ncols=True):
            # Printed to the job's log: when it appears, submitit's signal handlers are in place.
            print(f"shard {index} of {config_dir}: started", flush=True)
            for attempt in range(1, attempts + 1):
                try:
                    run_shards([(config_dir, index)], threads=threads, progress=False,
                               on_example=functools.partial(print_example_progress, config_dir, index))
                    failure_path(config_dir, index).unlink(missing_ok=True)
                    break
                except Exception as error:  # record it and move on to the next shard
                    log.exception("shard %s of %s failed (attempt %d/%d)", index, config_dir, attempt, attempts)
                    if attempt == attempts:
                        record_failure(config_dir, index, error)
                        failed.append((config_dir, index, f"{error.__class__.__name__}: {error}"))
        if failed:
            raise RuntimeError(f"{len(failed)} shard(s) failed: " + "; ".join(
                f"shard {i} of {d}: {e}" for d, i, e in failed))
        return {"shards": len(work)}


def print_example_progress(config_dir: str, index: int, done: int, total: int) -> None:
    print(f"shard {index} of {config_dir}: {done}/{total} examples counted", flush=True)


def failure_path(config_dir: str | Path, index: int) -> Path:
    return Path(config_dir) / FAILURE_DIR / f"{index:05d}.json"


def record_failure(config_dir: str | Path, index: int, error: BaseException) -> None:
    log_path = None
    try:
        env = submitit.JobEnvironment()
        log_path, job_id = str(env.paths.stderr).replace("%j", env.job_id), env.job_id
    except RuntimeError:  # not inside a submitit job
        job_id = None
    try:
        atomic_write_json(failure_path(config_dir, index), {
            "shard": index, "error": f"{error.__class__.__name__}: {error}", "traceback": traceback.format_exc(),
            "log": log_path, "job_id": job_id, "time": time.time(),
        })
    except OSError as write_error:  # a full or read-only disk: the log and the exit status still tell
        log.error("shard %s of %s failed (%s) and its failure record could not be written either: %s",
                  index, config_dir, error, write_error)


def finalize_config(config_dir: str | Path, logger_cfg: Mapping[str, Any] | None, sweep_name: str,
                    run: ConfigRun | None = None) -> dict:
    """Reduce a config and log it to W&B; used in-process and as the dependent SLURM reducer job.

    ``run``: a W&B run already open (the local executor logs live progress into it); else one is opened.
    """
    summary = reduce_config(config_dir)
    if run is not None:
        run.log_results()
    elif logger_cfg is not None:
        log_config_run(Path(config_dir), dict(logger_cfg), sweep_name)
    return summary


# ----------------------------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------------------------
def slurm_max_array_size(default: int) -> int:
    """MaxArraySize of the cluster (scontrol show config), or ``default`` when it cannot be read."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    for line in out.splitlines():
        if line.strip().startswith("MaxArraySize"):
            try:
                return int(line.split("=", 1)[1])
            except ValueError:
                return default
    return default


def check_slurm_available() -> None:
    if shutil.which("sbatch") is None:
        raise RuntimeError(
            "launcher=slurm but `sbatch` is not on PATH: run on a SLURM login node, start the test cluster with "
            "`sudo bash slurm/cluster.sh start`, or use launcher=local"
        )
    try:
        probe = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeError(f"launcher=slurm but the cluster does not answer (sinfo: {error})") from None
    if probe.returncode != 0:
        raise RuntimeError(f"launcher=slurm but the cluster does not answer (sinfo: {probe.stderr.strip()})")


def slurm_executor(launcher: Mapping[str, Any], folder: Path, name: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {
        "name": name, "timeout_min": int(launcher["time_min"]), "cpus_per_task": int(launcher["cpus_per_task"]),
        "mem_gb": float(launcher["mem_gb"]), "slurm_array_parallelism": int(launcher["array_parallelism"]),
        "slurm_setup": list(launcher.get("setup") or []),
    }
    if launcher.get("partition"):
        params["slurm_partition"] = launcher["partition"]
    if launcher.get("account"):
        params["slurm_account"] = launcher["account"]
    if int(launcher.get("gpus_per_task") or 0):
        params["slurm_gpus_per_task"] = int(launcher["gpus_per_task"])
    if launcher.get("signal_delay_s"):
        params["slurm_signal_delay_s"] = int(launcher["signal_delay_s"])
    additional = dict(launcher.get("additional") or {})
    if additional:
        params["slurm_additional_parameters"] = additional
    executor.update_parameters(**params)
    return executor


def queued_slurm_tasks(*names: str) -> set[str]:
    """Ids of the queued or running SLURM jobs with these names, array tasks one by one ('123_4')."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", ",".join(names), "-o", "%i"], capture_output=True, text=True,
                         timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"squeue failed, cannot tell which shards are already queued: {out.stderr.strip()}")
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def submit_slurm(cfg: DictConfig, config_dir: Path, plan: Mapping[str, Any], pending: list[int]) -> dict:
    """Submit the config's pending shards as job arrays and a reducer job that waits for them (afterok).

    Shards of an earlier submission that are still queued or running are not submitted again: rerunning a
    sweep while it runs adds only what is missing, and a new reducer waits for the new arrays and for those
    old tasks one by one (the old reducer is cancelled).
    """
    launcher = cfg.launcher
    check_slurm_available()
    folder = Path(cfg.sweep.dir) / "logs" / "slurm"
    name = f"ac-{plan['config_hash'][:8]}"
    reducer_name = f"ac-reduce-{plan['config_hash'][:8]}"
    previous = read_json(config_dir / JOBS_FILE) if (config_dir / JOBS_FILE).is_file() else {}
    previous = previous if previous.get("executor") == "slurm" else {}
    live = queued_slurm_tasks(name, reducer_name) if previous else set()
    in_flight = {int(i): job for i, job in previous.get("shards", {}).items() if job in live and int(i) in pending}
    old_reducer_live = previous.get("reducer") in live
    pending = [i for i in pending if i not in in_flight]
    if in_flight:
        log.info("%s: %d shard(s) still queued or running from an earlier submission; not submitted again",
                 plan["label"], len(in_flight))
    if not pending and old_reducer_live:
        log.info("%s: nothing new to submit; reducer job %s is still waiting", plan["label"], previous["reducer"])
        return previous
    executor = slurm_executor(launcher, folder, name)
    per_job = int(launcher.shards_per_job)
    groups = [[(str(config_dir), i) for i in pending[k : k + per_job]] for k in range(0, len(pending), per_job)]
    limit = min(int(launcher.max_array_size), slurm_max_array_size(int(launcher.max_array_size)))
    jobs = []
    for start in range(0, len(groups), limit):
        chunk = groups[start : start + limit]
        jobs += executor.map_array(ShardWorker(), chunk, [launcher.get("threads")] * len(chunk),
                                   [int(launcher.attempts)] * len(chunk))
    array_ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
    # Old arrays may hold a failed task (why this shard is resubmitted): wait for their live tasks one by one.
    depends_on = array_ids + sorted(set(in_flight.values()))
    # It waits only for the old arrays; the new one waits for all of them. Never cancel ourselves: the job
    # that plans the next round submits it from inside SLURM.
    if old_reducer_live and previous["reducer"] != os.environ.get("SLURM_JOB_ID"):
        subprocess.run(["scancel", str(previous["reducer"])], capture_output=True, timeout=30)
    # The reducer needs no GPU and little CPU: it must not queue behind the shards for a GPU node.
    reducer = slurm_executor({**launcher, "gpus_per_task": 0, "cpus_per_task": 1}, folder, reducer_name)
    dependency = {"dependency": "afterok:" + ":".join(depends_on), "kill-on-invalid-dep": "yes"} if depends_on else {}
    reducer.update_parameters(slurm_additional_parameters={**dict(launcher.get("additional") or {}), **dependency},
                              timeout_min=30)
    reduce_job = reducer.submit(advance_config, str(config_dir), OmegaConf.to_container(cfg, resolve=True))
    shards = {str(i): job for i, job in in_flight.items()}
    shards.update({str(i): str(job.job_id) for group, job in zip(groups, jobs, strict=True) for _, i in group})
    logs = {job: path for job, path in previous.get("logs", {}).items() if job in in_flight.values()}
    logs.update({str(job.job_id): str(job.paths.stderr) for job in jobs})
    logs[str(reduce_job.job_id)] = str(reduce_job.paths.stderr)  # it plans the next round or reduces: its errors
    record = {"executor": "slurm", "arrays": sorted({job.split("_")[0] for job in shards.values()}),
              "reducer": str(reduce_job.job_id), "shards": shards,
              "logs": logs, "submitted_at": time.time()}
    atomic_write_json(config_dir / JOBS_FILE, record)
    log.info("%s: %d shard(s) in array job(s) %s; reducer job %s (afterok: %s)", plan["label"], len(pending),
             ",".join(array_ids) or "-", reduce_job.job_id, ",".join(depends_on) or "-")
    return record


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

    def submit(self, work: list[tuple[str, int]]) -> list[Any]:
        raise NotImplementedError

    def wait(self, jobs: list[Any]) -> None:
        raise NotImplementedError

    def next_work(self) -> list[tuple[str, int]]:
        """The shards every config needs now (missing ones, else its next round); a config that cannot go on
        (damaged round file, a full disk) is set aside with its error, and the others go on."""
        work = []
        self.work_rounds = set()
        for entry in self.entries:
            config_dir = entry["config_dir"]
            if config_dir in self.errors:
                continue
            try:
                plan = read_plan(config_dir)
                indices = set(next_work(config_dir, plan))
                work += [(config_dir, i) for i in sorted(indices)]
                self.work_rounds |= {s.round for s in known_shards(config_dir, plan) if s.index in indices}
            except Exception as error:
                log.error("%s: cannot plan its next round: %s", config_dir, error)
                self.errors[config_dir] = f"{error}"
        return work

    def finish(self) -> list[dict[str, Any]]:
        attempted: set[tuple[str, int]] = set()
        while work := [w for w in self.next_work() if w not in attempted]:
            attempted.update(work)  # a shard that failed all its attempts is not retried in this run
            self.wait(self.submit(work))
        return [self.finalize(entry) for entry in self.entries]

    def finalize(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        if entry["config_dir"] in self.errors:
            error = self.errors[entry["config_dir"]]
            return {"config_dir": entry["config_dir"], "label": entry["label"], "error": error}
        return finalize_entry(entry)

    def record_jobs(self, record: dict[str, Any]) -> None:
        for entry in self.entries:
            atomic_write_json(Path(entry["config_dir"]) / JOBS_FILE, record)


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
        self.runs: dict[str, ConfigRun | None] = {}
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
                          "logs": {str(j.job_id): str(j.paths.stderr) for j in jobs}, "submitted_at": time.time()})
        return jobs

    def wait(self, jobs: list[Any]) -> None:
        low, high = min(self.work_rounds, default=0), max(self.work_rounds, default=0)
        label = "" if high == 0 else f" (round {high})" if low == high else f" (rounds {low}-{high})"
        try:
            wait_for_shards(self.work, jobs, self.runs, progress=self.progress, round_label=label)
        except BaseException:  # interrupted or failed while waiting: leave no worker behind
            for job in jobs:
                job.cancel(check=False)
            raise

    def finish(self) -> list[dict[str, Any]]:
        self.runs = {e["config_dir"]: open_config_run(Path(e["config_dir"]), e["logger"], e["sweep_name"])
                     for e in self.entries}
        try:
            return super().finish()
        finally:
            for run in self.runs.values():
                if run is not None:
                    run.finish()

    def finalize(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        if entry["config_dir"] in self.errors:
            return super().finalize(entry)
        return finalize_entry(entry, self.runs.get(entry["config_dir"]))


class SlurmLauncher(Launcher):
    """Job arrays per round, and per config a dependent job (afterok) that plans the next round and submits it
    with another such job, or reduces the config when it is settled. This process only submits; with
    ``launcher.wait`` it then follows the configs until they are reduced or their jobs are gone."""

    name = "slurm"

    def finish(self) -> list[dict[str, Any]]:
        results = []
        for entry in self.entries:
            config_dir = Path(entry["config_dir"])
            outcome = {"config_dir": str(config_dir), "label": entry["label"]}
            try:
                pending = next_work(config_dir, read_plan(config_dir))
                if pending:
                    submit_slurm(OmegaConf.create(entry["config"]), config_dir, read_plan(config_dir), pending)
                    results.append(outcome | {"submitted": True})
                    continue
            except Exception as error:
                log.error("%s: submission failed: %s", config_dir, error)
                results.append(outcome | {"error": f"{error}"})
                continue
            if (config_dir / "certificates.tsv").is_file():
                results.append(outcome | {"summary": read_json(config_dir / "summary.json")})
            else:
                results.append(finalize_entry(entry))
        if self.launcher.get("wait", False):
            self.wait([Path(r["config_dir"]) for r in results if r.get("submitted")])
            for result in results:
                if result.pop("submitted", False):
                    config_dir = Path(result["config_dir"])
                    if (config_dir / "certificates.tsv").is_file():
                        result["summary"] = read_json(config_dir / "summary.json")
                    else:
                        result["error"] = "not reduced: " + (failure_summary(config_dir) or "see `audiocert status`")
        return results

    def wait(self, jobs: list[Any]) -> None:
        if jobs:
            wait_for_configs(jobs)
            print(format_status(self.entries[0]["sweep_dir"]))


LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (DebugLauncher, LocalLauncher, SlurmLauncher)}


def ended_without_result(previous_jobs: Mapping[str, Any], pending: Sequence[int], live: set[str]) -> list[int]:
    """The pending shards that the last submission (jobs.json) already ran in a job that is no longer queued."""
    submitted = previous_jobs.get("shards", {}) if previous_jobs.get("executor") == "slurm" else {}
    return [i for i in pending if str(i) in submitted and submitted[str(i)] not in live]


def advance_config(config_dir: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The dependent SLURM job of a round: submit the config's next round (with another such job after it),
    or reduce and log the config when every point is settled."""
    plan = read_plan(config_dir)
    pending = next_work(config_dir, plan)
    if pending:
        previous = read_json(Path(config_dir) / JOBS_FILE) if (Path(config_dir) / JOBS_FILE).is_file() else {}
        live = queued_slurm_tasks(f"ac-{plan['config_hash'][:8]}") if previous.get("shards") else set()
        if ended := ended_without_result(previous, pending, live):
            # This job runs only after its shards' tasks exited 0 (afterok): submitting them again would loop.
            raise RuntimeError(
                f"shard(s) {ended} ran in SLURM job(s) that ended without a valid result, so they are not submitted "
                f"again. {inventory(config_dir, plan).problems(Path(config_dir))}\nLogs: "
                f"{Path(str(config['sweep']['dir'])) / 'logs' / 'slurm'}. Fix the cause, then rerun the sweep's "
                "`audiocert certify` command")
        submit_slurm(OmegaConf.create(dict(config)), Path(config_dir), plan, pending)
        return {"submitted": len(pending)}
    return finalize_config(config_dir, config["logger"], str(config["sweep"]["name"]))


def wait_for_shards(work: Sequence[tuple[str, int]], jobs: list[Any], runs: Mapping[str, ConfigRun | None],
                    progress: bool = True, round_label: str = "") -> None:
    """Wait for the local jobs running ``work``: a progress bar over its shards done (files that validate) with
    samples/s, and each config's W&B run gets its progress as shards land."""
    from tqdm import tqdm

    plans = {d: read_plan(d) for d in sorted({d for d, _ in work})}
    wanted = {(d, i) for d, i in work}
    started = time.time()
    with tqdm(total=len(wanted), desc=f"shards done{round_label}", disable=not progress, dynamic_ncols=True) as bar:
        while True:
            finished = all(job.done() for job in jobs)
            records = [r for d, p in plans.items() for i, r in inventory(d, p).records.items() if (d, i) in wanted]
            fresh = sum(r["samples"] for r in records if r["finished_at"] >= started)  # this run's, not resumed
            bar.set_postfix(samples_per_s=f"{fresh / max(time.time() - started, 1e-9):.0f}")
            bar.update(len(records) - bar.n)
            for run in runs.values():
                if run is not None:
                    run.log_progress()
            if finished:
                break
            time.sleep(1.0)
    for job in jobs:
        try:
            error = job.exception()
        except Exception as unreadable:  # no result file: killed, or its disk is full
            error = unreadable
        if error is not None:
            log.error("local job %s failed (%s); its log: %s", job.job_id, str(error).strip().splitlines()[-1:],
                      job.paths.stderr)



def finalize_entry(entry: Mapping[str, Any], run: ConfigRun | None = None) -> dict[str, Any]:
    """Reduce one config and log it; any failure becomes this config's outcome, never another config's."""
    config_dir = Path(entry["config_dir"])
    try:
        summary = finalize_config(config_dir, entry["logger"], entry["sweep_name"], run)
        return {"config_dir": str(config_dir), "label": entry["label"], "summary": summary}
    except Exception as error:  # an incomplete sweep, a full disk, a damaged file: named, and the others go on
        log.error("%s", error)
        return {"config_dir": str(config_dir), "label": entry["label"], "error": f"{error}"}


def plan_config(cfg: DictConfig) -> dict[str, Any]:
    """One Hydra job: prepare data, check and plan the config, list its pending shards. Runs nothing.

    Everything that could stop the work (dataset, speakers, checkpoint, audio, values, an absent cluster)
    fails here, before ``finish_sweep`` starts or submits anything.
    """
    kind = cfg.launcher.name
    if kind not in ("slurm", "local", "debug"):
        raise ValueError(f"launcher.name={kind!r}: choose slurm, local or debug")
    if kind == "slurm":
        check_slurm_available()
    ensure_dataset(cfg.dataset)
    sweep_dir = Path(cfg.sweep.dir)
    plan = make_plan(cfg)
    config_dir = config_dir_for(sweep_dir, plan)
    plan = write_plan(plan, config_dir)
    found = inventory(config_dir, plan)
    pending = found.missing
    log.info("%s -> %s: %d of %d shard(s) to run", config_label(cfg), config_dir, len(pending), len(found.shards))
    return {"config_dir": str(config_dir), "label": plan["label"], "pending": pending, "kind": kind,
            "launcher": OmegaConf.to_container(cfg.launcher, resolve=True), "sweep_dir": str(sweep_dir),
            "logger": OmegaConf.to_container(cfg.logger, resolve=True), "sweep_name": str(cfg.sweep.name),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def finish_sweep(entries: Sequence[Mapping[str, Any]], progress: bool = True) -> list[dict[str, Any]]:
    """Run, submit or reduce the planned configs; one outcome per config: 'summary', 'submitted' or 'error'."""
    unique = list({e["config_dir"]: e for e in entries}.values())  # the same config twice in a sweep runs once
    if not unique:
        return []
    kinds = {e["kind"] for e in unique}
    if len(kinds) != 1:
        raise ValueError(f"one sweep, one launcher: got {sorted(kinds)}")
    return LAUNCHERS[kinds.pop()](unique, progress=progress).finish()


def report_outcomes(results: Sequence[Mapping[str, Any]], sweep_dir: str | Path) -> bool:
    """Print one line per config and, for those not certified, what failed and where the logs are.

    True when every config is certified (or, without launcher.wait, submitted)."""
    import sys

    ok = True
    for result in results:
        if "summary" in result:
            s = result["summary"]
            print(f"certified {s['label']}: smoothed accuracy {s['smoothed_accuracy']:.3f}, "
                  f"abstain {s['abstain_fraction']:.3f} -> {result['config_dir']}")
        elif result.get("submitted"):
            print(f"submitted {result['label']} -> {result['config_dir']}")
        else:
            ok = False
            details = failure_summary(Path(result["config_dir"]))
            print(f"FAILED {result['label']} ({result['config_dir']}): {result.get('error', 'not certified')}"
                  + (f"\n{details}" if details else ""), file=sys.stderr)
    if any(r.get("submitted") for r in results):
        print(f"submitted {sum(bool(r.get('submitted')) for r in results)} config(s); follow them with "
              f"`audiocert status {sweep_dir}`")
    elif results and not ok:
        print(format_status(sweep_dir), file=sys.stderr)
    return ok


class FinalizeSweep(Callback):
    """Hydra callback: collects each job's planned config (its return value) and, when the run or multirun
    ends, writes them to ``record`` (a JSON list) for ``finish_sweep``.

    The work itself runs after Hydra returns (see ``audiocert.cli``): Hydra turns exceptions raised inside
    callbacks into warnings, and a failed sweep must make the command fail.
    """

    def __init__(self, record: str | None = None) -> None:
        self.record = record
        self.planned: list[dict[str, Any]] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED and isinstance(job_return.return_value, dict):
            self.planned.append(job_return.return_value)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.write()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.write()

    def write(self) -> None:
        if self.record:
            atomic_write_json(Path(self.record), self.planned)

