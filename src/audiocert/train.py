"""Training a base classifier: Adam, LR reduction on plateau, early stopping, optional Gaussian augmentation.

Augmentation adds N(0, sigma^2) noise at a frontend stage (waveform, magspec or mfbe), as the seed's
"augmented" models did: x_stage + sigma * eps -> rest of the frontend -> model. Checkpoints (``last.pt`` every
epoch, ``best.pt`` at the best validation accuracy) hold tensors and plain metadata only, load with
``torch.load(weights_only=True)``, and let a rerun resume where the last one stopped. A corrupt checkpoint (a write
cut short, a damaged disk) is renamed to ``<name>.corrupt-<timestamp>`` with a warning, and training starts afresh.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from audiocert.checkpoint import (
    CorruptCheckpointError,
    architecture_mismatch,
    build_frontend,
    build_model,
    error_reason,
    read_checkpoint,
    save_checkpoint,
    set_aside,
)
from audiocert.data import CropDataset, build_datasets
from audiocert.devices import resolve_device
from audiocert.frontend import DeepSpeakerFrontend
from audiocert.model import ARCHITECTURE, ResCNN
from audiocert.provenance import atomic_write_json, code_version, read_json
from audiocert.stages import STAGES

log = logging.getLogger(__name__)


def check_train_config(cfg: DictConfig) -> None:
    t = cfg.train
    for field in ("epochs", "batch_size", "patience", "lr_patience"):
        if int(t[field]) < 1:
            raise ValueError(f"train.{field}={t[field]} must be a positive integer")
    if not float(t.lr) > 0:
        raise ValueError(f"train.lr={t.lr} must be positive")
    aug = cfg.train.augment
    if aug.stage is not None and aug.stage not in STAGES:
        raise ValueError(f"train.augment.stage={aug.stage!r} must be null or one of {', '.join(STAGES)}")
    if float(aug.sigma) < 0:
        raise ValueError(f"train.augment.sigma={aug.sigma} must be >= 0")


def model_inputs(
    frontend: DeepSpeakerFrontend, waveform: torch.Tensor, stage: str | None, sigma: float
) -> torch.Tensor:
    """Frontend with optional Gaussian augmentation at ``stage``."""
    if stage is None or sigma == 0:
        return frontend(waveform)
    x = frontend.to_stage(waveform, stage)
    return frontend.from_stage(x + sigma * torch.randn_like(x), stage)


@torch.inference_mode()
def evaluate(model: nn.Module, frontend: DeepSpeakerFrontend, dataset: Any, device: torch.device,
             batch_size: int, stage: str | None = None, sigma: float = 0.0) -> float:
    """Accuracy of ``model`` on ``dataset`` (noise at ``stage`` when sigma > 0)."""
    model.eval()
    correct = total = 0
    for waveform, label in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(model_inputs(frontend, waveform.to(device), stage, sigma))
        correct += int((logits.argmax(1).cpu() == label).sum())
        total += len(label)
    return correct / max(total, 1)


# Knobs that say how long to train, not what: a resumed run may change them.
CONTINUATION_KEYS = frozenset({"train.epochs", "train.patience", "train.max_minutes", "train.threads", "train.resume"})


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, continuation knobs left out."""
    changed = []
    for key in sorted(set(old) | set(new)):
        name = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += config_changes(a, b, f"{name}.")
        elif a != b and name not in CONTINUATION_KEYS:
            changed.append(f"{name}: {a!r} -> {b!r}")
    return changed


def finished_training(
    output_dir: Path, best_state: dict[str, Any] | None, resolved: dict[str, Any]
) -> dict[str, Any] | None:
    """The metrics of a finished run of exactly this config and model architecture in ``output_dir``, else None.

    ``best_state`` is the content of its best.pt (None when there is none).
    """
    metrics = output_dir / "metrics.json"
    if best_state is None or not metrics.is_file():
        return None
    if architecture_mismatch(best_state) is not None or best_state.get("config") != resolved:
        return None
    try:
        summary = read_json(metrics)  # written last: it must be this checkpoint's, not an earlier run's
    except ValueError:  # a damaged metrics.json is rewritten by training again, not trusted
        return None
    recorded = best_state.get("metrics")
    accuracy = recorded.get("clean_test_accuracy") if isinstance(recorded, dict) else None
    return summary if accuracy is not None and summary.get("clean_test_accuracy") == accuracy else None


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


