"""The epochs in turn: the stop rules (epochs done, early stopping, time budget), validation and the checkpoints
after each whole epoch, and the partial model where the time budget stops training."""

from __future__ import annotations

import logging

from audiocert.training.budget import BudgetTimer
from audiocert.training.epoch import train_epoch
from audiocert.training.evaluation import validate
from audiocert.training.saving import rng_state, save_best, save_last
from audiocert.training.trainer import Trainer, TrainingState

log = logging.getLogger("audiocert.train")  # the name training's log lines have always carried


def train_epochs(trainer: Trainer, state: TrainingState, timer: BudgetTimer) -> str:
    """Train from ``state``'s position until a stop rule holds; returns which: "epochs", "early_stopping" or
    "budget"."""
    saved_position = (state.epoch, state.step)  # where last.pt (if any) resumes: nothing to save while it is still here
    while True:
        if state.epoch >= int(trainer.cfg.train.epochs):
            return "epochs"
        if state.step == 0 and state.stale >= int(trainer.cfg.train.patience):
            log.info("early stopping: no validation gain for %d epochs", state.stale)
            return "early_stopping"
        if not (timer.next_step_fits(trainer.eval_batches) and train_epoch(trainer, state, timer)):
            stop_on_budget(trainer, state, timer, trained_since_save=(state.epoch, state.step) != saved_position)
            return "budget"
        close_epoch(trainer, state, timer)
        saved_position = (state.epoch, state.step)


def close_epoch(trainer: Trainer, state: TrainingState, timer: BudgetTimer) -> None:
    """After a whole epoch: validate, step the LR scheduler and patience, record it, save best.pt when the model is
    the best so far and last.pt always; then move on to the next epoch."""
    val_accuracy = validate(trainer, timer)
    trainer.scheduler.step(val_accuracy)
    improved = val_accuracy > state.best_epoch_accuracy
    state.best_epoch_accuracy, state.stale = (val_accuracy, 0) if improved else (state.best_epoch_accuracy,
                                                                                  state.stale + 1)
    state.history.append({"epoch": state.epoch, "loss": state.mean_loss(), "val_accuracy": val_accuracy,
                          "lr": trainer.optimizer.param_groups[0]["lr"], "elapsed_s": state.train_seconds(timer)})
    if (new_best := val_accuracy > state.best_accuracy):
        state.best_accuracy = val_accuracy
        save_best(trainer, state.epoch, state.step, state.metrics(timer, partial=False))
    # Saved after validation: the RNG state is the one the next epoch starts from in an uninterrupted run.
    save_last(trainer, timer, state.epoch, state.step, state.metrics(timer, partial=False), rng_state(trainer.device))
    log.info("epoch %d: loss %.4f, validation accuracy %.4f%s", state.epoch + 1, state.mean_loss(),
             val_accuracy, " (best)" if new_best else "")
    state.epoch, state.step, state.running, state.seen = state.epoch + 1, 0, 0.0, 0


def stop_on_budget(trainer: Trainer, state: TrainingState, timer: BudgetTimer, trained_since_save: bool) -> None:
    """The time budget stopped training at ``state``'s position: keep the batches trained since last.pt was written
    (validate the partial model, save last.pt and, when it is the best, best.pt), and say where a rerun resumes."""
    note, reserve_s = "", timer.reserve_s(trainer.eval_batches)
    if trained_since_save:
        rng = rng_state(trainer.device)  # before validating: an uninterrupted run's next batch draws from here
        val_accuracy = validate(trainer, timer)
        state.budget_stops.append({"epoch": state.epoch, "step": state.step, "val_accuracy": val_accuracy,
                                   "loss": state.mean_loss(), "train_seconds": state.train_seconds(timer)})
        improved = val_accuracy > state.best_accuracy
        if improved:
            state.best_accuracy = val_accuracy
            save_best(trainer, state.epoch, state.step, state.metrics(timer, partial=True))
        save_last(trainer, timer, state.epoch, state.step, state.metrics(timer, partial=True), rng)
        note = f"; validation accuracy of the partial model {val_accuracy:.4f}{' (best)' if improved else ''}"
    step, epoch, budget_minutes = state.step, state.epoch, trainer.cfg.train.get("max_minutes")
    where = f"batch {step + 1}/{trainer.steps_per_epoch} of epoch {epoch + 1}" if step else f"epoch {epoch + 1}"
    log.info("time budget train.max_minutes=%s reached after %.2f min of training (%d batch(es) in this run, "
             "about %.0f s kept for validation, the final test and saving): stopped before %s%s. %s resumes "
             "there: rerun with a larger train.max_minutes (it counts every run of this model) or "
             "train.max_minutes=null to continue", budget_minutes, state.train_seconds(timer) / 60, timer.steps,
             reserve_s, where, note, trainer.last)
