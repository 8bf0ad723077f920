"""Talking to SLURM: is a cluster there, submitit executors for it, one look at its queue, the room its site limits
leave, sbatch with retries, and a config's pending shards packed into array tasks (see
audiocert.launching.scheduling)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

from audiocert.launching.scheduling import (
    estimate_throughput,
    fixed_tasks,
    int_setting,
    is_transient,
    pack_tasks,
    parse_scontrol_config,
    submission_capacity,
)
from audiocert.shards import inventory, known_shards

log = logging.getLogger(__name__)


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
    """The pending shards of a config packed into array tasks (see audiocert.launching.scheduling), and how they
    were sized."""
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


def job_names(plan: Mapping[str, Any]) -> tuple[str, str]:
    """SLURM job names of a config's shard tasks and of its dependent job."""
    return f"ac-{plan['config_hash'][:8]}", f"ac-reduce-{plan['config_hash'][:8]}"