def build_trainer(
    cfg: DictConfig, num_classes: int, device: torch.device
) -> tuple[ResCNN, torch.optim.Adam, torch.optim.lr_scheduler.ReduceLROnPlateau]:
    """A freshly initialised model with its optimizer and LR scheduler."""
    model = build_model(cfg.model, num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.train.lr))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=0.5, patience=int(cfg.train.lr_patience)
    )
    return model, optimizer, scheduler


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the base classifier of ``cfg``; returns the metrics also written to metrics.json."""
    check_train_config(cfg)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    last, best = output_dir / "last.pt", output_dir / "best.pt"
    state = None
    if cfg.train.resume:
        best_state, best_lost = None, False
        if best.is_file():
            try:
                best_state = read_checkpoint(best, "cpu", required=("config", "metrics"))
            except CorruptCheckpointError as error:
                set_corrupt_aside(best, str(error), "training from scratch")
                best_lost = True
        if (done := finished_training(output_dir, best_state, resolved)) is not None:
            log.info("%s already holds this config's trained model (clean test accuracy %.4f): nothing to do; "
                     "set train.resume=false to train it again", output_dir, done["clean_test_accuracy"])
            return done
        state = resumable_state(last, resolved)
        if state is not None and best_state is None:
            # last.pt's best validation accuracy is that of the model in best.pt: resuming without it could end
            # with no best model at all.
            if not best_lost:  # a lost best.pt has had its warning already
                log.warning("%s cannot be resumed without %s: training from scratch", last, best)
            state = None
        del best_state  # a whole model's weights; only whether it was there matters from here on
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
    initial_rng = torch.get_rng_state()  # a resume that fails starts from the weights a fresh run would have
    model, optimizer, scheduler = build_trainer(cfg, len(bundle.speakers), device)
    stage, sigma = cfg.train.augment.stage, float(cfg.train.augment.sigma)
    use_amp = device.type == "cuda" and bool(cfg.train.get("amp", True))
    history: list[dict[str, float]] = []
    start_epoch, best_accuracy, stale = 0, -1.0, 0
    if state is not None:
        try:
            resumed = (int(state["epoch"]) + 1, float(state["metrics"]["best_val_accuracy"]),
                       int(state["metrics"]["stale_epochs"]), list(state["metrics"]["history"]))
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as error:  # readable but damaged: the weights or counters do not fit this config
            set_corrupt_aside(last, f"{last} is damaged: its contents do not fit this config ({error_reason(error)})",
                              "training from scratch")
            # A failed load_state_dict may have copied some tensors already: rebuild from the initial weights.
            torch.set_rng_state(initial_rng)
            model, optimizer, scheduler = build_trainer(cfg, len(bundle.speakers), device)
        else:
            start_epoch, best_accuracy, stale, history = resumed
            log.info("resuming from %s at epoch %d", last, start_epoch)
        del state

    def state_dict(epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "epoch": epoch, "num_classes": len(bundle.speakers), "speakers": list(bundle.speakers),
            "config": resolved, "metrics": metrics, "code_version": code_version(),
        }

    budget_s = float(cfg.train.max_minutes) * 60 if cfg.train.get("max_minutes") else math.inf
    started, last_epoch_s = time.monotonic(), 0.0
    for epoch in range(start_epoch, int(cfg.train.epochs)):
        if stale >= int(cfg.train.patience):
            log.info("early stopping: no validation gain for %d epochs", stale)
            break
        # The budget is a limit, not a point to overshoot by an epoch: stop when one more epoch as long as
        # the last one would end past it.
        if time.monotonic() - started + last_epoch_s > budget_s:
            log.info("stopping before epoch %d: it would end past the time budget of %s min", epoch + 1,
                     cfg.train.max_minutes)
            break
        epoch_started = time.monotonic()
        model.train()
        bundle.train.set_epoch(epoch)
        loader = DataLoader(bundle.train, batch_size=int(cfg.train.batch_size), shuffle=True,
                            generator=torch.Generator().manual_seed(int(cfg.seed) * 1000 + epoch))
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False, dynamic_ncols=True)
        for waveform, label in bar:
            waveform, label = waveform.to(device), label.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = nn.functional.cross_entropy(model(model_inputs(frontend, waveform, stage, sigma)), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running, seen = running + loss.item() * len(label), seen + len(label)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        val_accuracy = evaluate(model, frontend, validation, device, int(cfg.train.batch_size))
        last_epoch_s = time.monotonic() - epoch_started
        scheduler.step(val_accuracy)
        improved = val_accuracy > best_accuracy
        best_accuracy, stale = (val_accuracy, 0) if improved else (best_accuracy, stale + 1)
        history.append({"epoch": epoch, "loss": running / max(seen, 1), "val_accuracy": val_accuracy,
                        "lr": optimizer.param_groups[0]["lr"], "elapsed_s": time.monotonic() - started})
        metrics = {"best_val_accuracy": best_accuracy, "stale_epochs": stale, "history": history}
        if improved:
            save_checkpoint(best, state_dict(epoch, metrics))
        save_checkpoint(last, state_dict(epoch, metrics))
        log.info("epoch %d: loss %.4f, validation accuracy %.4f%s", epoch + 1, running / max(seen, 1),
                 val_accuracy, " (best)" if improved else "")

    if not best.is_file():
        raise RuntimeError(f"no checkpoint was written to {best}: train.epochs={cfg.train.epochs} ran no epoch")
    state = read_checkpoint(best, device, required=("model", "metrics"))
    model.load_state_dict(state["model"])
    test_accuracy = evaluate(model, frontend, bundle.test, device, int(cfg.train.batch_size))
    state["metrics"]["clean_test_accuracy"] = test_accuracy
    save_checkpoint(best, state)
    metrics = {
        "clean_test_accuracy": test_accuracy, "best_val_accuracy": best_accuracy, "epochs_run": len(history),
        "train_seconds": history[-1]["elapsed_s"] if history else 0.0, "checkpoint": str(best),
        "dataset": cfg.dataset.name, "model": cfg.model.name, "augment": OmegaConf.to_container(cfg.train.augment),
        "device": str(device), "code_version": code_version(),
    }
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics
