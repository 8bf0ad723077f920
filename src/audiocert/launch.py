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
import gc
import importlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from audiocert.devices import resolve_device
from audiocert.locks import ConfigBusyError, acquire, held, lock_key, locked, release
from audiocert.progress import progress
from audiocert.provenance import CorruptFileError, atomic_write_json, check_safe_name, read_json, seal
from audiocert.reducer import reduce_config
from audiocert.scheduling import (
    check_launcher_config,
    estimate_throughput,
    fixed_tasks,
    int_setting,
    is_transient,
    pack_tasks,
    parse_scontrol_config,
    submission_capacity,
)
from audiocert.shards import (
    KIND_MODULES,
    ConfigWork,
    ShardInventory,
    has_results,
    inventory,
    known_shards,
    make_plan,
    next_work,
    read_plan,
    set_threads,
    write_plan,
)
from audiocert.status import (
    DEFERRED_FILE,
    JOBS_FILE,
    failure_line,
    failure_summary,
    format_status,
    process_start_time,
    read_deferred,
    sweep_jobs_alive,
    wait_for_configs,
)
from audiocert.tracking import ConfigRun, log_config_run, open_config_run

log = logging.getLogger(__name__)

FAILURE_DIR = "failures"


def config_dir_for(sweep_dir: Path, plan: Mapping[str, Any]) -> Path:
    return sweep_dir / f"{check_safe_name(plan['label'], 'label')}-{plan['config_hash'][:8]}"


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


def finalize_config(config_dir: str | Path, logger_cfg: Mapping[str, Any] | None, sweep_name: str,
                    run: ConfigRun | None = None, found: ShardInventory | None = None) -> dict:
    """Reduce a config and log it to W&B; used in-process and as the dependent SLURM reducer job.

    ``run``: a W&B run already open (the local executor logs live progress into it); else one is opened.
    ``found``: the config's inventory with merged counts, when the caller just took it.
    """
    summary = reduce_config(config_dir, found)
    if run is not None:
        run.log_results()
    elif logger_cfg is not None:
        log_config_run(Path(config_dir), dict(logger_cfg), sweep_name)
    return summary


# ----------------------------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------------------------
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


@functools.cache
def slurm_site_config() -> dict[str, str]:
    """``scontrol show config`` of this cluster, parsed once per process ({} when it cannot be read)."""
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_scontrol_config(out)


class SlurmQueue:
    """One look at the queue (squeue): every job slurmctld holds, and the pending or running ones by name.

    Taken once per submission pass, not once per config: a sweep of many configs asks squeue twice, not 2N times.
    """

    def __init__(self) -> None:
        every = self._squeue(["-t", "all", "-o", "%i"])
        self.in_system = len(every)  # what MaxJobCount counts (finished jobs stay for MinJobAge)
        self.queued: dict[str, str] = {}  # job id ('123_4' for array tasks) -> name, pending or running
        self.user_queued = 0
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
        for line in self._squeue(["-o", "%i|%j|%u"]):
            job, name, owner = (line.split("|") + ["", ""])[:3]
            self.queued[job] = name
            self.user_queued += owner == user or not user

    @staticmethod
    def _squeue(args: list[str]) -> list[str]:
        out = subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"squeue failed, cannot tell which shards are already queued: {out.stderr.strip()}")
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]

    def live(self, *names: str) -> set[str]:
        """Ids of the queued or running jobs with these names, array tasks one by one ('123_4')."""
        return {job for job, name in self.queued.items() if name in names}


def queued_slurm_tasks(*names: str) -> set[str]:
    """Ids of the queued or running SLURM jobs with these names, array tasks one by one ('123_4')."""
    return SlurmQueue().live(*names)


class Capacity:
    """How many more jobs this submission pass may add under the site limits (None: no limit known)."""

    def __init__(self, launcher: Mapping[str, Any], queue: SlurmQueue) -> None:
        site = slurm_site_config()
        limits = [v for v in (int_setting(site, "MaxJobCount"), launcher.get("max_job_count")) if v]
        self.left = submission_capacity(min(limits) if limits else None, queue.in_system,
                                        launcher.get("max_submitted"), queue.user_queued)
        arrays = [v for v in (int_setting(site, "MaxArraySize"), launcher.get("max_array_size")) if v]
        # MaxArraySize N allows task ids 0 .. N - 1.
        self.max_array = min(arrays) if arrays else 1001

    def take(self, wanted: int) -> int:
        granted = wanted if self.left is None else max(0, min(wanted, self.left))
        if self.left is not None:
            self.left -= granted
        return granted


