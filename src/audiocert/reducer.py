"""The reducer: merge a config's shard counts into certificates, curves and a summary.

Per config it checks that every planned shard is present exactly once (right config hash, code version and
coverage), sums the counts per example, and applies CERTIFY (class from the selection counts, bound from
the estimation counts) and PREDICT (on the estimation counts) as in ``audiocert.statistics``. Anything
missing, duplicated or foreign stops it with the shard files named; nothing is written then.
"""

from __future__ import annotations

import csv
import io
import re
import statistics as pystats
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.provenance import atomic_write_json, atomic_write_text, code_version
from audiocert.shards import SHARD_DIR, read_plan, validate_shard_file
from audiocert.statistics import (
    ABSTAIN,
    certified_accuracy,
    certify_from_counts,
    max_certifiable_radius,
    predict_from_counts,
    snr_db,
)

# The radii of the seed's tables.
REPORT_RADII: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
CERTIFICATE_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
SHARD_NAME = re.compile(r"^(?P<hash>[0-9a-f]+)-(?P<index>\d+)\.json$")

CERTIFIED_OBJECT = {
    "waveform": "the waveform (float32 samples in [-1, 1])",
    "magspec": "the magnitude spectrogram |rfft| (frames x 257); a waveform guarantee only via the "
               "Lipschitz bound of the waveform -> magnitude map",
    "mfbe": "the normalized Mel-filterbank energies (frames x 64): a feature-space guarantee only; the "
            "normalization has no Lipschitz bound, so it implies nothing for waveform perturbations",
}


class IncompleteSweepError(RuntimeError):
    """Raised when a config's shards are missing, duplicated or foreign."""


@dataclass
class ShardInventory:
    records: dict[int, dict[str, Any]]
    missing: list[int]
    duplicated: dict[int, list[Path]]
    invalid: dict[Path, str]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.duplicated or self.invalid)

    def problems(self, config_dir: Path) -> str:
        lines = []
        if self.missing:
            shown = ", ".join(str(i) for i in self.missing[:20])
            lines.append(f"{len(self.missing)} missing shard(s): {shown}{' ...' if len(self.missing) > 20 else ''}")
        for index, paths in self.duplicated.items():
            lines.append(f"shard {index} present {len(paths)} times: {', '.join(str(p) for p in paths)}")
        for path, why in self.invalid.items():
            lines.append(f"{path}: {why}")
        return f"{config_dir}: cannot finalise:\n  " + "\n  ".join(lines)


def inventory(config_dir: str | Path, plan: Mapping[str, Any] | None = None) -> ShardInventory:
    """Classify every file under shards/ against the plan: valid (once), duplicated, invalid, missing."""
    config_dir = Path(config_dir)
    plan = plan or read_plan(config_dir)
    found: dict[int, list[tuple[Path, dict[str, Any]]]] = defaultdict(list)
    invalid: dict[Path, str] = {}
    shard_dir = config_dir / SHARD_DIR
    for path in sorted(shard_dir.glob("*.json")) if shard_dir.is_dir() else []:
        record, why = validate_shard_file(path, plan)
        if record is None:
            invalid[path] = why
        else:
            found[record["index"]].append((path, record))
    duplicated = {i: [p for p, _ in entries] for i, entries in found.items() if len(entries) > 1}
    records = {}
    for index, entries in found.items():
        if len(entries) != 1:
            continue
        path, record = entries[0]
        match = SHARD_NAME.match(path.name)
        if match and match["hash"] == plan["config_hash"] and int(match["index"]) == index:
            records[index] = record
        else:  # a valid shard under a name that is not its own: a stray copy
            invalid[path] = f"counts of shard {index} under a name that is not its own"
    missing = [i for i in range(len(plan["shards"])) if i not in records and i not in duplicated]
    return ShardInventory(records, missing, duplicated, invalid)


