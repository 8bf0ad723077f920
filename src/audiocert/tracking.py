"""Weights & Biases logging: one run per config, with one writer at a time, and never from a shard.

The run of a config (group = sweep name, job_type = its kind, id derived from sweep and config hash and kept
in the config's ``wandb_run.json``) is written by whoever watches the sweep: the monitor
(``audiocert.monitor``), which runs inside the local launcher and on a SLURM login node, logs a row per shard
as shards land (progress, samples/s) and the kind's live rows (the certification's partial curve with its
confidence band), then the reduced results when the config's summary appears: the kind's W&B spec (tables, line
plots, summary metrics with their intervals, media, artifacts). A later writer (a restarted monitor, ``audiocert
reduce --wandb``) resumes the same run id and step from ``wandb_run.json``. Offline mode needs no network;
``wandb sync <dir>`` uploads later (the command is printed and saved in wandb_run.json).

W&B trouble (a bad mode, no API key online, no network, a crash inside wandb) never costs results: the run
is dropped with one warning per process and certification goes on; every result is in the config's files.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from audiocert.kinds import kind_of
from audiocert.provenance import CorruptFileError, atomic_write_json, read_json
from audiocert.shards import inventory, read_plan

log = logging.getLogger(__name__)
_warned = False
RUN_FILE = "wandb_run.json"  # the config's run: id, directory, last step, shards logged, whether final
HEARTBEAT_S = 60.0  # a live row at least this often while a config runs, even when no shard landed


def logging_failed(what: str, error: BaseException) -> None:
    """Say once per process that W&B logging is off and why; results do not depend on it."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("W&B logging disabled (%s failed: %s: %s); certification goes on and every result is written "
                    "to the config directories. Fix the logger settings (logger.mode / WANDB_MODE, API key) and "
                    "log them later with `audiocert reduce DIR --wandb offline`", what, error.__class__.__name__,
                    error)


def logging_off() -> bool:
    """Whether this process has given up on W&B (after the one warning)."""
    return _warned


