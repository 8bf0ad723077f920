"""``run_training``: the training command, composed of its parts (see the package docstring)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from audiocert.training import budget
from audiocert.training.budget import BudgetTimer
from audiocert.training.config import check_train_config
from audiocert.training.evaluation import test_best_model
from audiocert.training.loop import train_epochs
from audiocert.training.resume import earlier_run, resume
from audiocert.training.saving import save_results
from audiocert.training.trainer import TrainingState, set_up


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the base classifier of ``cfg``; returns the metrics also written to metrics.json."""
    timer_started = budget.clock()
    check_train_config(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("logger", None)  # where W&B logs is no part of the model: resuming and finding it done ignore it
    saved = None  # the content of the last.pt to continue from
    if cfg.train.resume:
        done, saved = earlier_run(output_dir, resolved)
        if done is not None:
            return done
    trainer = set_up(cfg, resolved, output_dir)
    state = TrainingState() if saved is None else resume(trainer, saved)
    del saved  # a whole model's weights and optimizer state: not kept through training
    budget_minutes = cfg.train.get("max_minutes")
    timer = BudgetTimer(math.inf if budget_minutes is None else float(budget_minutes) * 60 - state.spent_before,
                        started=timer_started)
    stop_reason = train_epochs(trainer, state, timer)
    test_accuracy, best_state = test_best_model(trainer)
    return save_results(trainer, state, timer, stop_reason, test_accuracy, best_state)