class SubmissionDeferred(RuntimeError):
    """sbatch refused for now (a busy controller, a site limit reached): the config waits for a later submission."""


def sbatch_retrying(submit: Callable[[], Any], launcher: Mapping[str, Any], what: str) -> Any:
    """Call ``submit`` (an sbatch through submitit); a transient refusal is retried with exponential back-off
    (``launcher.submit_retries`` times from ``launcher.submit_backoff_s``), then raises SubmissionDeferred; a
    permanent refusal is raised as it is (naming ``what``)."""
    retries, delay = int(launcher.get("submit_retries", 4)), float(launcher.get("submit_backoff_s", 5))
    for attempt in range(retries + 1):
        try:
            return submit()
        except (submitit.core.utils.FailedJobError, subprocess.CalledProcessError, OSError) as error:
            message = " ".join(str(error).split())
            if not is_transient(message):
                raise RuntimeError(f"sbatch refused {what}: {message}") from None
            if attempt == retries:
                raise SubmissionDeferred(f"sbatch refused {what} {retries + 1} time(s), for now: {message}") from None
            log.warning("sbatch refused %s for now (%s); retrying in %.0f s", what, message, delay)
            time.sleep(delay)
            delay *= 2


def task_groups(config_dir: Path, plan: Mapping[str, Any], pending: Sequence[int], launcher: Mapping[str, Any],
                max_tasks: int | None) -> tuple[list[list[tuple[str, int]]], str]:
    """The pending shards of a config packed into array tasks (see audiocert.scheduling), and how they were sized."""
    layout = known_shards(config_dir, plan)
    if launcher.get("shards_per_task"):
        positions = fixed_tasks(len(pending), int(launcher["shards_per_task"]))
        how = f"{launcher['shards_per_task']} shard(s) per task"
    else:
        finished = list(inventory(config_dir, plan).records.values())
        rate = estimate_throughput(finished, launcher.get("samples_per_s"), plan["quantities"]["device_type"])
        per_shard = float(launcher.get("per_shard_s", 0.5))
        costs = [layout[i].samples / rate.samples_per_s + per_shard for i in pending]
        budget = max(1.0, float(launcher.get("task_minutes", 20)) * 60 - float(launcher.get("startup_s", 10)))
        positions = pack_tasks(costs, budget, max_tasks)
        how = (f"tasks of ~{launcher.get('task_minutes', 20)} min at {rate.samples_per_s:,.0f} samples/s "
               f"({rate.source})")
    return [[(str(config_dir), pending[p]) for p in task] for task in positions], how


def read_jobs(config_dir: Path) -> dict[str, Any]:
    try:
        record = read_json(config_dir / JOBS_FILE) if (config_dir / JOBS_FILE).is_file() else {}
    except CorruptFileError:
        record = {}
    return record if isinstance(record, dict) else {}


