"""A sweep's end: ``finish_sweep`` hands the planned configs to their launcher, ``report_outcomes`` prints what
each came to, and ``FinalizeSweep`` (the Hydra callback of conf/certify.yaml) collects the planned configs."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from audiocert.kinds import kind_named
from audiocert.launching.executors import DebugLauncher, Launcher, LocalLauncher
from audiocert.launching.slurm_submission import SlurmLauncher
from audiocert.locks import release
from audiocert.provenance import atomic_write_json
from audiocert.status import failure_summary, format_status

LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (DebugLauncher, LocalLauncher, SlurmLauncher)}


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
            kind = kind_named(s["kind"])
            print(f"{kind.verb} {s['label']}: {kind.outcome(s)} -> {result['config_dir']}")
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
