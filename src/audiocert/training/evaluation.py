"""Accuracy: on the validation crops after an epoch (timed, for the budget's reserve) and of best.pt on the test set."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from audiocert.checkpoint import read_checkpoint
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.training import augment, budget
from audiocert.training.budget import BudgetTimer, batches
from audiocert.training.trainer import Trainer


@torch.inference_mode()
def evaluate(model: nn.Module, frontend: DeepSpeakerFrontend, dataset: Any, device: torch.device,
             batch_size: int, stage: str | None = None, sigma: float = 0.0) -> float:
    """Accuracy of ``model`` on ``dataset`` (noise at ``stage`` when sigma > 0)."""
    model.eval()
    correct = total = 0
    for waveform, label in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(augment.model_inputs(frontend, waveform.to(device), stage, sigma))
        correct += int((logits.argmax(1).cpu() == label).sum())
        total += len(label)
    return correct / max(total, 1)


def validate(trainer: Trainer, timer: BudgetTimer) -> float:
    """Validation accuracy of the model; the time it took per batch goes to ``timer``."""
    began = budget.clock()
    accuracy = evaluate(trainer.model, trainer.frontend, trainer.validation, trainer.device, trainer.batch_size)
    timer.eval_s_per_batch = (budget.clock() - began) / max(batches(trainer.validation, trainer.batch_size), 1)
    return accuracy


def test_best_model(trainer: Trainer) -> tuple[float, dict[str, Any]]:
    """Clean test accuracy of the model in best.pt (loaded into ``trainer.model``), and best.pt's content."""
    best = trainer.best
    if not best.is_file():
        raise RuntimeError(f"no checkpoint was written to {best}: train.epochs={trainer.cfg.train.epochs} ran no epoch")
    state = read_checkpoint(best, trainer.device, required=("model", "metrics"))
    trainer.model.load_state_dict(state["model"])
    return evaluate(trainer.model, trainer.frontend, trainer.bundle.test, trainer.device, trainer.batch_size), state
