"""Schemas of the launcher group (conf/launcher/): one per launcher name (debug, local, slurm), as a site's own
launcher extends one of them; ``LauncherSchema.variant`` picks the schema of a section by its name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from audiocert.schemas.rules import (
    Anything,
    Choice,
    Number,
    Table,
    Text,
    Texts,
    count,
    flag,
    join,
    number,
    refuse_relation,
    setting,
)

LAUNCHERS = ("slurm", "local", "debug")


@dataclass
class LauncherSchema:
    """What every launcher takes: tries per shard, torch threads, whether to wait for a busy config."""

    name: str = setting(Choice(LAUNCHERS))
    attempts: int = count(1)
    threads: int | None = count(None)
    lock_wait: bool = flag(False)

    @classmethod
    def variant(cls, section: Any) -> type:
        """The schema of a launcher section, by its name (this one for an unknown name: its name is refused)."""
        name = section.get("name") if hasattr(section, "get") else None
        return {"debug": DebugLauncherSchema, "local": LocalLauncherSchema, "slurm": SlurmLauncherSchema}.get(
            name, cls) if isinstance(name, str) else cls


@dataclass
class DebugLauncherSchema(LauncherSchema):
    """In this process, one shard after another."""


@dataclass
class LocalLauncherSchema(LauncherSchema):
    """This machine: shards pooled over ``workers`` processes."""

    workers: int = count(1)
    time_min: float = number(600, above=0)


@dataclass
class SlurmLauncherSchema(LauncherSchema):
    """A SLURM cluster through submitit: resources, task sizing, site limits, submission retries."""

    partition: str | None = setting(Text(), None)
    account: str | None = setting(Text(), None)
    gpus_per_task: int | None = count(0, minimum=0)
    cpus_per_task: int = count()
    mem_gb: float = number(above=0)
    time_min: float = number(above=0)
    array_parallelism: int = count()
    task_minutes: float = number(20, above=0)
    samples_per_s: Any = setting(Table(Number(above=0), scalar=True), None)
    shards_per_task: int | None = count(None)
    max_tasks: int | None = count(None)
    startup_s: float = number(10, minimum=0)
    per_shard_s: float = number(0.5, minimum=0)
    max_array_size: int = count()
    max_job_count: int | None = count(None, minimum=2)
    max_submitted: int | None = count(None, minimum=2)
    submit_retries: int = count(4, minimum=0)
    submit_backoff_s: float = number(5, minimum=0)
    signal_delay_s: int | None = count(90, minimum=0)
    setup: list[str] = setting(Texts(), [])
    additional: dict[str, Any] = setting(Anything(), {})
    wait: bool = flag(False)

    @classmethod
    def rules(cls, values: dict[str, Any], prefix: str) -> None:
        task_minutes, time_min = values.get("task_minutes", 20), values["time_min"]
        if float(task_minutes) >= float(time_min):
            raise refuse_relation(join(prefix, "task_minutes"), task_minutes,
                                  f"must stay below {join(prefix, 'time_min')}={time_min} (the job's time limit): "
                                  "raise time_min or lower task_minutes")
