"""Training a base classifier: Adam, LR reduction on plateau, early stopping, optional Gaussian augmentation.

Augmentation adds N(0, sigma^2) noise at a frontend stage (waveform, magspec or mfbe), as the seed's
"augmented" models did: x_stage + sigma * eps -> rest of the frontend -> model.

Checkpoints hold tensors and plain metadata only and load with ``torch.load(weights_only=True)``:
- ``last.pt`` (every epoch, and where a time budget stops training): everything a rerun needs to continue exactly
  where this one stopped: weights, optimizer, LR scheduler, the RNG states, and the position (epoch, and batches of
  it done). The batches of epoch e come in a fixed order (a permutation seeded by seed * 1000 + e), so resuming at
  batch k of epoch e trains the same model as a run that was never interrupted.
- ``best.pt`` (the best validated model): the weights and what certification needs (architecture, config,
  metrics, classes, speakers, epoch, code version); no optimizer state, so it is about a third of last.pt's size.

``train.max_minutes`` is a budget for the training wall time of the model, counted over every command that trained
it (a resumed run gets what the earlier ones left), and including validation and the final test evaluation: training
stops before the batch that would leave too little time for them, saves a resumable last.pt, validates the partial
model and says so. A rerun with a larger budget continues at that batch. A corrupt checkpoint (a write cut short, a
damaged disk) is renamed to ``<name>.corrupt-<timestamp>`` with a warning, and training starts afresh.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader

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
from audiocert.progress import progress
from audiocert.provenance import atomic_write_json, code_version, read_json
from audiocert.settings import check_number
from audiocert.stages import STAGES

log = logging.getLogger(__name__)

clock = time.monotonic  # the time budget's clock (tests replace it)


def check_train_config(cfg: DictConfig) -> None:
    """Refuse a train config with a value out of range, naming the field: every number finite and in range."""
    t = cfg.train
    for name in ("epochs", "batch_size", "patience", "lr_patience", "validation_crops_per_speaker"):
        check_number(t.get(name), f"train.{name}", minimum=1, integer=True)
    check_number(t.get("lr"), "train.lr", above=0)
    check_number(t.get("max_minutes"), "train.max_minutes", above=0, optional=True)  # null: no budget
    check_number(t.get("threads"), "train.threads", minimum=1, integer=True, optional=True)
    for name in ("resume", "amp"):
        if name in t and not isinstance(t[name], bool):
            raise ValueError(f"train.{name}={t[name]!r} must be true or false")
    aug = cfg.train.augment
    if aug.stage is not None and aug.stage not in STAGES:
        raise ValueError(f"train.augment.stage={aug.stage!r} must be null or one of {', '.join(STAGES)}")
    check_number(aug.get("sigma"), "train.augment.sigma", minimum=0)
    # Epoch e shuffles with seed * 1000 + e, and torch takes seeds below 2^63 (signed) here.
    check_number(cfg.get("seed"), "seed", minimum=0, maximum=(2**63 - 1) // 1000 - int(t.epochs), integer=True)


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


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The order of the training crops in ``epoch``: a permutation seeded by seed * 1000 + epoch, so that a run
    resumed at batch k of an epoch sees the same batches as one that was never stopped."""
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The global RNG states that dropout and augmentation noise draw from on ``device``."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


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


def nothing_left_to_train(summary: dict[str, Any], train: dict[str, Any]) -> str | None:
    """Why the run recorded in ``summary`` (metrics.json) would train no further under the continuation knobs of
    ``train`` (the new config's train section), or None when it would.

    A run continues from its position (epoch e, batch k) unless e >= train.epochs, or it sits at an epoch's start
    with patience spent, or the budget is spent: ``train.max_minutes`` counts every command that trained the model,
    so a budget-stopped run is finished for any budget up to the one that stopped it.
    """
    position, stale = summary.get("position"), summary.get("stale_epochs")
    if not isinstance(position, dict) or not isinstance(stale, int):
        return None  # written before positions were recorded: only the exact config counts as finished
    epoch, step = int(position.get("epoch", 0)), int(position.get("step", 0))
    if epoch >= int(train["epochs"]):
        return f"all {train['epochs']} epochs are done"
    if step == 0 and stale >= int(train["patience"]):
        return f"early stopping: no validation gain for {stale} epochs (train.patience={train['patience']})"
    budget, spent = train.get("max_minutes"), float(summary.get("train_seconds", 0.0))
    if budget is not None:
        previous = summary.get("max_minutes")
        if (summary.get("stopped_by_budget") and previous is not None and float(budget) <= float(previous)) or \
                float(budget) * 60 <= spent:
            return (f"the time budget train.max_minutes={budget} is spent ({spent / 60:.2f} min of training so far); "
                    "a larger train.max_minutes (or null) continues at the batch where it stopped")
    return None


