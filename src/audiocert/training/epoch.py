"""One epoch of training batches, in the epoch's fixed order, with Gaussian augmentation noise, until the epoch's
end or until the next batch would no longer fit the time budget."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from audiocert.progress import progress as progress_bar
from audiocert.training import augment, budget
from audiocert.training.budget import BudgetTimer
from audiocert.training.trainer import Trainer, TrainingState


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The order of the training crops in ``epoch``: a permutation seeded by seed * 1000 + epoch, so that a run
    resumed at batch k of an epoch sees the same batches as one that was never stopped."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def train_epoch(trainer: Trainer, state: TrainingState, timer: BudgetTimer) -> bool:
    """Train epoch ``state.epoch`` from its batch ``state.step`` on, moving ``state`` along batch by batch.

    True when it reached the epoch's end; False when the time budget stopped it before the batch ``state.step``.
    """
    cfg, device, model, optimizer = trainer.cfg, trainer.device, trainer.model, trainer.optimizer
    stage, sigma = cfg.train.augment.stage, float(cfg.train.augment.sigma)
    use_amp = device.type == "cuda" and bool(cfg.train.get("amp", True))
    seed, epochs, epoch, batch_size = int(cfg.seed), int(cfg.train.epochs), state.epoch, trainer.batch_size
    model.train()
    trainer.bundle.train.set_epoch(epoch)
    # The loader gets its own generator: drawing its base seed from the global RNG would shift the noise of
    # every later batch by one draw whenever a run is resumed.
    loader = DataLoader(trainer.bundle.train, batch_size=batch_size,
                        sampler=epoch_order(len(trainer.bundle.train), seed, epoch)[state.step * batch_size:],
                        generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    step_began = budget.clock()
    with progress_bar(total=trainer.steps_per_epoch, initial=state.step, desc=f"epoch {epoch + 1}/{epochs}",
                      unit="batches", leave=False) as bar:
        for waveform, label in loader:
            waveform, label = waveform.to(device), label.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = nn.functional.cross_entropy(
                    model(augment.model_inputs(trainer.frontend, waveform, stage, sigma)), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.running, state.seen = state.running + loss.item() * len(label), state.seen + len(label)
            state.step, state.steps_done = state.step + 1, state.steps_done + 1
            now = budget.clock()
            timer.record_step(now - step_began)
            step_began = now
            bar.set_postfix(loss=f"{state.running / state.seen:.3f}")
            bar.update(1)
            if state.step < trainer.steps_per_epoch and not timer.next_step_fits(trainer.eval_batches):
                return False
    return True
