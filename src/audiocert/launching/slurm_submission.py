"""Submitting a sweep's configs to SLURM: per config, array tasks for its pending shards and a dependent job
(afterok) that submits what is left or reduces it (``advance_config``); configs that do not fit under the site
limits wait in the sweep's deferred.json for a later pass; ``SlurmLauncher`` submits and, with ``launcher.wait``,
follows the configs."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiocert.launching.executors import Launcher, finalize_config, finalize_entry, read_jobs, start_monitor
from audiocert.launching.locking import config_lock, sweep_lock
from audiocert.launching.slurm import (
    Capacity,
    SlurmQueue,
    SubmissionDeferred,
    check_slurm_available,
    job_names,
    sbatch_retrying,
    slurm_executor,
    task_groups,
)
from audiocert.launching.worker import ShardWorker
from audiocert.locks import release
from audiocert.provenance import atomic_write_json, read_json, seal
from audiocert.shards import has_results, inventory, next_work, read_plan
from audiocert.status import (
    DEFERRED_FILE,
    JOBS_FILE,
    failure_summary,
    format_status,
    read_deferred,
    sweep_jobs_alive,
    wait_for_configs,
)

log = logging.getLogger(__name__)


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
    previous, in_flight, old_reducer_live = earlier_submission(config_dir, pending, queue, name, reducer_name)
    pending = [i for i in pending if i not in in_flight]
    if in_flight:
        log.info("%s: %d shard(s) still queued or running from an earlier submission; not submitted again",
                 plan["label"], len(in_flight))
    if not pending and old_reducer_live:
        log.info("%s: nothing new to submit; dependent job %s is still waiting", plan["label"], previous["reducer"])
        return previous
    groups, how = task_groups(config_dir, plan, pending, launcher, max_tasks)
    groups = fit_under_limits(groups, capacity, plan)
    record = submission_record(cfg, previous, in_flight, old_reducer_live)
    executor = slurm_executor(launcher, folder, name)
    array_ids = submit_arrays(executor, groups, launcher, plan, capacity, config_dir, record)
    # Old arrays may hold a failed task (why this shard is resubmitted): wait for their live tasks one by one.
    depends_on = array_ids + sorted(set(in_flight.values()))
    # Never cancel ourselves: the job that plans the next round submits it from inside SLURM.
    if old_reducer_live and previous["reducer"] != os.environ.get("SLURM_JOB_ID"):
        subprocess.run(["scancel", str(previous["reducer"])], capture_output=True, timeout=30)
    reduce_job = submit_dependent_job(cfg, launcher, folder, reducer_name, config_dir, plan, depends_on)
    record["reducer"] = str(reduce_job.job_id)
    record["logs"][str(reduce_job.job_id)] = str(reduce_job.paths.stdout)  # it plans the next round or reduces
    record["submitted_at"] = time.time()
    atomic_write_json(config_dir / JOBS_FILE, record)
    record["new_tasks"] = len(groups)
    submitted = sum(len(g) for g in groups)
    log.info("%s: %d shard(s) in %d task(s) (%s), array job(s) %s; dependent job %s (afterok: %s)%s", plan["label"],
             submitted, len(groups), how, ",".join(array_ids) or "-", reduce_job.job_id, ",".join(depends_on) or "-",
             f"; {len(pending) - submitted} shard(s) wait for it" if submitted < len(pending) else "")
    return record


def earlier_submission(config_dir: Path, pending: Sequence[int], queue: SlurmQueue, name: str,
                       reducer_name: str) -> tuple[dict[str, Any], dict[int, str], bool]:
    """The config's last SLURM submission (jobs.json; {} when none), its pending shards whose tasks are still
    queued or running (shard -> job id), and whether its dependent job is still queued."""
    previous = read_jobs(config_dir)
    previous = previous if previous.get("executor") == "slurm" else {}
    live = queue.live(name, reducer_name) if previous else set()
    in_flight = {int(i): job for i, job in previous.get("shards", {}).items() if job in live and int(i) in pending}
    old_reducer_live = previous.get("reducer") in live
    return previous, in_flight, old_reducer_live


def fit_under_limits(groups: list[list[tuple[str, int]]], capacity: Capacity,
                     plan: Mapping[str, Any]) -> list[list[tuple[str, int]]]:
    """The task groups that fit under the site limits with their dependent job; SubmissionDeferred when none do."""
    room = capacity.take(len(groups) + 1)  # its tasks and the job that depends on them
    if groups and room < 2 or room < 1:
        capacity.take(-room)  # give back what was taken
        raise SubmissionDeferred(f"the site limits leave no room for {plan['label']} now (MaxJobCount / "
                                 "launcher.max_submitted / launcher.max_job_count)")
    if room - 1 < len(groups):
        log.info("%s: %d of %d task(s) fit under the site limits now; its dependent job submits the rest",
                 plan["label"], room - 1, len(groups))
        groups = groups[: room - 1]
    return groups


def submission_record(cfg: DictConfig, previous: Mapping[str, Any], in_flight: Mapping[int, str],
                      old_reducer_live: bool) -> dict[str, Any]:
    """jobs.json of a new submission, before its first array: what it keeps of the earlier one still in flight."""
    record: dict[str, Any] = {
        "executor": "slurm", "config": OmegaConf.to_container(cfg, resolve=True),
        "shards": {str(i): job for i, job in in_flight.items()},
        "logs": {job: path for job, path in previous.get("logs", {}).items() if job in in_flight.values()},
        "reducer": previous.get("reducer") if old_reducer_live else None, "submitted_at": time.time(),
        "tasks": {job: n for job, n in previous.get("tasks", {}).items() if job in in_flight.values()},
    }
    record["arrays"] = sorted({job.split("_")[0] for job in record["shards"].values()})
    return record


def submit_arrays(executor: Any, groups: list[list[tuple[str, int]]], launcher: Mapping[str, Any],
                  plan: Mapping[str, Any], capacity: Capacity, config_dir: Path, record: dict[str, Any]) -> list[str]:
    """Submit the task groups as job arrays of at most ``capacity.max_array`` tasks, writing ``record`` to
    jobs.json as each is accepted; the array job ids."""
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
        atomic_write_json(config_dir / JOBS_FILE, record)  # each accepted array is on record before the next sbatch
    return array_ids


def submit_dependent_job(cfg: DictConfig, launcher: Mapping[str, Any], folder: Path, reducer_name: str,
                         config_dir: Path, plan: Mapping[str, Any], depends_on: Sequence[str]) -> Any:
    """Submit the config's dependent job (``advance_config``), after ``depends_on`` succeed (afterok)."""
    # The dependent job needs no GPU and little CPU: it must not queue behind the shards for a GPU node.
    reducer = slurm_executor({**launcher, "gpus_per_task": 0, "cpus_per_task": 1}, folder, reducer_name)
    dependency = {"dependency": "afterok:" + ":".join(depends_on), "kill-on-invalid-dep": "yes"} if depends_on else {}
    reducer.update_parameters(slurm_additional_parameters={**dict(launcher.get("additional") or {}), **dependency},
                              timeout_min=30)
    return sbatch_retrying(lambda: reducer.submit(advance_config, str(config_dir),
                                                  OmegaConf.to_container(cfg, resolve=True)),
                           launcher, f"the dependent job of {plan['label']}")


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
                            f"rerun the sweep's `audiocert {plan['kind']}` command")
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