def finished_training(
    output_dir: Path, best_state: dict[str, Any] | None, resolved: dict[str, Any]
) -> dict[str, Any] | None:
    """The metrics of a finished run of this config and model architecture in ``output_dir``, else None.

    Finished: best.pt and metrics.json belong to one completed command (same clean test accuracy), and either it ran
    under exactly this config, or only continuation knobs changed and they would train nothing more
    (:func:`nothing_left_to_train`). A budget-stopped run is finished for its budget, not for a larger one.
    ``best_state`` is the content of its best.pt (None when there is none).
    """
    metrics = output_dir / "metrics.json"
    if best_state is None or not metrics.is_file() or architecture_mismatch(best_state) is not None:
        return None
    config = best_state.get("config")
    if not isinstance(config, dict) or (config != resolved and config_changes(config, resolved)):
        return None
    try:
        summary = read_json(metrics)  # written last: it must be this checkpoint's, not an earlier run's
    except ValueError:  # a damaged metrics.json is rewritten by training again, not trusted
        return None
    recorded = best_state.get("metrics")
    accuracy = recorded.get("clean_test_accuracy") if isinstance(recorded, dict) else None
    if accuracy is None or summary.get("clean_test_accuracy") != accuracy:
        return None
    if config == resolved or nothing_left_to_train(summary, resolved["train"]) is not None:
        return summary
    return None


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


@dataclass
class BudgetTimer:
    """What is left of ``train.max_minutes`` and how long the work it must leave room for takes.

    A step is taken only when elapsed + mean step time + reserve <= budget, where the reserve is one validation
    pass, the final test pass and the checkpoint writes: per-batch evaluation time as measured on this run's last
    validation (the mean training step before one has run: a training step does more than an evaluation batch).
    The first step of a command runs whenever the earlier commands left any budget: nothing judges it before, and
    without it there would be no model to validate.
    """

    budget_s: float  # what is left for this command (inf: no budget)
    started: float = field(default_factory=lambda: clock())
    step_s: float = 0.0
    steps: int = 0
    eval_s_per_batch: float | None = None
    save_s: float | None = None

    def elapsed(self) -> float:
        return clock() - self.started

    def record_step(self, seconds: float) -> None:
        self.step_s, self.steps = self.step_s + seconds, self.steps + 1

    def reserve_s(self, eval_batches: int) -> float:
        """Seconds kept for ``eval_batches`` evaluation batches and three checkpoint writes."""
        mean_step = self.step_s / max(self.steps, 1)
        per_batch = mean_step if self.eval_s_per_batch is None else self.eval_s_per_batch
        return eval_batches * per_batch + 3 * (self.save_s if self.save_s is not None else 0.5)

    def next_step_fits(self, eval_batches: int) -> bool:
        if math.isinf(self.budget_s):
            return True
        if self.steps == 0:
            return self.budget_s > 0
        return self.elapsed() + self.step_s / self.steps + self.reserve_s(eval_batches) <= self.budget_s


def batches(dataset: Any, batch_size: int) -> int:
    return math.ceil(len(dataset) / batch_size)


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


