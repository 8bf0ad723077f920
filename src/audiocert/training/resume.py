"""What an earlier command left in the output directory: a finished model (nothing to do), or a last.pt to continue
from exactly where it stopped. A corrupt checkpoint is renamed to ``<name>.corrupt-<timestamp>`` with a warning, and
training starts afresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from audiocert.checkpoint import CorruptCheckpointError, architecture_mismatch, error_reason, read_checkpoint, set_aside
from audiocert.model import ARCHITECTURE
from audiocert.provenance import read_json
from audiocert.training.finished import config_changes, finished_training, nothing_left_to_train
from audiocert.training.trainer import Trainer, TrainingState

log = logging.getLogger("audiocert.train")  # the name training's log lines have always carried

# What resuming takes from last.pt: a last.pt without them is damaged, and is set aside rather than trusted.
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "config", "metrics")


def set_corrupt_aside(path: Path, problem: str, consequence: str) -> None:
    """Rename a corrupt checkpoint out of the way (never delete it) with one warning that names it and what follows."""
    log.warning("%s; moved it aside to %s and %s", problem, set_aside(path), consequence)


def resumable_state(last: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The content of ``last`` when training can continue from it, else None with a warning saying why."""
    if not last.is_file():
        return None
    try:
        state = read_checkpoint(last, "cpu", required=RESUME_KEYS)  # the optimizer moves its state to the device
        if not (isinstance(state["config"], dict) and isinstance(state["metrics"], dict)):
            raise CorruptCheckpointError(f"{last} is not a training checkpoint: its config or metrics is no dict")
    except CorruptCheckpointError as error:
        set_corrupt_aside(last, str(error), "training from scratch")
        return None
    if (other := architecture_mismatch(state)) is not None:
        log.warning("%s holds a %s model, not %s: training from scratch", last, other, ARCHITECTURE)
        return None
    if changed := config_changes(state["config"], resolved):
        log.warning("%s was trained under another config (%s): training from scratch", last, ", ".join(changed))
        return None
    return state


def earlier_run(
    output_dir: Path, resolved: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """What an earlier command left in ``output_dir`` for the config ``resolved``: (its metrics, None) when it
    already trained this config's model; else (None, the content of the last.pt to continue from, or None)."""
    last, best = output_dir / "last.pt", output_dir / "best.pt"
    best_state, best_lost = None, False
    if best.is_file():
        try:
            best_state = read_checkpoint(best, "cpu", required=("config", "metrics"))
        except CorruptCheckpointError as error:
            set_corrupt_aside(best, str(error), "training from scratch")
            best_lost = True
    if (done := finished_training(output_dir, best_state, resolved)) is not None:
        why = nothing_left_to_train(done, resolved["train"]) if best_state["config"] != resolved else None
        if why is None and done.get("stopped_by_budget"):
            why = ("it was stopped by this time budget; a larger train.max_minutes (or null) continues at the "
                   "batch where it stopped")
        log.info("%s already holds this config's trained model (clean test accuracy %.4f): nothing to do%s; "
                 "set train.resume=false to train it again", output_dir, done["clean_test_accuracy"],
                 f" ({why})" if why else "")
        return done, None
    state = resumable_state(last, resolved)
    if state is not None and best_state is None:
        # last.pt's best validation accuracy is that of the model in best.pt: resuming without it could end
        # with no best model at all.
        if not best_lost:  # a lost best.pt has had its warning already
            log.warning("%s cannot be resumed without %s: training from scratch", last, best)
        state = None
    return None, state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def time_spent_before(output_dir: Path, state: dict[str, Any]) -> float:
    """Training seconds of the commands before this one: last.pt's count, or metrics.json's when that file closed the
    command that wrote last.pt (it then includes that command's final test pass too)."""
    spent = float(state["metrics"].get("train_seconds", 0.0))
    try:
        summary = read_json(output_dir / "metrics.json")
    except (OSError, ValueError):
        return spent
    steps = state["metrics"].get("steps_done")
    if steps is None or summary.get("steps_done") != steps:  # metrics.json of another command
        return spent
    return max(spent, float(summary.get("train_seconds", 0.0)))


def saved_position(saved: dict[str, Any], steps_per_epoch: int) -> TrainingState:
    """The position and counters recorded in last.pt's content ``saved`` (raises when they are damaged)."""
    m = saved["metrics"]
    done_epoch, done_step = int(saved["epoch"]), saved.get("step")
    # Without a step (an older last.pt) the epoch was complete; a complete epoch continues at the next one.
    complete = done_step is None or int(done_step) >= steps_per_epoch
    return TrainingState(
        epoch=done_epoch + 1 if complete else done_epoch, step=0 if complete else int(done_step),
        best_accuracy=float(m["best_val_accuracy"]),
        best_epoch_accuracy=float(m.get("best_epoch_val_accuracy", m["best_val_accuracy"])),
        stale=int(m["stale_epochs"]), history=list(m["history"]), steps_done=int(m.get("steps_done", 0)),
        running=float(m.get("partial", {}).get("loss_sum", 0.0)) if not complete else 0.0,
        seen=int(m.get("partial", {}).get("seen", 0)) if not complete else 0,
        budget_stops=list(m.get("budget_stops", [])),
    )


def resume(trainer: Trainer, saved: dict[str, Any]) -> TrainingState:
    """Continue from last.pt's content ``saved``: its weights, optimizer, LR scheduler, RNG states and position.
    A last.pt that is readable but does not fit this config is set aside, and training starts afresh."""
    last = trainer.last
    try:
        state = saved_position(saved, trainer.steps_per_epoch)
        trainer.model.load_state_dict(saved["model"])
        trainer.optimizer.load_state_dict(saved["optimizer"])
        trainer.scheduler.load_state_dict(saved["scheduler"])
        if isinstance(saved.get("rng"), dict):  # absent in an older last.pt: the noise to come then differs
            # The noise and dropout of the batches to come are those an uninterrupted run would draw.
            restore_rng_state(saved["rng"], trainer.device)
    except Exception as error:  # readable but damaged: the weights or counters do not fit this config
        set_corrupt_aside(last, f"{last} is damaged: its contents do not fit this config ({error_reason(error)})",
                          "training from scratch")
        trainer.restart_model()  # a failed load_state_dict may have copied some tensors already
        return TrainingState()
    state.spent_before = time_spent_before(trainer.output_dir, saved)
    log.info("resuming from %s at epoch %d%s", last, state.epoch + 1,
             f", batch {state.step + 1}/{trainer.steps_per_epoch}" if state.step else "")
    return state
