"""Weights & Biases logging: one run per config, written by whoever finalises it (never by the shards).

The run (group = sweep name, job_type = certify, id derived from sweep and config hash) gets the resolved
config, the sweep's progress as shards finished (replayed from the shard files' finish times, so the
same history appears whether the reducer ran locally or as a SLURM job), the certified-accuracy-vs-radius
curve as a table and a line plot, and summary metrics at the seed's radii. Offline mode needs no network;
``wandb sync <dir>`` uploads later (the command is printed and saved in wandb_run.json).

W&B trouble (a bad mode, no API key online, no network, a crash inside wandb) never costs results: the run
is dropped with one warning per process and certification goes on; every result is in the config's files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.kinds import kind_of
from audiocert.provenance import atomic_write_json
from audiocert.shards import inventory, read_plan

log = logging.getLogger(__name__)
_warned = False


def logging_failed(what: str, error: BaseException) -> None:
    """Say once per process that W&B logging is off and why; results do not depend on it."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("W&B logging disabled (%s failed: %s: %s); certification goes on and every result is written "
                    "to the config directories. Fix the logger settings (logger.mode / WANDB_MODE, API key) and "
                    "log them later with `audiocert reduce DIR --wandb offline`", what, error.__class__.__name__,
                    error)


def run_id(sweep_name: str, config_hash: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{sweep_name}-{config_hash}")[:64]


class ConfigRun:
    """The W&B run of one config: open it, log progress as shards land, then the results, then finish."""

    def __init__(self, config_dir: Path, logger_cfg: Mapping[str, Any], sweep_name: str) -> None:
        mode = logger_cfg.get("mode", "offline")
        if mode not in ("offline", "online"):
            raise ValueError(f"logger.mode={mode!r}: choose offline, online or disabled")
        import wandb

        self.wandb, self.mode, self.config_dir = wandb, mode, Path(config_dir)
        self.plan = read_plan(self.config_dir)
        self.kind = kind_of(self.plan)
        # The sweep directory (an attack's config directory sits inside its certification's); wandb adds wandb/.
        sweep_dir = (self.plan.get("config") or {}).get("sweep", {}).get("dir") or self.config_dir.parent
        wandb_dir = Path(logger_cfg.get("dir") or sweep_dir)
        wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        quantities = self.plan["quantities"]
        self.run = wandb.init(
            project=logger_cfg.get("project", "audiocert"), entity=logger_cfg.get("entity"), dir=str(wandb_dir),
            mode=mode, group=sweep_name, job_type=self.kind.name, name=self.plan["label"],
            id=run_id(sweep_name, self.plan["config_hash"]), resume="allow", reinit="create_new",
            config=self.plan["config"] | {"config_hash": self.plan["config_hash"],
                                          "code_version": self.plan["code_version"]},
            tags=[quantities["stage"], f"sigma={quantities['sigma']:g}", self.plan["config"]["dataset"]["name"]],
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self.logged: set[int] = set()
        self.samples = 0
        self.broken = False

    def _guarded(self, what: str, action) -> Any:
        """Run a W&B action; on any failure turn this run off (with the one warning) instead of failing."""
        if self.broken:
            return None
        try:
            return action()
        except Exception as error:
            self.broken = True
            logging_failed(what, error)
            return None

    def log_progress(self) -> None:
        self._guarded("logging progress", self._log_progress)

    def log_results(self) -> None:
        self._guarded("logging results", self._log_results)

    def finish(self) -> dict[str, Any] | None:
        info = self._guarded("finishing the run", self._finish)
        if self.broken:  # close what wandb opened, quietly: the warning was given
            try:
                self.run.finish(exit_code=1)
            except Exception:
                pass
        return info

    def _log_progress(self) -> None:
        """Log the shards finished since the last call, in the order they finished (step = shards done)."""
        found = inventory(self.config_dir, self.plan)
        records = found.records
        new = sorted((r for i, r in records.items() if i not in self.logged), key=lambda r: r["finished_at"])
        if not new:
            return
        started = min(r["finished_at"] - r["elapsed_s"] for r in records.values())
        total = len(found.shards)  # of the rounds planned so far
        for record in new:
            self.logged.add(record["index"])
            self.samples += record["samples"]
            wall = max(record["finished_at"] - started, 1e-9)
            self.run.log({"progress/shards_done": len(self.logged), "progress/fraction_done": len(self.logged) / total,
                          "progress/samples": self.samples, "progress/samples_per_s": self.samples / wall,
                          "progress/wall_s": wall}, step=len(self.logged))

    def _log_results(self) -> None:
        """The reduced config: the tables, line plots and summary metrics of its kind's W&B spec."""
        self._log_progress()
        spec = self.kind.wandb_spec(self.config_dir, self.plan)
        tables = {name: self.wandb.Table(columns=t["columns"], data=t["data"])
                  for name, t in spec.get("tables", {}).items()}
        logged = dict(tables)
        for line in spec.get("lines", []):
            logged[line.get("key", f"{line['table']}/{line['y']}")] = self.wandb.plot.line(
                tables[line["table"]], line["x"], line["y"], title=line["title"])
        self.run.log(logged, step=len(self.logged) + 1)
        for key, value in spec.get("summary", {}).items():
            self.run.summary[key] = value

    def _finish(self) -> dict[str, Any]:
        run_dir = Path(self.run.dir).parent
        info = {"mode": self.mode, "run_id": self.run.id, "run_dir": str(run_dir), "project": self.run.project,
                "sync": f"wandb sync {run_dir}" if self.mode == "offline" else None}
        self.run.finish()
        atomic_write_json(self.config_dir / "wandb_run.json", info)
        if self.mode == "offline":
            log.info("W&B offline run written to %s; upload it with `%s`", run_dir, info["sync"])
        return info


def open_config_run(config_dir: Path, logger_cfg: Mapping[str, Any] | None, sweep_name: str) -> ConfigRun | None:
    """The config's W&B run, or None when logging is disabled or W&B cannot start (one warning, no failure)."""
    if logger_cfg is None or logger_cfg.get("mode", "offline") == "disabled" or _warned:
        return None
    try:
        return ConfigRun(config_dir, logger_cfg, sweep_name)
    except Exception as error:
        logging_failed("starting a run", error)
        return None


def log_config_run(config_dir: Path, logger_cfg: Mapping[str, Any], sweep_name: str) -> dict[str, Any] | None:
    """Log a reduced config to W&B in one go (the SLURM reducer job: progress replayed from the shard files)."""
    run = open_config_run(config_dir, logger_cfg, sweep_name)
    if run is None:
        return None
    try:
        run.log_results()
    finally:
        info = run.finish()
    return info
