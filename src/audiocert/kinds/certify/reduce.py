"""The certification reducer: merge a config's shard counts into certificates, curves and a summary.

Per config it checks that every planned shard is present exactly once (right config hash, code version and
coverage), sums the counts per example, and applies CERTIFY (class from the selection counts, bound from
the estimation counts) and PREDICT (on the estimation counts) as in ``audiocert.statistics``. Anything
missing, duplicated or foreign stops it with the shard files named; nothing is written then.
"""

from __future__ import annotations

import statistics as pystats
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.algorithms import make_algorithm
from audiocert.external import is_external, net_spec
from audiocert.kinds.certify.certificates import certificates_digest, certificates_tsv
from audiocert.kinds.certify.counts import settled
from audiocert.provenance import atomic_write_json, atomic_write_text, code_version, seal
from audiocert.shards import IncompleteSweepError, ShardInventory, inventory, read_plan
from audiocert.stages import stage as stage_entry
from audiocert.statistics import (
    ABSTAIN,
    REPORT_RADII,
    certified_accuracy,
    rate_interval,
    snr_db,
)


def radius_grid(max_radius: float, points: int = 200) -> np.ndarray:
    grid = np.unique(np.concatenate([np.linspace(0.0, max_radius * 1.05, points), REPORT_RADII]))
    return grid


def reduce_config(config_dir: str | Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one config: certificates.tsv, predictions.tsv, curve.csv, summary.json, provenance.json.

    ``found``: the config's inventory with merged counts, when the caller has just taken it (each shard file is
    then read once per command)."""
    config_dir = Path(config_dir)
    plan = read_plan(config_dir)
    if found is None or found.merged is None:
        found = inventory(config_dir, plan, merge=True)
    if not found.complete:
        raise IncompleteSweepError(found.problems(config_dir))
    merged = found.merged
    if not settled(plan, merged):
        raise IncompleteSweepError(f"{config_dir}: cannot finalise: some points still need another round of "
                                   "samples; rerun the `audiocert certify` command of this sweep to run it")
    q = plan["quantities"]
    sigma, alpha, stage = float(q["sigma"]), float(q["alpha"]), q["stage"]
    algorithm = make_algorithm(q)
    # All points at once (the same numbers as algorithm.certify / predict point by point).
    certified_class, certified_radius, lower = algorithm.certify_many(merged["selection"], merged["estimation"])
    predicted_class = algorithm.predict_many(merged["estimation"])
    rows, predictions = [], []
    for position, dataset_index in enumerate(plan["examples"]):
        label, predict, predicted = (int(merged["labels"][position]), int(certified_class[position]),
                                     int(predicted_class[position]))
        rows.append({"idx": dataset_index, "label": label, "predict": predict,
                     "radius": float(certified_radius[position]), "correct": predict == label,
                     "time": float(merged["seconds"][position]), "p_lower": float(lower[position])})
        predictions.append((dataset_index, label, predicted, int(predicted == label)))
    radii = np.array([r["radius"] for r in rows])
    correct = np.array([r["correct"] for r in rows])
    ceiling = algorithm.max_radius
    grid = radius_grid(ceiling)
    curve = "radius,certified_accuracy\n" + "".join(
        f"{float(r)!r},{certified_accuracy(radii, correct, r)!r}\n" for r in grid
    )
    certified = correct & (radii > 0)
    # Medians over the certified points, the same points as the median radius.
    snrs = snr_db(merged["norms"][certified], radii[certified]) if certified.any() else np.array([])
    wave_db = snr_db(merged["waveform_norms"][certified], radii[certified]) if certified.any() else np.array([])
    summary = {
        "kind": plan["kind"], "label": plan["label"], "config_hash": plan["config_hash"], "stage": stage,
        "sigma": sigma,
        "n0": int(q["n0"]), "n": int(q["n"]), "alpha": alpha, "num_points": len(rows),
        "dataset": plan["config"]["dataset"]["name"],
        "certified_accuracy": {f"{r:g}": certified_accuracy(radii, correct, r) for r in REPORT_RADII},
        "certified_accuracy_interval": {f"{r:g}": list(rate_interval(int((correct & (radii >= r) & (radii > 0)).sum()),
                                                                     len(rows))) for r in REPORT_RADII},
        "smoothed_accuracy": float(correct.mean()),
        "smoothed_accuracy_interval": list(rate_interval(int(correct.sum()), len(rows))),
        "degenerate": degenerate(np.array([r["predict"] for r in rows]), correct,
                                 int(plan["config"]["dataset"]["num_classes"])),
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
        "algorithm": algorithm.name,
        # The cost of a certificate: forward passes of f per point (selection + estimation samples).
        "forward_passes_per_point": float((merged["selection"].sum() + merged["estimation"].sum()) / len(rows)),
        "rounds": max(s.round for s in found.shards) + 1,
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
    semantics = certificate_semantics(plan["config"], stage)
    provenance = certification_provenance(plan, found, algorithm.name, semantics)
    write_results(config_dir, rows, predictions, curve, provenance, summary | {
        "semantics": semantics, "median_p_lower": pystats.median(r["p_lower"] for r in rows)})
    return summary


def certification_provenance(plan: Mapping[str, Any], found: ShardInventory, algorithm: str,
                             semantics: Mapping[str, Any]) -> dict[str, Any]:
    """What a certification's results come from: config, code versions, checkpoint, inputs, shards and hosts."""
    q = plan["quantities"]
    stage, sigma, alpha = q["stage"], float(q["sigma"]), float(q["alpha"])
    return {
        "config": plan["config"], "config_hash": plan["config_hash"], "seed": int(q["seed"]),
        "plan_code_version": plan["code_version"], "reducer_code_version": code_version(),
        "checkpoint": plan["checkpoint"], "checkpoint_digest": q["checkpoint_digest"],
        "stage": stage, "sigma": sigma, "n0": int(q["n0"]), "n": int(q["n"]), "alpha": alpha,
        "algorithm": algorithm, "algorithm_options": q.get("sequential"),
        "shards": len(found.records), "shard_hosts": sorted({r["host"] for r in found.records.values()}),
        "shard_devices": sorted({r["device"] for r in found.records.values()}),
        "device_type": q["device_type"], "inputs_digest": plan["inputs_digest"],
        "inputs": plan["inputs"],
        "semantics": semantics,
        # A user's network: module path, constructor args, input stage, classes and the weights' SHA-256.
        **({"model": q["model"], "weights_sha256": q.get("weights_sha256")} if "model" in q else {}),
    }