def submit_slurm(cfg: DictConfig | Mapping[str, Any], config_dir: Path, plan: Mapping[str, Any], pending: list[int],
                 capacity: Capacity | None = None, queue: SlurmQueue | None = None,
                 max_tasks: int | None = None) -> dict:
    """Submit the config's pending shards as array tasks and a job that depends on them (afterok), within the
    site limits (``capacity``); shards that do not fit are left for that dependent job, which submits them.

    Shards of an earlier submission that are still queued or running are not submitted again: rerunning a
    sweep while it runs adds only what is missing, and a new dependent job waits for the new arrays and for
    those old tasks one by one (the old one is cancelled). jobs.json is rewritten as each array is accepted, so a
    submission cut off at any point is visible to `status` and to the next submission.
    Raises SubmissionDeferred when nothing could be submitted for now (the config then waits in deferred.json).
    """
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(dict(cfg))
    launcher = OmegaConf.to_container(cfg.launcher, resolve=True)
    check_slurm_available()
    queue = queue or SlurmQueue()
    capacity = capacity or Capacity(launcher, queue)
    folder = Path(cfg.sweep.dir) / "logs" / "slurm"
    name, reducer_name = job_names(plan)
    previous = read_jobs(config_dir)
    previous = previous if previous.get("executor") == "slurm" else {}
    live = queue.live(name, reducer_name) if previous else set()
    in_flight = {int(i): job for i, job in previous.get("shards", {}).items() if job in live and int(i) in pending}
    old_reducer_live = previous.get("reducer") in live
    pending = [i for i in pending if i not in in_flight]
    if in_flight:
        log.info("%s: %d shard(s) still queued or running from an earlier submission; not submitted again",
                 plan["label"], len(in_flight))
    if not pending and old_reducer_live:
        log.info("%s: nothing new to submit; dependent job %s is still waiting", plan["label"], previous["reducer"])
        return previous
    groups, how = task_groups(config_dir, plan, pending, launcher, max_tasks)
    room = capacity.take(len(groups) + 1)  # its tasks and the job that depends on them
    if groups and room < 2 or room < 1:
        capacity.take(-room)  # give back what was taken
        raise SubmissionDeferred(f"the site limits leave no room for {plan['label']} now (MaxJobCount / "
                                 "launcher.max_submitted / launcher.max_job_count)")
    if room - 1 < len(groups):
        log.info("%s: %d of %d task(s) fit under the site limits now; its dependent job submits the rest",
                 plan["label"], room - 1, len(groups))
        groups = groups[: room - 1]
    record: dict[str, Any] = {
        "executor": "slurm", "config": OmegaConf.to_container(cfg, resolve=True),
        "shards": {str(i): job for i, job in in_flight.items()},
        "logs": {job: path for job, path in previous.get("logs", {}).items() if job in in_flight.values()},
        "reducer": previous.get("reducer") if old_reducer_live else None, "submitted_at": time.time(),
        "tasks": {job: n for job, n in previous.get("tasks", {}).items() if job in in_flight.values()},
    }
    record["arrays"] = sorted({job.split("_")[0] for job in record["shards"].values()})

    def write_record() -> None:
        atomic_write_json(config_dir / JOBS_FILE, record)

    executor = slurm_executor(launcher, folder, name)
    array_ids = []
    for start in range(0, len(groups), capacity.max_array):
        chunk = groups[start : start + capacity.max_array]
        jobs = sbatch_retrying(lambda chunk=chunk: executor.map_array(
            ShardWorker(), chunk, [launcher.get("threads")] * len(chunk), [int(launcher["attempts"])] * len(chunk)),
            launcher, f"{len(chunk)} task(s) of {plan['label']}")
        array_ids.append(str(jobs[0].job_id).split("_")[0])
        for group, job in zip(chunk, jobs, strict=True):
            record["shards"].update({str(i): str(job.job_id) for _, i in group})
            record["tasks"][str(job.job_id)] = len(group)
        record["logs"].update({str(job.job_id): str(job.paths.stdout) for job in jobs})
        record["arrays"] = sorted({job.split("_")[0] for job in record["shards"].values()})
        write_record()  # each accepted array is on record before the next sbatch
    # Old arrays may hold a failed task (why this shard is resubmitted): wait for their live tasks one by one.
    depends_on = array_ids + sorted(set(in_flight.values()))
    # Never cancel ourselves: the job that plans the next round submits it from inside SLURM.
    if old_reducer_live and previous["reducer"] != os.environ.get("SLURM_JOB_ID"):
        subprocess.run(["scancel", str(previous["reducer"])], capture_output=True, timeout=30)
    # The dependent job needs no GPU and little CPU: it must not queue behind the shards for a GPU node.
    reducer = slurm_executor({**launcher, "gpus_per_task": 0, "cpus_per_task": 1}, folder, reducer_name)
    dependency = {"dependency": "afterok:" + ":".join(depends_on), "kill-on-invalid-dep": "yes"} if depends_on else {}
    reducer.update_parameters(slurm_additional_parameters={**dict(launcher.get("additional") or {}), **dependency},
                              timeout_min=30)
    reduce_job = sbatch_retrying(lambda: reducer.submit(advance_config, str(config_dir),
                                                        OmegaConf.to_container(cfg, resolve=True)),
                                 launcher, f"the dependent job of {plan['label']}")
    record["reducer"] = str(reduce_job.job_id)
    record["logs"][str(reduce_job.job_id)] = str(reduce_job.paths.stdout)  # it plans the next round or reduces
    record["submitted_at"] = time.time()
    write_record()
    record["new_tasks"] = len(groups)
    submitted = sum(len(g) for g in groups)
    log.info("%s: %d shard(s) in %d task(s) (%s), array job(s) %s; dependent job %s (afterok: %s)%s", plan["label"],
             submitted, len(groups), how, ",".join(array_ids) or "-", reduce_job.job_id, ",".join(depends_on) or "-",
             f"; {len(pending) - submitted} shard(s) wait for it" if submitted < len(pending) else "")
    return record


def job_names(plan: Mapping[str, Any]) -> tuple[str, str]:
    """SLURM job names of a config's shard tasks and of its dependent job."""
    return f"ac-{plan['config_hash'][:8]}", f"ac-reduce-{plan['config_hash'][:8]}"