def merge_counts(plan: Mapping[str, Any], records: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum counts per example over shards; also the per-example time, label and stage norm."""
    num_examples, classes = len(plan["examples"]), int(plan["config"]["dataset"]["num_classes"])
    selection = np.zeros((num_examples, classes), dtype=np.int64)
    estimation = np.zeros((num_examples, classes), dtype=np.int64)
    seconds = np.zeros(num_examples)
    labels = np.asarray([i["label"] for i in plan["inputs"]])  # every shard's labels were checked against these
    norms, waveform_norms = np.zeros(num_examples), np.zeros(num_examples)
    for record in records.values():
        rows = np.asarray(record["examples"])
        selection[rows] += np.asarray(record["selection_counts"], dtype=np.int64)
        estimation[rows] += np.asarray(record["estimation_counts"], dtype=np.int64)
        seconds[rows] += record["elapsed_s"] / len(rows)  # a shard's time, shared among its examples
        norms[rows], waveform_norms[rows] = record["stage_norms"], record["waveform_norms"]
    n0, n = int(plan["quantities"]["n0"]), int(plan["quantities"]["n"])
    if (selection.sum(1) != n0).any() or (estimation.sum(1) != n).any():
        raise IncompleteSweepError("merged counts do not add up to n0 / n for every example")
    return {"selection": selection, "estimation": estimation, "seconds": seconds, "labels": labels,
            "norms": norms, "waveform_norms": waveform_norms}


def certificates_tsv(rows: list[dict[str, Any]]) -> str:
    """locuslab/smoothing's certify output: idx label predict radius correct time (radius unrounded)."""
    out = io.StringIO()
    out.write("\t".join(CERTIFICATE_COLUMNS) + "\n")
    for row in rows:
        out.write(f"{row['idx']}\t{row['label']}\t{row['predict']}\t{row['radius']!r}\t{int(row['correct'])}\t"
                  f"{row['time']:.4f}\n")
    return out.getvalue()


def read_certificates(path: str | Path) -> list[dict[str, Any]]:
    with open(path) as handle:
        return [{"idx": int(r["idx"]), "label": int(r["label"]), "predict": int(r["predict"]),
                 "radius": float(r["radius"]), "correct": bool(int(r["correct"])), "time": float(r["time"])}
                for r in csv.DictReader(handle, delimiter="\t")]


def radius_grid(max_radius: float, points: int = 200) -> np.ndarray:
    grid = np.unique(np.concatenate([np.linspace(0.0, max_radius * 1.05, points), REPORT_RADII]))
    return grid


def reduce_config(config_dir: str | Path) -> dict[str, Any]:
    """Finalise one config: certificates.tsv, predictions.tsv, curve.csv, summary.json, provenance.json."""
    config_dir = Path(config_dir)
    plan = read_plan(config_dir)
    found = inventory(config_dir, plan)
    if not found.complete:
        raise IncompleteSweepError(found.problems(config_dir))
    merged = merge_counts(plan, found.records)
    q = plan["quantities"]
    sigma, alpha, stage = float(q["sigma"]), float(q["alpha"]), q["stage"]
    rows, predictions = [], []
    for position, dataset_index in enumerate(plan["examples"]):
        label = int(merged["labels"][position])
        predict, radius, p_lower = certify_from_counts(merged["selection"][position],
                                                       merged["estimation"][position], alpha, sigma)
        rows.append({"idx": dataset_index, "label": label, "predict": predict, "radius": radius,
                     "correct": predict == label, "time": float(merged["seconds"][position]),
                     "p_lower": p_lower})
        predicted = predict_from_counts(merged["estimation"][position], alpha)
        predictions.append((dataset_index, label, predicted, int(predicted == label)))
    radii = np.array([r["radius"] for r in rows])
    correct = np.array([r["correct"] for r in rows])
    ceiling = max_certifiable_radius(sigma, int(q["n"]), alpha)
    grid = radius_grid(ceiling)
    curve = "radius,certified_accuracy\n" + "".join(
        f"{float(r)!r},{certified_accuracy(radii, correct, r)!r}\n" for r in grid
    )
    certified = correct & (radii > 0)
    # Medians over the certified points, the same points as the median radius.
    snrs = snr_db(merged["norms"][certified], radii[certified]) if certified.any() else np.array([])
    wave_db = snr_db(merged["waveform_norms"][certified], radii[certified]) if certified.any() else np.array([])
    summary = {
        "label": plan["label"], "config_hash": plan["config_hash"], "stage": stage, "sigma": sigma,
        "n0": int(q["n0"]), "n": int(q["n"]), "alpha": alpha, "num_points": len(rows),
        "dataset": plan["config"]["dataset"]["name"],
        "certified_accuracy": {f"{r:g}": certified_accuracy(radii, correct, r) for r in REPORT_RADII},
        "smoothed_accuracy": float(correct.mean()),
        "abstain_fraction": float(np.mean([r["predict"] == ABSTAIN for r in rows])),
        "predict_accuracy": float(np.mean([p[3] for p in predictions])),
        "predict_abstain_fraction": float(np.mean([p[2] == ABSTAIN for p in predictions])),
        "max_certifiable_radius": ceiling,
        "median_radius_certified": float(np.median(radii[certified])) if certified.any() else 0.0,
        "median_stage_norm": float(np.median(merged["norms"][certified])) if certified.any() else None,
        "median_waveform_norm": float(np.median(merged["waveform_norms"][certified])) if certified.any() else None,
        "median_snr_db": float(np.median(snrs)) if snrs.size else None,
        # 20 log10(||x_waveform|| / r): the waveform-equivalent SNR of a magspec radius is this + 20 log10(L).
        "median_wave_to_radius_db": float(np.median(wave_db)) if wave_db.size else None,
        "samples": int(sum(r["samples"] for r in found.records.values())),
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
    semantics = certificate_semantics(plan["config"], stage)
    provenance = {
        "config": plan["config"], "config_hash": plan["config_hash"], "seed": int(q["seed"]),
        "plan_code_version": plan["code_version"], "reducer_code_version": code_version(),
        "checkpoint": plan["checkpoint"], "checkpoint_digest": q["checkpoint_digest"],
        "stage": stage, "sigma": sigma, "n0": int(q["n0"]), "n": int(q["n"]), "alpha": alpha,
        "shards": len(found.records), "shard_hosts": sorted({r["host"] for r in found.records.values()}),
        "shard_devices": sorted({r["device"] for r in found.records.values()}),
        "device_type": q["device_type"], "inputs_digest": plan["inputs_digest"],
        "inputs": plan["inputs"],
        "semantics": semantics,
    }
    atomic_write_text(config_dir / "certificates.tsv", certificates_tsv(rows))
    atomic_write_text(config_dir / "predictions.tsv", "idx\tlabel\tpredict\tcorrect\n" + "".join(
        "\t".join(str(v) for v in p) + "\n" for p in predictions))
    atomic_write_text(config_dir / "curve.csv", curve)
    atomic_write_json(config_dir / "provenance.json", provenance)
    atomic_write_json(config_dir / "summary.json", summary | {"semantics": semantics,
                                                               "median_p_lower": pystats.median(
                                                                   r["p_lower"] for r in rows)})
    return summary


def certificate_semantics(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The reporting items of Park et al.: what is certified, where the noise enters, and so on."""
    representation = config.get("representation", {})
    return {
        "certified_object": CERTIFIED_OBJECT[stage],
        "perturbation_location": f"input of the base classifier at frontend stage '{stage}'",
        "gain_policy": representation.get("gain_policy", "none: audio as stored (float32 in [-1, 1]); no "
                                          "peak normalization or clipping before the noise"),
        "post_noise_modification": representation.get(
            "post_noise", "none outside f: the rest of the frontend after the stage is part of the base classifier"),
        "radius_norm": "L2 over all coordinates of the stage representation",
    }