class SlurmLauncher(Launcher):
    """Array tasks per round, sized by duration and within the site limits, and per config a dependent job
    (afterok) that submits what is left (the rest of its shards, or its next round) with another such job, or
    reduces the config when it is settled. This process only submits; with ``launcher.wait`` it then follows
    the configs until they are reduced or their jobs are gone, submitting configs that waited for room."""

    name = "slurm"

    def finish(self) -> list[dict[str, Any]]:
        # This process is on the login node: with launcher.wait it is the sweep's W&B monitor while it follows
        # the jobs; without, `audiocert status --watch SECONDS --wandb MODE SWEEP_DIR` is (the hint says so).
        waits = bool(self.launcher.get("wait", False))
        monitor = start_monitor(self.entries) if waits else None
        try:
            return self.submit_and_follow()
        finally:
            if monitor is not None:
                monitor.stop()
            elif (self.entries[0].get("logger") or {}).get("mode", "disabled") != "disabled":
                log.info("W&B: watch this sweep live from this login node with `audiocert status --watch 30 "
                         "--wandb %s %s` (the compute nodes never talk to W&B)",
                         self.entries[0]["logger"].get("mode", "offline"), self.entries[0]["sweep_dir"])

    def submit_and_follow(self) -> list[dict[str, Any]]:
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
                # A compute node: no W&B here (the monitor on the login node logs the results it finds).
                return finalize_config(config_dir, None, str(config["sweep"]["name"]), found=found)
        outcome = submit_configs([config_dir], sweep_dir, {str(config_dir): dict(config)})[str(config_dir)]
        if "error" in outcome:
            raise RuntimeError(outcome["error"])
        return {"submitted": len(pending), **outcome}
    finally:
        submit_deferred(sweep_dir)