def write_results(config_dir: Path, rows: list[dict[str, Any]], predictions: list[tuple], curve: str,
                  provenance: Mapping[str, Any], summary: Mapping[str, Any]) -> None:
    """certificates.tsv, predictions.tsv, curve.csv, provenance.json, then summary.json (its presence means
    reduced)."""
    table = certificates_tsv(rows)
    atomic_write_text(config_dir / "certificates.tsv", table)
    atomic_write_text(config_dir / "predictions.tsv", "idx\tlabel\tpredict\tcorrect\n" + "".join(
        "\t".join(str(v) for v in p) + "\n" for p in predictions))
    atomic_write_text(config_dir / "curve.csv", curve)
    atomic_write_json(config_dir / "provenance.json", provenance)
    # Sealed, with the table's digest: what a later reader checks certificates.tsv against.
    atomic_write_json(config_dir / "summary.json", seal({**summary, "certificates_sha256": certificates_digest(table)}))


def degenerate(predicted: np.ndarray, correct: np.ndarray, classes: int) -> str | None:
    """Why a config's smoothed classifier is near-constant, or None: one class for at least 90% of its points
    (with more than one class among the labels), or an accuracy whose 95% interval holds chance (1 / classes) with
    its estimate at most twice chance. Its radii then describe a near-constant classifier, not a model."""
    decided = predicted[predicted != ABSTAIN]
    if decided.size:
        top, count = np.unique(decided, return_counts=True)
        share = count.max() / predicted.size
        if share >= 0.9:
            return (f"class {int(top[count.argmax()])} is predicted for {share:.0%} of the points: the radii describe "
                    "a near-constant classifier")
    interval = rate_interval(int(correct.sum()), int(correct.size))
    accuracy = float(correct.mean()) if correct.size else 0.0
    if interval is not None and interval[0] <= 1.0 / classes and accuracy <= 2.0 / classes:
        return (f"accuracy {accuracy:.3f} is at chance (1/{classes}; 95% interval [{interval[0]:.2f}, "
                f"{interval[1]:.2f}]): the radii describe a classifier that has not learned the task")
    return None


def certificate_semantics(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The reporting items of Park et al.: what is certified, where the noise enters, and so on."""
    representation = config.get("representation", {})
    if is_external(config.get("model")):
        return {**_semantics(representation, stage), **external_semantics(config["model"], stage)}
    return _semantics(representation, stage)


def external_semantics(model: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """What a user's network changes in the reporting items: which model, and what f does after the noise."""
    spec = net_spec(model)
    where = str(model.get("input") or "waveform")
    between = "" if where == stage else f"audiocert's frontend from '{stage}' to '{where}', then "
    return {"model": f"{spec['target']}({', '.join(f'{k}={v!r}' for k, v in spec['args'].items())}), a user's "
                     f"network whose input is the '{where}' stage of the chain",
            "post_noise_modification": f"none outside f: {between}the user's network {spec['target']} (whatever "
                                       "feature extraction it does inside is part of f)"}


def _semantics(representation: Mapping[str, Any], stage: str) -> dict[str, Any]:
    return {
        "certified_object": stage_entry(stage).certified_object,
        "perturbation_location": f"input of the base classifier at frontend stage '{stage}'",
        "gain_policy": representation.get("gain_policy", "none: audio as stored (float32 in [-1, 1]); no "
                                          "peak normalization or clipping before the noise"),
        "post_noise_modification": representation.get(
            "post_noise", "none outside f: the rest of the frontend after the stage is part of the base classifier"),
        "radius_norm": "L2 over all coordinates of the stage representation",
    }