def run_id(sweep_name: str, config_hash: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{sweep_name}-{config_hash}")[:64]


def read_run_file(directory: Path) -> dict[str, Any]:
    """What ``wandb_run.json`` says of a directory's run ({} when there is none or it is unreadable)."""
    try:
        record = read_json(Path(directory) / RUN_FILE) if (Path(directory) / RUN_FILE).is_file() else {}
    except (CorruptFileError, OSError):
        record = {}
    return record if isinstance(record, dict) else {}


def init_run(wandb: Any, logger_cfg: Mapping[str, Any], wandb_dir: Path, **fields: Any) -> Any:
    """``wandb.init`` with our settings: offline or online only, quiet, bounded in time (``init_timeout_s``)."""
    mode = logger_cfg.get("mode", "offline")
    if mode not in ("offline", "online"):
        raise ValueError(f"logger.mode={mode!r}: choose offline, online or disabled")
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    timeout = float(logger_cfg.get("init_timeout_s") or 30.0)
    return wandb.init(project=logger_cfg.get("project") or "audiocert", entity=logger_cfg.get("entity"),
                      dir=str(wandb_dir), mode=mode, resume="allow", reinit="create_new",
                      settings=wandb.Settings(console="off", x_disable_stats=True, init_timeout=timeout), **fields)


def run_info(run: Any, mode: str) -> dict[str, Any]:
    """Where a run lives: its offline directory and sync command, or its URL."""
    run_dir = Path(run.dir).parent
    url = None
    if mode == "online":
        try:
            url = run.url
        except Exception:  # no URL without a server: the run directory still says where it is
            url = None
    return {"mode": mode, "run_id": run.id, "run_dir": str(run_dir), "project": run.project, "url": url,
            "sync": f"wandb sync {run_dir}" if mode == "offline" else None}


def training_link(checkpoint: str | None, digest: str | None) -> dict[str, Any]:
    """The training run that made a checkpoint (its output directory's wandb_run.json, when it logged this very
    checkpoint: same digest), for the config of a run that uses it."""
    if not checkpoint or not digest:
        return {}
    record = read_run_file(Path(checkpoint).parent)
    if not record.get("run_id") or not str(record.get("checkpoint_sha256", "")).startswith(digest):
        return {}
    return {"training_run_id": record["run_id"], "training_run_dir": record.get("run_dir"),
            "training_run_url": record.get("url")}


class ConfigRun:
    """The W&B run of one config: open (or resume) it, log shards and live rows as they land, then the results."""

    def __init__(self, config_dir: Path, logger_cfg: Mapping[str, Any], sweep_name: str) -> None:
        import wandb

        self.wandb, self.mode, self.config_dir = wandb, logger_cfg.get("mode", "offline"), Path(config_dir)
        self.plan = read_plan(self.config_dir)
        self.kind = kind_of(self.plan)
        stored = read_run_file(self.config_dir)
        if stored.get("config_hash") not in (None, self.plan["config_hash"]):
            stored = {}  # a run file of another plan: start afresh
        # The sweep directory (an attack's config directory sits inside its certification's); wandb adds wandb/.
        sweep_dir = (self.plan.get("config") or {}).get("sweep", {}).get("dir") or self.config_dir.parent
        quantities = self.plan["quantities"]
        digest = quantities.get("checkpoint_digest")
        self.run = init_run(
            wandb, logger_cfg, Path(logger_cfg.get("dir") or sweep_dir), group=sweep_name,
            job_type=self.kind.name, name=self.plan["label"],
            id=stored.get("run_id") or run_id(sweep_name, self.plan["config_hash"]),
            config=self.plan["config"] | {"config_hash": self.plan["config_hash"],
                                          "code_version": self.plan["code_version"],
                                          "checkpoint_path": self.plan.get("checkpoint"),
                                          "checkpoint_sha256_16": digest,
                                          "checkpoint_artifact": f"checkpoint-{digest}" if digest else None,
                                          **training_link(self.plan.get("checkpoint"), digest)},
            tags=[quantities["stage"], f"sigma={quantities['sigma']:g}", self.plan["config"]["dataset"]["name"]],
        )
        self.step = int(stored.get("step", -1))
        self.logged: set[int] = set(stored.get("shards_logged", []))
        self.samples = int(stored.get("samples", 0))
        self.last_row = 0.0
        self.broken = False
        self.final = False
        self.save_state()

    def _guarded(self, what: str, action: Callable[[], Any]) -> Any:
        """Run a W&B action; on any failure turn this run off (with the one warning) instead of failing."""
        if self.broken:
            return None
        try:
            return action()
        except Exception as error:
            self.broken = True
            logging_failed(what, error)
            return None

    def save_state(self) -> None:
        """wandb_run.json: what a later writer of this run resumes from (and what `status` prints)."""
        atomic_write_json(self.config_dir / RUN_FILE, {
            **run_info(self.run, self.mode), "config_hash": self.plan["config_hash"], "step": self.step,
            "shards_logged": sorted(self.logged), "samples": self.samples, "final": self.final,
            "updated_at": time.time()})

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

    def _row(self, values: Mapping[str, Any]) -> None:
        self.step += 1
        self.run.log(dict(values), step=self.step)
        self.last_row = time.time()

    def _log_progress(self, live: bool = True) -> None:
        """A row per shard finished since the last call, in the order they finished; then the kind's live row
        (partial results over the points finished so far) when a shard landed or a minute has passed."""
        found = inventory(self.config_dir, self.plan)
        records = found.records
        new = sorted((r for i, r in records.items() if i not in self.logged), key=lambda r: r["finished_at"])
        if records:
            started = min(r["finished_at"] - r["elapsed_s"] for r in records.values())
        total = len(found.shards)  # of the rounds planned so far
        for record in new:
            self.logged.add(record["index"])
            self.samples += record["samples"]
            wall = max(record["finished_at"] - started, 1e-9)
            unit = self.kind.progress_unit
            self._row({"progress/shards_done": len(self.logged), "progress/fraction_done": len(self.logged) / total,
                       f"progress/{unit}": self.samples, f"progress/{unit}_per_s": self.samples / wall,
                       "progress/wall_s": wall, "progress/shard_finished_at": record["finished_at"]})
        if live and (new or time.time() - self.last_row >= HEARTBEAT_S):
            spec = self.kind.live_spec(self.config_dir, self.plan)
            row = dict(spec.get("scalars", {})) | {"progress/shards_done": len(self.logged),
                                                   "progress/fraction_done": len(self.logged) / max(total, 1)}
            tables = {name: self.wandb.Table(columns=t["columns"], data=t["data"])
                      for name, t in spec.get("tables", {}).items()}
            self._row(row | tables)
        if new or live:
            self.save_state()

    def _log_results(self) -> None:
        """The reduced config: the tables, line plots, media and summary metrics of its kind's W&B spec."""
        self._log_progress(live=False)
        spec = self.kind.wandb_spec(self.config_dir, self.plan)
        tables = {name: self.wandb.Table(columns=t["columns"], data=t["data"])
                  for name, t in spec.get("tables", {}).items()}
        logged: dict[str, Any] = dict(tables)
        for line in spec.get("lines", []):
            logged[line.get("key", f"{line['table']}/{line['y']}")] = self.wandb.plot.line(
                tables[line["table"]], line["x"], line["y"], title=line["title"])
        logged |= media(self.wandb, self.config_dir, spec.get("media", []))
        try:  # an illustration: if it cannot be rendered, the results are logged without it
            logged |= {item["key"]: self.wandb.Audio(item["audio"], sample_rate=item["rate"], caption=item["caption"])
                       for item in self.kind.wandb_audio(self.config_dir, self.plan)}
        except Exception as error:
            log.warning("%s: no example audio on W&B (%s: %s)", self.plan["label"], error.__class__.__name__, error)
        self._row(logged)
        for key, value in spec.get("summary", {}).items():
            self.run.summary[key] = value
        for artifact in spec.get("artifacts", []):
            log_artifact(self.wandb, self.run, self.config_dir, artifact)
        self.final = True
        self.save_state()

    def _finish(self) -> dict[str, Any]:
        info = run_info(self.run, self.mode)
        self.run.finish()
        self.save_state()
        if self.mode == "offline" and self.final:
            log.info("W&B offline run written to %s; upload it with `%s`", info["run_dir"], info["sync"])
        return info


def media(wandb: Any, directory: Path, items: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The spec's media that exist on disk: {"key", "path" (relative to the directory), "type": audio | image,
    "caption"}; a missing file is skipped (the results say why it is absent)."""
    logged: dict[str, Any] = {}
    for item in items:
        path = Path(directory) / item["path"]
        if not path.is_file():
            continue
        if item["type"] == "audio":
            import soundfile

            audio, rate = soundfile.read(path, dtype="float32")
            logged[item["key"]] = wandb.Audio(audio, sample_rate=rate, caption=item.get("caption"))
        else:
            logged[item["key"]] = wandb.Image(str(path), caption=item.get("caption"))
    return logged


def log_artifact(wandb: Any, run: Any, directory: Path, spec: Mapping[str, Any]) -> None:
    """An artifact of result files ({"name", "type", "files": [relative paths], "references": [absolute paths],
    "metadata"}); references are recorded with their checksums, not copied (a checkpoint stays where it is)."""
    artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "-", spec["name"])[:128], type=spec["type"],
                              metadata=dict(spec.get("metadata", {})))
    for name in spec.get("files", []):
        if (Path(directory) / name).is_file():
            artifact.add_file(str(Path(directory) / name), name=name)
    for path in spec.get("references", []):
        if Path(path).is_file():
            artifact.add_reference(Path(path).resolve().as_uri(), name=Path(path).name)
    run.log_artifact(artifact)


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
    """Log a reduced config to W&B in one go (resuming its run: progress rows not yet logged, then results)."""
    run = open_config_run(config_dir, logger_cfg, sweep_name)
    if run is None:
        return None
    try:
        run.log_results()
    finally:
        info = run.finish()
    return info
