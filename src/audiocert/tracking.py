"""Weights & Biases logging: one run per config, written by whoever finalises it (never by the shards).

The run (group = sweep name, job_type = certify, id derived from sweep and config hash) gets the resolved
config, the sweep's progress as shards finished (replayed from the shard files' finish times, so the
same history appears whether the reducer ran locally or as a SLURM job), the certified-accuracy-vs-radius
curve as a table and a line plot, and summary metrics at the seed's radii. Offline mode needs no network;
``wandb sync <dir>`` uploads later (the command is printed and saved in wandb_run.json).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.provenance import atomic_write_json, read_json
from audiocert.reducer import inventory
from audiocert.shards import PLAN_FILE

log = logging.getLogger(__name__)


def run_id(sweep_name: str, config_hash: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"{sweep_name}-{config_hash}")[:64]


def log_config_run(config_dir: Path, logger_cfg: Mapping[str, Any], sweep_name: str) -> dict[str, Any] | None:
    """Log a reduced config to W&B; returns what was recorded in wandb_run.json (None when disabled)."""
    mode = logger_cfg.get("mode", "offline")
    if mode == "disabled":
        return None
    if mode not in ("offline", "online"):
        raise ValueError(f"logger.mode={mode!r}: choose offline, online or disabled")
    import wandb

    plan = read_json(config_dir / PLAN_FILE)
    summary = read_json(config_dir / "summary.json")
    wandb_dir = Path(logger_cfg.get("dir") or config_dir.parent)  # wandb adds its own wandb/ folder
    wandb_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(
        project=logger_cfg.get("project", "audiocert"), entity=logger_cfg.get("entity"), dir=str(wandb_dir),
        mode=mode, group=sweep_name, job_type="certify", name=plan["label"],
        id=run_id(sweep_name, plan["config_hash"]), resume="allow", reinit="create_new",
        config=plan["config"] | {"config_hash": plan["config_hash"], "code_version": plan["code_version"]},
        tags=[summary["stage"], f"sigma={summary['sigma']:g}", summary["dataset"]],
        settings=wandb.Settings(console="off", x_disable_stats=True),
    )
    try:
        records = sorted(inventory(config_dir, plan).records.values(), key=lambda r: r["finished_at"])
        total, started = len(plan["shards"]), min((r["finished_at"] - r["elapsed_s"] for r in records), default=0)
        samples = 0
        for step, record in enumerate(records, start=1):
            samples += record["samples"]
            wall = max(record["finished_at"] - started, 1e-9)
            run.log({"progress/shards_done": step, "progress/fraction_done": step / total,
                     "progress/samples": samples, "progress/samples_per_s": samples / wall,
                     "progress/wall_s": wall}, step=step)
        with open(config_dir / "curve.csv") as handle:
            rows = [[float(r["radius"]), float(r["certified_accuracy"])] for r in csv.DictReader(handle)]
        table = wandb.Table(columns=["radius", "certified_accuracy"], data=rows)
        run.log({"certified_accuracy_curve": wandb.plot.line(
            table, "radius", "certified_accuracy",
            title=f"certified accuracy vs radius ({plan['label']})")}, step=len(records) + 1)
        for radius, value in summary["certified_accuracy"].items():
            run.summary[f"certified_accuracy/r={radius}"] = value
        for key in ("smoothed_accuracy", "abstain_fraction", "predict_accuracy", "max_certifiable_radius",
                    "median_radius_certified", "median_snr_db", "samples", "shard_seconds"):
            run.summary[key] = summary[key]
        run_dir = Path(run.dir).parent
        info = {"mode": mode, "run_id": run.id, "run_dir": str(run_dir), "project": run.project,
                "sync": f"wandb sync {run_dir}" if mode == "offline" else None}
    finally:
        run.finish()
    atomic_write_json(config_dir / "wandb_run.json", info)
    if mode == "offline":
        log.info("W&B offline run written to %s; upload it with `%s`", run_dir, info["sync"])
    return info