# ----------------------------------------------------------------------------------------------------------
# Configs waiting for submission (site limits): deferred.json of the sweep
# ----------------------------------------------------------------------------------------------------------
def write_deferred(sweep_dir: Path, waiting: Mapping[str, Any]) -> None:
    atomic_write_json(Path(sweep_dir) / DEFERRED_FILE, seal({"configs": dict(waiting), "updated_at": time.time()}))


def submission_config(config_dir: Path, plan: Mapping[str, Any], given: Mapping[str, Any] | None,
                      waiting: Mapping[str, Any]) -> dict[str, Any]:
    """The config to submit a config's work with: the running command's (``given``), else the one it was last
    submitted or deferred with, else its plan's. Launcher settings are not part of the config hash, so a rerun
    with a corrected partition or account must be submitted with them, not with the plan's."""
    if given is not None:
        return dict(given)
    entry = waiting.get(os.path.abspath(config_dir))
    if isinstance(entry, dict) and isinstance(entry.get("config"), dict):
        return entry["config"]
    previous = read_jobs(config_dir).get("config")
    return previous if isinstance(previous, dict) else plan["config"]


def submit_configs(config_dirs: Sequence[Path], sweep_dir: Path,
                   configs: Mapping[str, Mapping[str, Any]] | None = None,
                   from_command: bool = False) -> dict[str, dict[str, Any]]:
    """Submit what each config needs now within the site limits: its missing shards (or its next round), or a
    reduction. One queue look and one capacity for all; configs that do not fit are recorded in deferred.json for
    a later pass (a dependent job, `certify --wait`, or a rerun). ``configs``: config_dir -> the resolved config
    to submit with (the running command's; see submission_config). ``from_command``: a user's command (it
    resubmits shards whose jobs ended without a result: the user reran it to retry them); from a dependent job it
    refuses them instead, since that job runs only after its tasks exited 0 and resubmitting would loop. Returns
    config_dir -> outcome ('submitted', 'deferred' or 'error', or 'ready' for a config that needed no job)."""
    outcomes: dict[str, dict[str, Any]] = {}
    configs = configs or {}
    with sweep_lock(sweep_dir):
        queue = SlurmQueue()
        waiting = read_deferred(sweep_dir)
        capacity: Capacity | None = None
        plans, chosen = {}, {}
        for config_dir in config_dirs:
            try:
                plans[config_dir] = read_plan(config_dir)
                chosen[config_dir] = submission_config(config_dir, plans[config_dir], configs.get(str(config_dir)),
                                                       waiting)
            except Exception as error:
                outcomes[str(config_dir)] = {"error": f"{error}"}
                plans.pop(config_dir, None)
        launcher = dict(chosen[next(iter(plans))]["launcher"]) if plans else {}
        capacity = Capacity(launcher, queue) if plans else None
        sweep_tasks = queue_tasks_of(plans.values(), queue)
        for config_dir, plan in plans.items():
            try:
                with config_lock(config_dir, wait=True, purpose="submitting"):
                    pending = next_work(config_dir, plan)
                    if not pending:
                        waiting.pop(os.path.abspath(config_dir), None)
                        outcomes[str(config_dir)] = {"ready": True}
                        continue
                    previous = read_jobs(config_dir)
                    name, _ = job_names(plan)
                    ended = [] if from_command else ended_without_result(previous, pending, queue.live(name))
                    if ended:
                        raise RuntimeError(
                            f"shard(s) {ended} ran in SLURM job(s) that ended without a valid result, so they are "
                            f"not submitted again. {inventory(config_dir, plan).problems(Path(config_dir))}\nLogs: "
                            f"{Path(str(plan['config']['sweep']['dir'])) / 'logs' / 'slurm'}. Fix the cause, then "
                            f"rerun the sweep's `audiocert {plan.get('kind', 'certify')}` command")
                    max_tasks = launcher.get("max_tasks")
                    remaining = len(plans) - list(plans).index(config_dir)
                    left = None if not max_tasks else max(1, (int(max_tasks) - sweep_tasks) // remaining)
                    record = submit_slurm(OmegaConf.create(chosen[config_dir]), config_dir, plan, pending, capacity,
                                          queue, left)
                    sweep_tasks += record.get("new_tasks", 0)
                    waiting.pop(os.path.abspath(config_dir), None)
                    outcomes[str(config_dir)] = {"submitted": True}
            except SubmissionDeferred as why:
                waiting[os.path.abspath(config_dir)] = {"why": str(why), "config": chosen[config_dir]}
                outcomes[str(config_dir)] = {"deferred": str(why)}
                log.warning("%s: waits for submission: %s", config_dir, why)
            except Exception as error:
                log.error("%s: submission failed: %s", config_dir, error)
                waiting.pop(os.path.abspath(config_dir), None)
                outcomes[str(config_dir)] = {"error": f"{error}"}
        write_deferred(sweep_dir, waiting)
    return outcomes


def queue_tasks_of(plans: Any, queue: SlurmQueue) -> int:
    """Shard tasks of these configs that are queued or running now."""
    names = {job_names(plan)[0] for plan in plans}
    return sum(1 for name in queue.queued.values() if name in names)


def submit_deferred(sweep_dir: Path) -> None:
    """Try again to submit the configs of this sweep that waited for room (from a dependent job or a waiting
    `certify`); never fails the caller."""
    waiting = read_deferred(sweep_dir)
    if not waiting:
        return
    try:
        submit_configs([Path(d) for d in waiting], sweep_dir)
    except Exception as error:  # the caller's own work is done; the configs stay deferred for the next try
        log.warning("could not submit the waiting configs of %s: %s", sweep_dir, error)


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
        try:
            while work := [w for w in self.next_work() if w not in attempted]:
                attempted.update(work)  # a shard that failed all its attempts is not retried in this run
                self.wait(self.submit(work))
            return [self.finalize(entry) for entry in self.entries]
        finally:
            self.mark_ended()

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
                          "logs": {str(j.job_id): str(j.paths.stdout) for j in jobs}, "submitted_at": time.time()})
        return jobs

    def wait(self, jobs: list[Any]) -> None:
        low, high = min(self.work_rounds, default=0), max(self.work_rounds, default=0)
        label = "" if high == 0 else f" (round {high})" if low == high else f" (rounds {low}-{high})"
        try:
            wait_for_shards(self.work, jobs, self.runs, show_progress=self.progress, round_label=label)
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
        return finalize_entry(entry, self.runs.get(entry["config_dir"]), self.inventories.get(entry["config_dir"]))