def run_training(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train (or resume) the base classifier of ``cfg``; returns the metrics also written to metrics.json."""
    timer_started = clock()
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
            why = nothing_left_to_train(done, resolved["train"]) if best_state["config"] != resolved else None
            if why is None and done.get("stopped_by_budget"):
                why = ("it was stopped by this time budget; a larger train.max_minutes (or null) continues at the "
                       "batch where it stopped")
            log.info("%s already holds this config's trained model (clean test accuracy %.4f): nothing to do%s; "
                     "set train.resume=false to train it again", output_dir, done["clean_test_accuracy"],
                     f" ({why})" if why else "")
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
    batch_size, seed, epochs = int(cfg.train.batch_size), int(cfg.seed), int(cfg.train.epochs)
    steps_per_epoch = batches(bundle.train, batch_size)
    eval_batches = batches(validation, batch_size) + batches(bundle.test, batch_size)

    # The training state: position (the next batch is batch `step` of epoch `epoch`), counters, selection.
    history: list[dict[str, float]] = []
    epoch = step = steps_done = stale = 0
    best_epoch_accuracy = -1.0  # best validation accuracy after a whole epoch: drives patience and the LR
    best_accuracy = -1.0  # validation accuracy of the model in best.pt (a budget-stopped partial epoch's included)
    running, seen, spent_before = 0.0, 0, 0.0
    budget_stops: list[dict[str, Any]] = []
    if state is not None:
        try:
            m = state["metrics"]
            done_epoch, done_step = int(state["epoch"]), state.get("step")
            # Without a step (an older last.pt) the epoch was complete; a complete epoch continues at the next one.
            complete = done_step is None or int(done_step) >= steps_per_epoch
            resumed = dict(
                epoch=done_epoch + 1 if complete else done_epoch, step=0 if complete else int(done_step),
                best_accuracy=float(m["best_val_accuracy"]),
                best_epoch_accuracy=float(m.get("best_epoch_val_accuracy", m["best_val_accuracy"])),
                stale=int(m["stale_epochs"]), history=list(m["history"]), steps_done=int(m.get("steps_done", 0)),
                running=float(m.get("partial", {}).get("loss_sum", 0.0)) if not complete else 0.0,
                seen=int(m.get("partial", {}).get("seen", 0)) if not complete else 0,
                budget_stops=list(m.get("budget_stops", [])),
            )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if isinstance(state.get("rng"), dict):  # absent in an older last.pt: the noise to come then differs
                # The noise and dropout of the batches to come are those an uninterrupted run would draw.
                restore_rng_state(state["rng"], device)
        except Exception as error:  # readable but damaged: the weights or counters do not fit this config
            set_corrupt_aside(last, f"{last} is damaged: its contents do not fit this config ({error_reason(error)})",
                              "training from scratch")
            # A failed load_state_dict may have copied some tensors already: rebuild from the initial weights.
            torch.set_rng_state(initial_rng)
            model, optimizer, scheduler = build_trainer(cfg, len(bundle.speakers), device)
        else:
            epoch, step, steps_done = resumed["epoch"], resumed["step"], resumed["steps_done"]
            best_accuracy, best_epoch_accuracy = resumed["best_accuracy"], resumed["best_epoch_accuracy"]
            stale, history, budget_stops = resumed["stale"], resumed["history"], resumed["budget_stops"]
            running, seen = resumed["running"], resumed["seen"]
            spent_before = time_spent_before(output_dir, state)
            log.info("resuming from %s at epoch %d%s", last, epoch + 1,
                     f", batch {step + 1}/{steps_per_epoch}" if step else "")
        del state

    budget_minutes = cfg.train.get("max_minutes")
    timer = BudgetTimer(math.inf if budget_minutes is None else float(budget_minutes) * 60 - spent_before,
                        started=timer_started)

    def seconds_so_far() -> float:
        return spent_before + timer.elapsed()

    def metrics_now(partial: bool) -> dict[str, Any]:
        metrics = {"best_val_accuracy": best_accuracy, "best_epoch_val_accuracy": best_epoch_accuracy,
                   "stale_epochs": stale, "history": history, "steps_done": steps_done,
                   "train_seconds": seconds_so_far(), "budget_stops": budget_stops}
        if partial:
            metrics["partial"] = {"loss_sum": running, "seen": seen}
        return metrics

    def model_record(done_epoch: int, done_step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """best.pt: the weights and what certification reads, no optimizer state."""
        return {"model": model.state_dict(), "epoch": done_epoch, "step": done_step,
                "steps_per_epoch": steps_per_epoch, "num_classes": len(bundle.speakers),
                "speakers": list(bundle.speakers), "config": resolved, "metrics": metrics,
                "code_version": code_version()}

    def save_last(done_epoch: int, done_step: int, metrics: dict[str, Any], rng: dict[str, torch.Tensor]) -> None:
        began = clock()
        save_checkpoint(last, {**model_record(done_epoch, done_step, metrics), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "rng": rng})
        timer.save_s = clock() - began

    def validate() -> float:
        began = clock()
        accuracy = evaluate(model, frontend, validation, device, batch_size)
        timer.eval_s_per_batch = (clock() - began) / max(batches(validation, batch_size), 1)
        return accuracy

    stop_reason = ""
    saved_position = (epoch, step)  # where last.pt (if any) resumes: nothing to save while it is still here
    while True:
        if epoch >= epochs:
            stop_reason = "epochs"
            break
        if step == 0 and stale >= int(cfg.train.patience):
            log.info("early stopping: no validation gain for %d epochs", stale)
            stop_reason = "early_stopping"
            break
        if not timer.next_step_fits(eval_batches):
            stop_reason = "budget"
            break
        model.train()
        bundle.train.set_epoch(epoch)
        # The loader gets its own generator: drawing its base seed from the global RNG would shift the noise of
        # every later batch by one draw whenever a run is resumed.
        loader = DataLoader(bundle.train, batch_size=batch_size,
                            sampler=epoch_order(len(bundle.train), seed, epoch)[step * batch_size:],
                            generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        step_began = clock()
        with progress(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{epochs}", unit="batches",
                      leave=False) as bar:
            for waveform, label in loader:
                waveform, label = waveform.to(device), label.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss = nn.functional.cross_entropy(model(model_inputs(frontend, waveform, stage, sigma)), label)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running, seen = running + loss.item() * len(label), seen + len(label)
                step, steps_done = step + 1, steps_done + 1
                now = clock()
                timer.record_step(now - step_began)
                step_began = now
                bar.set_postfix(loss=f"{running / seen:.3f}")
                bar.update(1)
                if step < steps_per_epoch and not timer.next_step_fits(eval_batches):
                    stop_reason = "budget"
                    break
        if stop_reason:
            break
        val_accuracy = validate()
        scheduler.step(val_accuracy)
        improved = val_accuracy > best_epoch_accuracy
        best_epoch_accuracy, stale = (val_accuracy, 0) if improved else (best_epoch_accuracy, stale + 1)
        history.append({"epoch": epoch, "loss": running / max(seen, 1), "val_accuracy": val_accuracy,
                        "lr": optimizer.param_groups[0]["lr"], "elapsed_s": seconds_so_far()})
        if (new_best := val_accuracy > best_accuracy):
            best_accuracy = val_accuracy
            save_checkpoint(best, model_record(epoch, step, metrics_now(partial=False)))
        # Saved after validation: the RNG state is the one the next epoch starts from in an uninterrupted run.
        save_last(epoch, step, metrics_now(partial=False), rng_state(device))
        log.info("epoch %d: loss %.4f, validation accuracy %.4f%s", epoch + 1, running / max(seen, 1),
                 val_accuracy, " (best)" if new_best else "")
        epoch, step, running, seen = epoch + 1, 0, 0.0, 0
        saved_position = (epoch, step)

    stopped_by_budget = stop_reason == "budget"
    if stopped_by_budget:
        note, reserve_s = "", timer.reserve_s(eval_batches)
        if (epoch, step) != saved_position:  # batches trained since last.pt was written: keep them
            rng = rng_state(device)  # before validating: an uninterrupted run's next batch draws from here
            val_accuracy = validate()
            budget_stops.append({"epoch": epoch, "step": step, "val_accuracy": val_accuracy,
                                 "loss": running / max(seen, 1), "train_seconds": seconds_so_far()})
            improved = val_accuracy > best_accuracy
            if improved:
                best_accuracy = val_accuracy
                save_checkpoint(best, model_record(epoch, step, metrics_now(partial=True)))
            save_last(epoch, step, metrics_now(partial=True), rng)
            note = f"; validation accuracy of the partial model {val_accuracy:.4f}{' (best)' if improved else ''}"
        where = f"batch {step + 1}/{steps_per_epoch} of epoch {epoch + 1}" if step else f"epoch {epoch + 1}"
        log.info("time budget train.max_minutes=%s reached after %.2f min of training (%d batch(es) in this run, "
                 "about %.0f s kept for validation, the final test and saving): stopped before %s%s. %s resumes "
                 "there: rerun with a larger train.max_minutes (it counts every run of this model) or "
                 "train.max_minutes=null to continue", budget_minutes, seconds_so_far() / 60, timer.steps,
                 reserve_s, where, note, last)

    if not best.is_file():
        raise RuntimeError(f"no checkpoint was written to {best}: train.epochs={cfg.train.epochs} ran no epoch")
    state = read_checkpoint(best, device, required=("model", "metrics"))
    model.load_state_dict(state["model"])
    test_accuracy = evaluate(model, frontend, bundle.test, device, batch_size)
    state["metrics"]["clean_test_accuracy"] = test_accuracy
    state["config"] = resolved  # the config this command finished under: rerunning it exactly finds it finished
    for key in ("optimizer", "scheduler", "rng"):  # a best.pt written by an older version held its optimizer too
        state.pop(key, None)
    save_checkpoint(best, state)
    metrics = {
        "clean_test_accuracy": test_accuracy, "best_val_accuracy": best_accuracy, "epochs_run": len(history),
        "train_seconds": seconds_so_far(), "checkpoint": str(best),
        "best_checkpoint": {"epoch": state.get("epoch"), "step": state.get("step")},
        "stop_reason": stop_reason, "stopped_by_budget": stopped_by_budget, "max_minutes": budget_minutes,
        "position": {"epoch": epoch, "step": step}, "steps_per_epoch": steps_per_epoch, "steps_done": steps_done,
        "stale_epochs": stale,
        "dataset": cfg.dataset.name, "model": cfg.model.name, "augment": OmegaConf.to_container(cfg.train.augment),
        "device": str(device), "code_version": code_version(),
    }
    atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics
