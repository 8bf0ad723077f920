"""How a sweep's shards become cluster tasks: packing by duration, throughput estimates, site limits, sbatch errors.

A shard stays the unit of validation and resume; a task is what the scheduler runs: one SLURM array task runs
many shards in one process (one context per config), so start-up (imports, checkpoint, dataset, plan) is paid
once per task. Tasks are sized by a target duration, ``launcher.task_minutes``, from a throughput estimate:

    cost(shard) = samples(shard) / samples_per_s + per_shard_s
    tasks = min(ceil(sum cost / budget), max_tasks, shards),  budget = task_minutes * 60 - startup_s

and the shards are cut in their order into that many tasks at the multiples of sum cost / tasks, so every shard
is in exactly one task and no task exceeds the budget by more than one shard.

Site limits: MaxArraySize and MaxJobCount (``scontrol show config``) and a per-user cap
(``launcher.max_submitted``) bound how many jobs one submission may add; what does not fit waits for a later
submission (the dependent job of a config, or `certify --wait`). sbatch refusals are sorted into transient ones
(the controller is busy, a limit is reached for now: retry later) and permanent ones (a wrong partition or
account: fail that config, naming it).

Pure functions (no SLURM calls here): audiocert.launching.slurm gathers the numbers and submits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audiocert.schemas import check_section
from audiocert.schemas.launcher import LauncherSchema
from audiocert.settings import check_number

# Fallback throughput when a sweep has finished no shard yet and the launcher names none (samples/s of the small
# demo model on one CPU core; a GPU node is far faster, so CUDA tasks then come out shorter than asked, never
# longer). Configure launcher.samples_per_s for your nodes, or let the first round measure it.
DEFAULT_SAMPLES_PER_S = {"cpu": 100.0, "cuda": 2000.0}

# sbatch's words for a refusal that goes away by itself (busy controller, a limit reached for now).
TRANSIENT = re.compile(
    r"temporarily unable|Resource temporarily unavailable|Socket timed out|Unable to contact slurm controller|"
    r"Slurm controller not responding|MaxJobCount|MaxSubmitJob|job submit limit|Too many (pending )?jobs|"
    r"AssocMaxSubmitJobLimit|QOSMaxSubmitJob|try again|Connection refused|Transport endpoint is not connected",
    re.IGNORECASE)


def is_transient(message: str) -> bool:
    """Whether an sbatch refusal should be retried later rather than fail its config."""
    return bool(TRANSIENT.search(message or ""))


def pack_tasks(costs: Sequence[float], budget_s: float, max_tasks: int | None = None) -> list[list[int]]:
    """Positions 0..len(costs)-1 cut, in order, into tasks of about ``budget_s`` seconds each.

    ``ceil(sum(costs) / budget_s)`` tasks (at most ``max_tasks`` and one per shard), cut where the running cost
    crosses multiples of sum/tasks: each position in exactly one task, no task longer than sum/tasks plus one
    shard (so at most the budget plus one shard). No empty task.
    """
    if not costs:
        return []
    check_number(budget_s, "task budget (launcher.task_minutes)", above=0)
    if any(not (math.isfinite(c) and c >= 0) for c in costs):
        raise ValueError(f"shard costs must be finite and non-negative, got {list(costs)[:5]}...")
    total = float(sum(costs))
    tasks = max(1, math.ceil(total / budget_s - 1e-9))
    if max_tasks is not None:
        tasks = min(tasks, max(1, int(max_tasks)))
    tasks = min(tasks, len(costs))
    share = total / tasks if total > 0 else 0.0
    packed: list[list[int]] = [[] for _ in range(tasks)]
    running = 0.0
    for position, cost in enumerate(costs):
        # The task a shard goes to is decided by where its cost starts: shards never straddle two tasks.
        k = min(tasks - 1, int(running // share)) if share > 0 else position * tasks // len(costs)
        packed[k].append(position)
        running += cost
    return [task for task in packed if task]


def fixed_tasks(count: int, per_task: int) -> list[list[int]]:
    """Positions in consecutive groups of ``per_task`` (launcher.shards_per_task instead of a duration)."""
    per_task = max(1, int(per_task))
    return [list(range(k, min(k + per_task, count))) for k in range(0, count, per_task)]


@dataclass(frozen=True)
class Throughput:
    """A samples/s estimate for sizing tasks, and where it came from (said in the submission log)."""

    samples_per_s: float
    source: str


def estimate_throughput(records: Sequence[Mapping[str, Any]], configured: Any, device_type: str) -> Throughput:
    """Samples per second of one task: measured on this sweep's finished shards (total samples / total shard
    seconds) when there are any, else ``launcher.samples_per_s`` (a number, or a mapping per device type), else
    :data:`DEFAULT_SAMPLES_PER_S`."""
    samples = sum(float(r.get("samples") or 0) for r in records)
    busy = sum(float(r.get("elapsed_s") or 0) for r in records)
    if samples > 0 and busy > 0:
        return Throughput(samples / busy, f"measured on {len(records)} finished shard(s) of this sweep")
    if isinstance(configured, Mapping):
        configured = configured.get(device_type)
    if configured is not None:
        return Throughput(float(check_number(configured, "launcher.samples_per_s", above=0)),
                          "launcher.samples_per_s")
    return Throughput(DEFAULT_SAMPLES_PER_S.get(device_type, DEFAULT_SAMPLES_PER_S["cpu"]),
                      f"default for {device_type} (set launcher.samples_per_s for your nodes)")


def submission_capacity(max_job_count: int | None, jobs_in_system: int, max_submitted: int | None,
                        user_queued: int, margin: int = 2) -> int | None:
    """How many more jobs (array tasks count one each) one submission may add, or None for no limit.

    ``margin`` keeps room under MaxJobCount for jobs other users submit meanwhile.
    """
    room = []
    if max_job_count:
        room.append(max_job_count - jobs_in_system - margin)
    if max_submitted:
        room.append(max_submitted - user_queued)
    return max(0, min(room)) if room else None


def parse_scontrol_config(text: str) -> dict[str, str]:
    """``scontrol show config`` as key -> value (the lines of the form 'Key = value')."""
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and " " not in key.strip():
            values[key.strip()] = value.strip()
    return values


def int_setting(values: Mapping[str, str], key: str) -> int | None:
    """An integer setting of a parsed slurm config ('1001', '10000'), None when absent or not a number."""
    match = re.match(r"\s*(\d+)", values.get(key, ""))
    return int(match.group(1)) if match else None


def check_launcher_config(launcher: Mapping[str, Any]) -> None:
    """Every launcher setting a sweep uses, finite and in range, named when it is not (before anything runs): the
    section is checked against the schema of its launcher (audiocert.schemas.launcher)."""
    check_section(LauncherSchema, launcher, "launcher")