class SlurmLauncher(Launcher):
    """Array tasks per round, sized by duration and within the site limits, and per config a dependent job
    (afterok) that submits what is left (the rest of its shards, or its next round) with another such job, or
    reduces the config when it is settled. This process only submits; with ``launcher.wait`` it then follows
    the configs until they are reduced or their jobs are gone, submitting configs that waited for room."""

    name = "slurm"

    def finish(self) -> list[dict[str, Any]]:
        sweep_dir = Path(self.entries[0]["sweep_dir"])
        outcomes = submit_configs([Path(e["config_dir"]) for e in self.entries], sweep_dir,
                                  {e["config_dir"]: e["config"] for e in self.entries}, from_command=True)
        for entry in self.entries:  # submitted: from here on the configs' own dependent jobs take their locks
            release(entry["config_dir"])
        results = []
        for entry in self.entries:
            config_dir = Path(entry["config_dir"])
            outcome = {"config_dir": str(config_dir), "label": entry["label"]}
            done = outcomes.get(str(config_dir), {})
            if "error" in done:
                results.append(outcome | {"error": done["error"]})
            elif done.get("submitted") or "deferred" in done:
                results.append(outcome | {"submitted": True, **({"deferred": done["deferred"]} if "deferred" in done
                                                                 else {})})
            elif has_results(config_dir) and \
                    inventory(config_dir).complete:
                results.append(outcome | {"summary": read_json(config_dir / "summary.json")})
            else:
                results.append(finalize_entry(entry))
        if not self.launcher.get("wait", False) and any(r.get("deferred") for r in results) \
                and not sweep_jobs_alive(sweep_dir):
            for result in results:  # nothing of the sweep is queued, so no dependent job will submit them later
                if result.get("deferred"):
                    result.pop("submitted")
                    result["error"] = (f"not submitted: {result.pop('deferred')}, and no job of the sweep is queued to "
                                       "submit it later; rerun when the queue has room, or with "
                                       "launcher.wait=true (which submits as room frees up)")
        if self.launcher.get("wait", False):
            self.wait([Path(r["config_dir"]) for r in results if r.get("submitted")])
            for result in results:
                if result.pop("submitted", False):
                    result.pop("deferred", None)
                    config_dir = Path(result["config_dir"])
                    if has_results(config_dir):
                        result["summary"] = read_json(config_dir / "summary.json")
                    else:
                        result["error"] = "not reduced: " + (failure_summary(config_dir) or "see `audiocert status`")
        return results

    def wait(self, jobs: list[Any]) -> None:
        if jobs:
            sweep_dir = Path(self.entries[0]["sweep_dir"])
            wait_for_configs(jobs, on_poll=lambda: submit_deferred(sweep_dir), sweep_dir=sweep_dir)
            print(format_status(sweep_dir))


LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (DebugLauncher, LocalLauncher, SlurmLauncher)}


