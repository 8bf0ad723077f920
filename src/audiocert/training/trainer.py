"""What a training command works with (:class:`Trainer`: data, frontend, model, optimizer, LR scheduler) and where
it stands (:class:`TrainingState`: position, counters, model selection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from audiocert.checkpoint import build_frontend, build_model
from audiocert.data import CropDataset, DataBundle, build_datasets
from audiocert.devices import resolve_device
from audiocert.external import ChainFrontend, is_external
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.model import ResCNN
from audiocert.training.budget import BudgetTimer, batches


@dataclass
class TrainingState:
    """Where training stands: the next batch is batch ``step`` of epoch ``epoch``; the counters; the selection."""

    epoch: int = 0
    step: int = 0
    steps_done: int = 0
    stale: int = 0  # epochs since the last validation gain
    best_epoch_accuracy: float = -1.0  # best validation accuracy after a whole epoch: drives patience and the LR
    best_accuracy: float = -1.0  # validation accuracy of the model in best.pt (a budget-stopped partial epoch's too)
    running: float = 0.0  # loss sum over the batches of this epoch so far
    seen: int = 0  # crops of this epoch so far
    history: list[dict[str, float]] = field(default_factory=list)
    budget_stops: list[dict[str, Any]] = field(default_factory=list)
    spent_before: float = 0.0  # training seconds of the commands before this one

    def train_seconds(self, timer: BudgetTimer) -> float:
        """Training seconds of this model so far, over every command that trained it."""
        return self.spent_before + timer.elapsed()

    def mean_loss(self) -> float:
        return self.running / max(self.seen, 1)

    def metrics(self, timer: BudgetTimer, partial: bool) -> dict[str, Any]:
        """The metrics a checkpoint records; ``partial``: with the loss of the epoch stopped part way."""
        metrics = {"best_val_accuracy": self.best_accuracy, "best_epoch_val_accuracy": self.best_epoch_accuracy,
                   "stale_epochs": self.stale, "history": self.history, "steps_done": self.steps_done,
                   "train_seconds": self.train_seconds(timer), "budget_stops": self.budget_stops}
        if partial:
            metrics["partial"] = {"loss_sum": self.running, "seen": self.seen}
        return metrics


def new_model_and_optimizer(
    cfg: DictConfig, num_classes: int, device: torch.device
) -> tuple[ResCNN, torch.optim.Adam, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """A freshly initialised model with its optimizer and LR scheduler."""
    model = build_model(cfg.model, num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.train.lr))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=int(cfg.train.lr_patience)
    )
    return model, optimizer, scheduler


@dataclass
class Trainer:
    """The config, its output directory, the data, the frontend and the model with its optimizer and LR scheduler."""

    cfg: DictConfig
    resolved: dict[str, Any]  # cfg resolved: what the checkpoints record
    output_dir: Path
    device: torch.device
    bundle: DataBundle
    validation: CropDataset
    frontend: DeepSpeakerFrontend
    initial_rng: torch.Tensor  # the CPU RNG state the model was initialised from
    model: ResCNN
    optimizer: torch.optim.Adam
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    batch_size: int
    steps_per_epoch: int
    eval_batches: int  # one validation pass and the final test pass

    @property
    def last(self) -> Path:
        return self.output_dir / "last.pt"

    @property
    def best(self) -> Path:
        return self.output_dir / "best.pt"

    def restart_model(self) -> None:
        """Rebuild the model from its initial weights (a failed load_state_dict may have copied some tensors)."""
        torch.set_rng_state(self.initial_rng)
        self.model, self.optimizer, self.scheduler = new_model_and_optimizer(
            self.cfg, len(self.bundle.speakers), self.device)


def set_up(cfg: DictConfig, resolved: dict[str, Any], output_dir: Path) -> Trainer:
    """Seed, thread count, device, datasets, frontend and a freshly initialised model, in that order (the RNG
    draws of a run follow it)."""
    torch.manual_seed(int(cfg.seed))
    if cfg.train.get("threads"):
        torch.set_num_threads(int(cfg.train.threads))
    device = resolve_device(cfg.device)
    bundle = build_datasets(cfg.dataset)
    validation = CropDataset(
        bundle.train.utterances, bundle.speakers, int(cfg.dataset.crop_samples),
        int(cfg.train.validation_crops_per_speaker), mode="test", seed=int(cfg.dataset.split_seed) + 1,
        sample_rate=int(cfg.dataset.sample_rate), resample=bool(cfg.dataset.resample),
    )
    frontend = build_frontend(cfg.get("frontend")).to(device)
    if is_external(cfg.model):  # a user's network takes the chain at its input stage (augmented at or before it)
        frontend = ChainFrontend(frontend, str(cfg.model.get("input") or "waveform"))
    initial_rng = torch.get_rng_state()  # a resume that fails starts from the weights a fresh run would have
    model, optimizer, scheduler = new_model_and_optimizer(cfg, len(bundle.speakers), device)
    batch_size = int(cfg.train.batch_size)
    return Trainer(
        cfg=cfg, resolved=resolved, output_dir=output_dir, device=device, bundle=bundle, validation=validation,
        frontend=frontend, initial_rng=initial_rng, model=model, optimizer=optimizer, scheduler=scheduler,
        batch_size=batch_size, steps_per_epoch=batches(bundle.train, batch_size),
        eval_batches=batches(validation, batch_size) + batches(bundle.test, batch_size),
    )
