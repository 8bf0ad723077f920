"""What training writes: best.pt (the weights and what certification reads, no optimizer state), last.pt (everything
a rerun needs to continue exactly where this one stopped) and, at the end, metrics.json."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from audiocert.checkpoint import save_checkpoint
from audiocert.provenance import atomic_write_json, code_version
from audiocert.training import budget
from audiocert.training.budget import BudgetTimer
from audiocert.training.trainer import Trainer, TrainingState


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states that dropout and augmentation noise draw from on ``device``."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def model_record(trainer: Trainer, done_epoch: int, done_step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """best.pt: the weights and what certification reads, no optimizer state."""
    return {"model": trainer.model.state_dict(), "epoch": done_epoch, "step": done_step,
            "steps_per_epoch": trainer.steps_per_epoch, "num_classes": len(trainer.bundle.speakers),
            "speakers": list(trainer.bundle.speakers), "config": trainer.resolved, "metrics": metrics,
            "code_version": code_version()}


def save_best(trainer: Trainer, done_epoch: int, done_step: int, metrics: dict[str, Any]) -> None:
    save_checkpoint(trainer.best, model_record(trainer, done_epoch, done_step, metrics))


def save_last(trainer: Trainer, timer: BudgetTimer, done_epoch: int, done_step: int, metrics: dict[str, Any],
              rng: dict[str, torch.Tensor]) -> None:
    """last.pt: best.pt's content with the optimizer, the LR scheduler and ``rng``; the time it took goes to
    ``timer``."""
    began = budget.clock()
    save_checkpoint(trainer.last, {**model_record(trainer, done_epoch, done_step, metrics),
                                   "optimizer": trainer.optimizer.state_dict(),
                                   "scheduler": trainer.scheduler.state_dict(), "rng": rng})
    timer.save_s = budget.clock() - began


def save_results(trainer: Trainer, state: TrainingState, timer: BudgetTimer, stop_reason: str,
                 test_accuracy: float, best_state: dict[str, Any]) -> dict[str, Any]:
    """best.pt (content ``best_state``) with its test accuracy and the config this command finished under, then
    metrics.json; returns the metrics."""
    cfg, best = trainer.cfg, trainer.best
    best_state["metrics"]["clean_test_accuracy"] = test_accuracy
    best_state["config"] = trainer.resolved  # the config this command finished under: rerunning it finds it finished
    for key in ("optimizer", "scheduler", "rng"):  # a best.pt written by an older version held its optimizer too
        best_state.pop(key, None)
    save_checkpoint(best, best_state)
    metrics = {
        "clean_test_accuracy": test_accuracy, "best_val_accuracy": state.best_accuracy,
        "epochs_run": len(state.history), "train_seconds": state.train_seconds(timer), "checkpoint": str(best),
        "best_checkpoint": {"epoch": best_state.get("epoch"), "step": best_state.get("step")},
        "stop_reason": stop_reason, "stopped_by_budget": stop_reason == "budget",
        "max_minutes": cfg.train.get("max_minutes"),
        "position": {"epoch": state.epoch, "step": state.step}, "steps_per_epoch": trainer.steps_per_epoch,
        "steps_done": state.steps_done, "stale_epochs": state.stale,
        "history": state.history, "budget_stops": state.budget_stops,  # what the W&B training run plots
        "dataset": cfg.dataset.name, "model": cfg.model.name, "augment": OmegaConf.to_container(cfg.train.augment),
        "device": str(trainer.device), "code_version": code_version(),
    }
    atomic_write_json(trainer.output_dir / "metrics.json", metrics)
    return metrics