def ended_without_result(previous_jobs: Mapping[str, Any], pending: Sequence[int], live: set[str]) -> list[int]:
    """The pending shards that the last submission (jobs.json) already ran in a job that is no longer queued."""
    submitted = previous_jobs.get("shards", {}) if previous_jobs.get("executor") == "slurm" else {}
    return [i for i in pending if str(i) in submitted and submitted[str(i)] not in live]


def advance_config(config_dir: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The dependent SLURM job of a config: submit what it still needs (shards that did not fit under the site
    limits, or its next round; with another such job after them), or reduce and log it when every point is
    settled. Then it submits the sweep's configs that waited for room."""
    config_dir = Path(config_dir)
    sweep_dir = Path(str(config["sweep"]["dir"]))
    try:
        with config_lock(config_dir, wait=True, purpose="advancing"):
            plan = read_plan(config_dir)
            found = inventory(config_dir, plan, merge=True)
            pending = next_work(config_dir, plan, found)
            if not pending:
                return finalize_config(config_dir, config["logger"], str(config["sweep"]["name"]), found=found)
        outcome = submit_configs([config_dir], sweep_dir, {str(config_dir): dict(config)})[str(config_dir)]
        if "error" in outcome:
            raise RuntimeError(outcome["error"])
        return {"submitted": len(pending), **outcome}
    finally:
        submit_deferred(sweep_dir)


def wait_for_shards(work: Sequence[tuple[str, int]], jobs: list[Any], runs: Mapping[str, ConfigRun | None],
                    show_progress: bool = True, round_label: str = "") -> None:
    """Wait for the local jobs running ``work``: a progress bar over its shards done (files that validate) with
    samples/s, and each config's W&B run gets its progress as shards land. Files already validated are not read
    again (see shards.validated_summary), and the poll slows down when a look at the files takes long."""
    plans = {d: read_plan(d) for d in sorted({d for d, _ in work})}
    wanted = {(d, i) for d, i in work}
    started = time.time()
    with progress(total=len(wanted), desc=f"shards done{round_label}", unit="shard", disable=not show_progress) as bar:
        while True:
            finished = all(job.done() for job in jobs)
            look = time.monotonic()
            records = [r for d, p in plans.items() for i, r in inventory(d, p).records.items() if (d, i) in wanted]
            fresh = sum(r["samples"] for r in records if r["finished_at"] >= started)  # this run's, not resumed
            bar.set_postfix(samples_per_s=f"{fresh / max(time.time() - started, 1e-9):.0f}")
            bar.update(len(records) - bar.n)
            for run in runs.values():
                if run is not None:
                    run.log_progress()
            if finished:
                break
            time.sleep(max(1.0, 10 * (time.monotonic() - look)))
    for job in jobs:
        try:
            error = job.exception()
        except Exception as unreadable:  # no result file: killed, or its disk is full
            error = unreadable
        if error is not None:
            log.error("local job %s failed (%s); its log: %s", job.job_id, str(error).strip().splitlines()[-1:],
                      job.paths.stdout)


def finalize_entry(entry: Mapping[str, Any], run: ConfigRun | None = None,
                   found: ShardInventory | None = None) -> dict[str, Any]:
    """Reduce one config and log it; any failure becomes this config's outcome, never another config's."""
    config_dir = Path(entry["config_dir"])
    try:
        summary = finalize_config(config_dir, entry["logger"], entry["sweep_name"], run, found)
        return {"config_dir": str(config_dir), "label": entry["label"], "summary": summary}
    except Exception as error:  # an incomplete sweep, a full disk, a damaged file: named, and the others go on
        log.error("%s", error)
        return {"config_dir": str(config_dir), "label": entry["label"], "error": f"{error}"}


# The dataset settings that decide which utterances are test utterances and what a label means: certifying with
# other values than the model was trained with could certify it on its own training audio, or with wrong labels.
SPLIT_KEYS = ("subset", "speakers", "num_classes", "sample_rate", "crop_samples", "test_fraction", "split_seed",
              "resample")


def inherit_dataset(cfg: DictConfig, explicit: Sequence[str]) -> list[str]:
    """Take the dataset settings the checkpoint was trained with, except those set on the command line
    (``explicit``: dotted keys); an explicit value that would change the test split is refused, naming it.

    Returns what was inherited ('dataset.key=value'), for the log. ``root`` (where the data lives now) and
    ``generate`` are never inherited.
    """
    checkpoint = Path(cfg.checkpoint)
    if not checkpoint.is_file():
        return []  # make_plan names the missing checkpoint and how to train it
    trained = checkpoint_dataset(str(checkpoint.resolve()), checkpoint.stat().st_mtime_ns)
    inherited = []
    with open_dict(cfg.dataset):
        for key, value in trained.items():
            if key in ("root", "generate", "name"):
                continue
            current = OmegaConf.to_container(cfg.dataset, resolve=True).get(key)
            if current == value:
                continue
            if f"dataset.{key}" in explicit:
                if key in SPLIT_KEYS:
                    raise ValueError(
                        f"dataset.{key}={current!r} differs from the {value!r} that checkpoint {checkpoint} was "
                        "trained with: the test split (or the labels) would differ from training, so test crops could "
                        f"come from training audio. Drop the dataset.{key} override (certify inherits the training "
                        "value), or train a model with it")
                continue  # e.g. fewer test crops per speaker, asked for explicitly
            cfg.dataset[key] = value
            inherited.append(f"dataset.{key}={value!r}")
    return inherited


@functools.lru_cache(maxsize=8)
def checkpoint_dataset(path: str, mtime_ns: int) -> dict[str, Any]:
    """The dataset section of a checkpoint's training config (read once per file version in a sweep)."""
    from audiocert.checkpoint import read_checkpoint

    state = read_checkpoint(path, "cpu", required=("config",))
    dataset = state["config"].get("dataset") if isinstance(state["config"], dict) else None
    return dict(dataset) if isinstance(dataset, dict) else {}


def command_line_keys() -> list[str]:
    """Dotted keys set on the command line of the running Hydra job (for what certify must not override)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except Exception:  # not inside a Hydra job (a test calling plan_config): nothing was set explicitly
        return []
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def check_device(cfg: DictConfig) -> None:
    """device= must exist where the shards run: here for local and debug, on the nodes for SLURM (asked for with
    launcher.gpus_per_task). Checked before planning, so nothing is planned for a device that cannot run it."""
    name = str(cfg.device)
    if cfg.launcher.name == "slurm":
        if name.startswith("cuda") and not int(cfg.launcher.get("gpus_per_task") or 0):
            raise ValueError(f"device={name} on SLURM needs GPU nodes: set launcher.gpus_per_task=1 (and a GPU "
                             "partition), or use device=auto")
        return
    resolve_device(name)


def plan_config(cfg: DictConfig, work: str = "certify") -> dict[str, Any]:
    """One Hydra job: prepare data, check and plan the config, list its pending shards. Runs nothing.

    Everything that could stop the work (dataset, speakers, checkpoint, audio, values, the device, an absent
    cluster, another command working on the same config) fails here, before ``finish_sweep`` starts or submits
    anything. The checkpoint's training dataset settings are inherited where the command line sets none.
    ``work``: "certify", or another kind of work on the same points ("attack", "perceptibility"), planned in a
    directory inside the certification's, whose plan is written as `certify` would write it.
    """
    check_launcher_config(OmegaConf.to_container(cfg.launcher, resolve=True))
    with open_dict(cfg):  # jobs.json, deferred.json and SLURM jobs name configs by path: one spelling, absolute
        cfg.sweep.dir = os.path.abspath(os.path.expanduser(str(cfg.sweep.dir)))
    kind = cfg.launcher.name
    if kind == "slurm":
        check_slurm_available()
    check_device(cfg)
    if cfg.get("inherit_dataset", True):
        if inherited := inherit_dataset(cfg, command_line_keys()):
            log.info("inherited from checkpoint %s (its training config): %s", cfg.checkpoint, ", ".join(inherited))
    from audiocert.prepare import ensure_dataset  # the corpus synthesis imports scipy.signal: not for workers

    ensure_dataset(cfg.dataset)
    sweep_dir = Path(cfg.sweep.dir)
    plan = make_plan(cfg)
    config_dir = config_dir_for(sweep_dir, plan)
    lock_wait = bool(cfg.launcher.get("lock_wait", False))
    if work == "certify":
        config_lock(config_dir, wait=lock_wait, purpose="certifying")
        plan = write_plan(plan, config_dir)
    else:
        ensure_certify_plan(plan, config_dir)
        module = importlib.import_module(KIND_MODULES[work])
        plan = module.make_kind_plan(cfg, plan, config_dir)
        config_dir = module.kind_dir_for(config_dir, plan)
        config_lock(config_dir, wait=lock_wait, purpose=work)
        plan = write_plan(plan, config_dir)
    found = inventory(config_dir, plan)
    pending = found.missing
    log.info("%s -> %s: %d of %d shard(s) to run", plan["label"], config_dir, len(pending), len(found.shards))
    return {"config_dir": str(config_dir), "label": plan["label"], "pending": pending, "kind": kind,
            "launcher": OmegaConf.to_container(cfg.launcher, resolve=True), "sweep_dir": str(sweep_dir),
            "logger": OmegaConf.to_container(cfg.logger, resolve=True), "sweep_name": str(cfg.sweep.name),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def ensure_certify_plan(plan: dict[str, Any], config_dir: Path) -> None:
    """The certification plan of a config on disk, as `certify` writes it (so that another kind of work planned
    inside it, and a later `certify`, share one directory and one set of points). Left alone when a certify
    command holds the config (it writes the same plan)."""
    try:
        with config_lock(config_dir, wait=False, purpose="planning"):
            write_plan(plan, config_dir)
    except ConfigBusyError:
        log.info("%s is being certified meanwhile; its plan is that command's", config_dir)


def outcome_line(summary: Mapping[str, Any]) -> str:
    """What a reduced config of any kind came to, in one line."""
    if summary.get("kind") == "attack":
        g = ", ".join(f"{v:.2f}" for v in summary["g_robust_accuracy"])
        return (f"{summary['points']} points attacked at {len(summary['eps'])} budget(s) ({summary['space']} space): "
                f"robust accuracy of g {g}; {summary['contradictions']} contradiction(s) with the certificates")
    if summary.get("kind") == "perceptibility":
        return f"{summary['points']} points measured; {summary.get('headline', '')}"
    return f"{summary['num_points']} points, smoothed accuracy {summary['smoothed_accuracy']:.3f}"


def config_lock(config_dir: Path, wait: bool, purpose: str) -> Any:
    """Take the config's lock (see audiocert.locks); as a context manager it is released at the end of the block,
    else it is held until this process ends or finish_sweep releases it."""
    return _LockHandle(config_dir, wait, purpose)


class _LockHandle:
    def __init__(self, config_dir: Path, wait: bool, purpose: str) -> None:
        self.config_dir, self.held_before = Path(config_dir), lock_key(config_dir) in held()
        acquire(self.config_dir, wait=wait, purpose=purpose)

    def __enter__(self) -> _LockHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.held_before:
            release(self.config_dir)


def sweep_lock(sweep_dir: Path) -> Any:
    """The sweep's submission lock: one submission pass at a time (dependent jobs may run side by side)."""
    return locked(Path(sweep_dir) / "logs", wait=True, purpose="submitting")


def finish_sweep(entries: Sequence[Mapping[str, Any]], progress: bool = True) -> list[dict[str, Any]]:
    """Run, submit or reduce the planned configs; one outcome per config: 'summary', 'submitted' or 'error'."""
    unique = list({e["config_dir"]: e for e in entries}.values())  # the same config twice in a sweep runs once
    if not unique:
        return []
    kinds = {e["kind"] for e in unique}
    if len(kinds) != 1:
        raise ValueError(f"one sweep, one launcher: got {sorted(kinds)}")
    try:
        return LAUNCHERS[kinds.pop()](unique, progress=progress).finish()
    finally:
        for entry in unique:
            release(entry["config_dir"])


def report_outcomes(results: Sequence[Mapping[str, Any]], sweep_dir: str | Path) -> bool:
    """Print one line per config and, for those not certified, what failed and where the logs are.

    True when every config is certified (or, without launcher.wait, submitted)."""
    ok = True
    for result in results:
        if "summary" in result:
            s = result["summary"]
            if s.get("kind", "certify") == "certify":
                print(f"certified {s['label']}: smoothed accuracy {s['smoothed_accuracy']:.3f}, "
                      f"abstain {s['abstain_fraction']:.3f} -> {result['config_dir']}")
            else:
                print(f"{s['kind']} {s['label']}: {outcome_line(s)} -> {result['config_dir']}")
        elif result.get("deferred"):
            print(f"planned {result['label']} -> {result['config_dir']}: waits for room under the site limits "
                  f"({result['deferred']})")
        elif result.get("submitted"):
            print(f"submitted {result['label']} -> {result['config_dir']}")
        else:
            ok = False
            details = failure_summary(Path(result["config_dir"]))
            print(f"FAILED {result['label']} ({result['config_dir']}): {result.get('error', 'not certified')}"
                  + (f"\n{details}" if details else ""), file=sys.stderr)
    if any(r.get("submitted") for r in results):
        waiting = sum(bool(r.get("deferred")) for r in results)
        print(f"submitted {sum(bool(r.get('submitted')) for r in results) - waiting} config(s)"
              + (f"; {waiting} wait for room under the site limits and are submitted as jobs end (by the sweep's "
                 "dependent jobs, or this command with launcher.wait=true)" if waiting else "")
              + f"; follow them with `audiocert status {sweep_dir}`")
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

