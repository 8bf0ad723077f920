"""The W&B run of a training command (job_type train), logged from the files training wrote (files are the truth).

Rows per epoch (loss, validation accuracy, learning rate, epoch, training seconds, share of the time budget used)
and per budget stop (the epoch and batch where the budget stopped training); summary: the clean test accuracy of
f, the best validation accuracy, why it stopped, where (epoch, batch), the budget used, the noise augmentation,
the best checkpoint's path and SHA-256; an artifact referencing the checkpoint (recorded by its checksum, never
copied). The run's id and the checkpoint's digest go to ``wandb_run.json`` beside the checkpoint: a certification
of that checkpoint links its run to this one. W&B trouble costs nothing but the run (one warning).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.provenance import atomic_write_json
from audiocert.tracking import RUN_FILE, init_run, logging_failed, logging_off, read_run_file, run_info

log = logging.getLogger(__name__)
TRAINING_GRACE_S = 8.0  # how long a finished `train` waits for its W&B run (offline: about 3 s); then it goes on alone


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def training_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per epoch, then one per budget stop, in training order."""
    budget_s = float(metrics["max_minutes"]) * 60 if metrics.get("max_minutes") else None
    steps = metrics.get("steps_per_epoch")
    rows = []
    for entry in metrics.get("history", []):
        row = {"train/epoch": entry["epoch"] + 1, "train/loss": entry["loss"],
               "train/val_accuracy": entry["val_accuracy"], "train/lr": entry["lr"],
               "train/seconds": entry["elapsed_s"], "train/batch": steps, "train/steps_per_epoch": steps}
        if budget_s:
            row["train/budget_used"] = entry["elapsed_s"] / budget_s
        rows.append(row)
    for stop in metrics.get("budget_stops", []):
        row = {"train/epoch": stop["epoch"] + 1, "train/batch": stop["step"], "train/loss": stop["loss"],
               "train/val_accuracy": stop["val_accuracy"], "train/seconds": stop["train_seconds"],
               "train/stopped_by_budget": 1}
        if budget_s:
            row["train/budget_used"] = stop["train_seconds"] / budget_s
        rows.append(row)
    return rows


def training_summary(metrics: Mapping[str, Any], checkpoint: Path, digest: str) -> dict[str, Any]:
    augment = metrics.get("augment") or {}
    budget_s = float(metrics["max_minutes"]) * 60 if metrics.get("max_minutes") else None
    position = metrics.get("position") or {}
    return {"clean_test_accuracy": metrics["clean_test_accuracy"], "best_val_accuracy": metrics["best_val_accuracy"],
            "epochs_run": metrics["epochs_run"], "stop_reason": metrics["stop_reason"],
            "stopped_by_budget": bool(metrics.get("stopped_by_budget")), "position/epoch": position.get("epoch"),
            "position/batch": position.get("step"), "steps_done": metrics.get("steps_done"),
            "train_seconds": metrics["train_seconds"], "max_minutes": metrics.get("max_minutes"),
            "budget_used": metrics["train_seconds"] / budget_s if budget_s else None,
            "augment/stage": augment.get("stage") or "none", "augment/sigma": float(augment.get("sigma") or 0.0),
            "best_checkpoint/path": str(checkpoint), "best_checkpoint/sha256": digest,
            "best_checkpoint/epoch": (metrics.get("best_checkpoint") or {}).get("epoch"),
            "best_checkpoint/batch": (metrics.get("best_checkpoint") or {}).get("step")}


def log_training_run(output_dir: str | Path, metrics: Mapping[str, Any], logger_cfg: Mapping[str, Any] | None,
                     config: Mapping[str, Any], run_name: str) -> dict[str, Any] | None:
    """Log a finished training command's run (see the module doc); None when disabled or W&B cannot."""
    if not logger_cfg or logger_cfg.get("mode", "offline") == "disabled" or logging_off():
        return None
    try:
        import wandb

        output_dir = Path(output_dir)
        checkpoint = Path(metrics["checkpoint"])
        digest = sha256_of(checkpoint)
        if read_run_file(output_dir).get("checkpoint_sha256") == digest:
            return read_run_file(output_dir)  # this checkpoint's run is logged (a rerun that found it trained)
        run = init_run(wandb, logger_cfg, Path(logger_cfg.get("dir") or output_dir), group="train",
                       job_type="train", name=run_name,
                       id=re.sub(r"[^A-Za-z0-9_-]", "-", f"train-{run_name}-{digest[:16]}")[:64],
                       config=dict(config) | {"checkpoint_sha256": digest})
        for step, row in enumerate(training_rows(metrics)):
            run.log(row, step=step)
        for key, value in training_summary(metrics, checkpoint, digest).items():
            run.summary[key] = value
        artifact = wandb.Artifact(f"checkpoint-{digest[:16]}", type="model",
                                  metadata={"sha256": digest, "path": str(checkpoint), "run_name": run_name,
                                            "clean_test_accuracy": metrics["clean_test_accuracy"]})
        artifact.add_reference(checkpoint.resolve().as_uri(), name=checkpoint.name)
        run.log_artifact(artifact)
        info = run_info(run, logger_cfg.get("mode", "offline"))
        run.finish()
        atomic_write_json(output_dir / RUN_FILE, {**info, "checkpoint": str(checkpoint), "checkpoint_sha256": digest,
                                                  "updated_at": time.time()})
        return info
    except Exception as error:
        logging_failed("logging the training run", error)
        return None


def log_training_command(cfg: Any, metrics: Mapping[str, Any]) -> None:
    """The training run of a `train` command's composed config (its logger group says where, or disabled), logged
    by a child process: the command waits ``TRAINING_GRACE_S`` at most (W&B unreachable: wandb.init would wait
    ``init_timeout_s``), then leaves it to catch up or give up on its own, its output in wandb_training.log."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = resolved.pop("logger", None)
    if not logger or logger.get("mode", "offline") == "disabled":
        return
    output_dir = Path(cfg.output_dir)
    payload = json.dumps({"output_dir": str(output_dir), "metrics": metrics, "logger": logger, "config": resolved,
                          "run_name": str(cfg.run_name)}, default=str)
    try:
        with open(output_dir / "wandb_training.log", "w") as out:
            child = subprocess.Popen([sys.executable, "-m", "audiocert.tracking_training"], stdin=subprocess.PIPE,
                                     stdout=out, stderr=out, text=True, start_new_session=True)
        child.stdin.write(payload)
        child.stdin.close()
        child.wait(TRAINING_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("W&B: the training run is still being logged in the background (W&B slow or unreachable); "
                    "the model and metrics.json are written. Its output: %s", output_dir / "wandb_training.log")
    except OSError as error:
        logging_failed("starting the training run's logger", error)


def main() -> None:
    """``python -m audiocert.tracking_training``: log the training run described by the JSON on stdin."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    job = json.loads(sys.stdin.read())
    log_training_run(job["output_dir"], job["metrics"], job["logger"], job["config"], job["run_name"])


if __name__ == "__main__":
    main()
