"""Whether an earlier command already trained this config's model: then a rerun has nothing to do.

A rerun under the exact config is finished; so is one that changes only the knobs that say how long to train
(:data:`CONTINUATION_KEYS`) when they would train nothing further.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from audiocert.checkpoint import architecture_mismatch
from audiocert.provenance import read_json

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
