"""A certification's W&B spec (what tracking.ConfigRun logs once the config is reduced) and its live rows.

Every accuracy over the test points carries its 95% Clopper-Pearson interval (as the report prints them): the
certified accuracy at each report radius, the clean accuracy of g (CERTIFY's and PREDICT's answers without a
radius) and, where the training run left its metrics next to the checkpoint, the clean accuracy of f on the
training's test crops. A degenerate config (a near-constant g) says so in its summary.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.provenance import CorruptFileError, read_json
from audiocert.statistics import rate_interval

RESULT_FILES = ("certificates.tsv", "predictions.tsv", "curve.csv", "summary.json", "provenance.json")


def _with_interval(key: str, rate: float | None, points: int) -> dict[str, Any]:
    if rate is None:
        return {}
    interval = rate_interval(round(rate * points), points) or (None, None)
    return {key: rate, f"{key}_low": interval[0], f"{key}_high": interval[1]}


def base_accuracy(checkpoint: str | None) -> float | None:
    """f's clean test accuracy from the training run's metrics.json beside the checkpoint, when it is there."""
    path = Path(checkpoint).parent / "metrics.json" if checkpoint else None
    if path is None or not path.is_file():
        return None
    try:
        value = read_json(path).get("clean_test_accuracy")
    except (CorruptFileError, OSError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def certify_wandb_spec(config_dir: Path, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The curve as a table and line plot, the certificates as a table and artifact, summary metrics with their
    intervals, the config's row of the sweep's comparison table."""
    summary = read_json(Path(config_dir) / "summary.json")
    with open(Path(config_dir) / "curve.csv") as handle:
        rows = [[float(r["radius"]), float(r["certified_accuracy"])] for r in csv.DictReader(handle)]
    with open(Path(config_dir) / "certificates.tsv") as handle:
        certificates = list(csv.reader(handle, delimiter="\t"))
    points = int(summary["num_points"])
    keys = ("abstain_fraction", "predict_abstain_fraction", "max_certifiable_radius", "median_radius_certified",
            "median_snr_db", "samples", "shard_seconds", "forward_passes_per_point", "num_points")
    intervals = summary.get("certified_accuracy_interval") or {}
    certified = {**{f"certified_accuracy/r={radius}": value for radius, value in summary["certified_accuracy"].items()},
                 # Each rate over the test points with its 95% Clopper-Pearson interval.
                 **{f"certified_accuracy_{side}/r={radius}": interval[k] for radius, interval in intervals.items()
                    for k, side in enumerate(("low", "high"))}}
    clean = {**_with_interval("clean_accuracy/g_certify", summary["smoothed_accuracy"], points),
             **_with_interval("clean_accuracy/g_predict", summary.get("predict_accuracy"), points),
             "clean_accuracy/f_training_test": base_accuracy(plan.get("checkpoint"))}
    smoothed = summary.get("smoothed_accuracy_interval") or [None, None]
    metrics = {**certified, **clean, "smoothed_accuracy": summary["smoothed_accuracy"],
               "smoothed_accuracy_low": smoothed[0], "smoothed_accuracy_high": smoothed[1],
               "degenerate": summary.get("degenerate") or "", "is_degenerate": bool(summary.get("degenerate")),
               **{key: summary.get(key) for key in keys}}
    comparison = {"label": plan["label"], "kind": plan["kind"], "stage": summary["stage"], "sigma": summary["sigma"],
                  "algorithm": summary.get("algorithm"), "points": points,
                  "clean_accuracy_g": summary["smoothed_accuracy"], "clean_accuracy_g_low": smoothed[0],
                  "clean_accuracy_g_high": smoothed[1], "clean_accuracy_f": clean["clean_accuracy/f_training_test"],
                  **{f"certified@{radius}": value for radius, value in summary["certified_accuracy"].items()},
                  **{f"certified@{radius}_{side}": interval[k] for radius, interval in intervals.items()
                     for k, side in enumerate(("low", "high"))},
                  "passes_per_point": summary.get("forward_passes_per_point"),
                  "degenerate": bool(summary.get("degenerate"))}
    digest = plan["quantities"].get("checkpoint_digest")
    return {"tables": {"certified_accuracy_curve": {"columns": ["radius", "certified_accuracy"], "data": rows},
                       "certificates": {"columns": certificates[0], "data": certificates[1:]}},
            # The line plot is logged under its table's name: the plot (which carries the table) replaces it.
            "lines": [{"table": "certified_accuracy_curve", "x": "radius", "y": "certified_accuracy",
                       "key": "certified_accuracy_curve", "title": f"certified accuracy vs radius ({plan['label']})"}],
            "summary": metrics,
            "artifacts": [{"name": f"certificates-{plan['config_hash']}", "type": "certificates",
                           "files": list(RESULT_FILES), "metadata": {"label": plan["label"],
                                                                     "checkpoint_sha256_16": digest}}],
            "comparison": comparison}
