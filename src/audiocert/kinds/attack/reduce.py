"""The attack reducer: attack.tsv, robust.csv, the consistency check against the certificates, summary.json.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.kinds.attack.example import render_example
from audiocert.kinds.attack.plan import KIND
from audiocert.kinds.derived import lipschitz_of
from audiocert.provenance import (
    atomic_write_json,
    atomic_write_text,
)
from audiocert.shards import (
    ShardInventory,
)
from audiocert.statistics import ABSTAIN, certified_accuracy

# ----------------------------------------------------------------------------------------------------------
# Reducing: tables, the consistency check against the certificates, the attacked example
# ----------------------------------------------------------------------------------------------------------
log = logging.getLogger(__name__)


def budgets_in_certificate_space(plan: Mapping[str, Any]) -> tuple[np.ndarray | None, str]:
    """The budgets in the units of the certificate's radius (None when a budget there has no certificate
    counterpart), and in words how they compare."""
    attack = plan["quantities"]["attack"]
    eps = np.asarray(attack["eps"], dtype=float)
    stage = plan["quantities"]["stage"]
    if attack["space"] == "stage" or stage == "waveform":
        return eps, "the budget is an L2 norm in the certificate's own space"
    bound = lipschitz_of(plan["config"])
    if bound is None:
        return None, f"{stage} has no Lipschitz bound: a waveform budget has no {stage} radius to compare with"
    # A waveform perturbation of norm eps moves the stage by at most L eps: certified R covers it when L eps <= R.
    return eps * bound, f"a waveform budget eps is compared with R / L (L = {bound:.4f})"


def consistency(plan: Mapping[str, Any], merged: Mapping[str, Any], rows: np.ndarray, labels: np.ndarray,
                certificates: Mapping[int, Mapping[str, Any]] | None, compared: np.ndarray | None
                ) -> tuple[list[float] | None, list[dict[str, Any]]]:
    """Certified accuracy at each budget (in the certificate's space) and the contradictions: a point certified at
    radius R with class c whose attacked input at a budget below R PREDICTs another class."""
    if certificates is None or compared is None:
        return None, []
    certs = [certificates.get(plan["examples"][p]) for p in rows]
    if any(c is None for c in certs):
        return None, []
    predicted = np.array([c["predict"] for c in certs])
    radius = np.array([c["radius"] for c in certs])
    correct = predicted == labels[rows]
    certified_at = [certified_accuracy(radius, correct, r) for r in compared]
    eps = plan["quantities"]["attack"]["eps"]
    contradictions = []
    for k, p in enumerate(rows):
        for e in range(len(eps)):
            g_class = int(merged["predict"][p, e])
            # Certified: g(x + delta) = c for every ||delta|| < R (strictly inside the ball).
            if predicted[k] != ABSTAIN and compared[e] < radius[k] and g_class not in (ABSTAIN, int(predicted[k])):
                contradictions.append({"idx": int(plan["examples"][p]), "eps": float(eps[e]),
                                       "radius": float(radius[k]), "certified_class": int(predicted[k]),
                                       "attacked_class": g_class})
    return certified_at, contradictions


def attack_tables(plan: Mapping[str, Any], merged: Mapping[str, Any], rows: np.ndarray, labels: np.ndarray,
                  g_robust: np.ndarray, f_robust: np.ndarray | None, compared: np.ndarray | None,
                  certified_at: list[float] | None) -> tuple[list[str], list[str]]:
    """attack.tsv (one row per point and budget) and robust.csv (per budget) as lines."""
    eps = np.asarray(plan["quantities"]["attack"]["eps"], dtype=float)
    tsv = ["idx\tlabel\teps\tg_predict\tg_robust\tg_l2\tg_linf\tf_class\tf_robust\tf_l2\tpasses\tnonfinite"]
    for k, p in enumerate(rows):
        for e in range(eps.size):
            tsv.append("\t".join(str(v) for v in (
                plan["examples"][p], labels[p], repr(float(eps[e])), int(merged["predict"][p, e]), int(g_robust[k, e]),
                repr(float(merged["g_l2"][p, e])), repr(float(merged["g_linf"][p, e])),
                int(merged["base_class"][p, e]), "" if f_robust is None else int(f_robust[k, e]),
                repr(float(merged["f_l2"][p, e])),
                int(merged["g_passes"][p, e] + np.nan_to_num(merged["f_passes"][p, e])),
                int(merged["g_nonfinite"][p, e]))))
    curve = ["eps,eps_in_certificate_space,g_robust_accuracy,f_robust_accuracy,certified_accuracy"]
    for e in range(eps.size):
        curve.append(",".join([repr(float(eps[e])), "" if compared is None else repr(float(compared[e])),
                               repr(float(g_robust[:, e].mean())),
                               "" if f_robust is None else repr(float(f_robust[:, e].mean())),
                               "" if certified_at is None else repr(float(certified_at[e]))]))
    return tsv, curve


def attack_wandb(plan: Mapping[str, Any], g_robust: np.ndarray, f_robust: np.ndarray | None,
                 certified_at: list[float] | None, contradictions: int) -> dict[str, Any]:
    """What the W&B run logs: the robust-accuracy curves per budget, summary metrics."""
    eps = np.asarray(plan["quantities"]["attack"]["eps"], dtype=float)
    table = [[float(eps[e]), float(g_robust[:, e].mean()), None if f_robust is None else float(f_robust[:, e].mean()),
              None if certified_at is None else float(certified_at[e])] for e in range(eps.size)]
    return {"job_type": KIND, "tables": {"attack/robust_accuracy": {
        "columns": ["eps", "g_robust_accuracy", "f_robust_accuracy", "certified_accuracy"], "data": table}},
        "lines": [{"table": "attack/robust_accuracy", "x": "eps", "y": y, "title": f"{y} vs eps ({plan['label']})"}
                  for y in ("g_robust_accuracy", "f_robust_accuracy", "certified_accuracy")
                  if not (y == "f_robust_accuracy" and f_robust is None) and not (
                      y == "certified_accuracy" and certified_at is None)],
        "summary": {"attack/contradictions": contradictions, "attack/points": int(g_robust.shape[0]),
                    **{f"attack/g_robust_accuracy/eps={e:.4g}": float(v) for e, v in zip(
                        eps, g_robust.mean(axis=0), strict=True)}}}


def reduce_attack(kind: Any, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one attack config: attack.tsv, robust.csv, summary.json, provenance.json, the consistency check
    against its certification, the attacked example; wandb.json (what the W&B run logs)."""
    config_dir = Path(config_dir)
    plan, found = kind.merged(config_dir, found)
    merged = found.merged
    attack = plan["quantities"]["attack"]
    eps = np.asarray(attack["eps"], dtype=float)
    labels = np.asarray([i["label"] for i in plan["inputs"]])
    rows = np.flatnonzero(merged["attacked"])
    g_robust = merged["predict"][rows] == labels[rows, None]
    f_robust = merged["base_class"][rows] == labels[rows, None] if attack["base"] else None
    certificates = kind.certificates(config_dir.parent, plan)
    compared, comparison = budgets_in_certificate_space(plan)
    certified_at, contradictions = consistency(plan, merged, rows, labels, certificates, compared)
    tsv, curve = attack_tables(plan, merged, rows, labels, g_robust, f_robust, compared, certified_at)
    alpha = float(plan["quantities"]["alpha"])
    summary = {
        "kind": KIND, "label": plan["label"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
        "space": attack["space"], "stage": plan["quantities"]["stage"],
        "sigma": float(plan["quantities"]["sigma"]), "eps": eps.tolist(),
        "eps_in_certificate_space": None if compared is None else compared.tolist(), "comparison": comparison,
        "points": int(rows.size), "g_robust_accuracy": g_robust.mean(axis=0).tolist(),
        "g_clean_accuracy": float((merged["clean_predict"][rows] == labels[rows]).mean()) if rows.size else None,
        "f_robust_accuracy": None if f_robust is None else f_robust.mean(axis=0).tolist(),
        "certified_accuracy": certified_at,
        "certificates": "reduced" if certificates is not None else "not reduced: run `audiocert certify` of the "
                        "same config for the certified curve and the consistency check",
        "contradictions": len(contradictions), "contradiction_points": contradictions[:50],
        "alpha": alpha, "settings": {k: v for k, v in attack.items() if k != "shard"},
        "passes_per_point": float(np.nansum(merged["g_passes"][rows]) + np.nansum(merged["f_passes"][rows]))
        / max(rows.size, 1),
        "nonfinite_gradients": int(np.nansum(merged["g_nonfinite"][rows]) + np.nansum(merged["f_nonfinite"][rows])),
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
    summary["example"] = render_example(kind, config_dir, plan, merged)
    atomic_write_text(config_dir / "attack.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(config_dir / "robust.csv", "\n".join(curve) + "\n")
    atomic_write_json(config_dir / "provenance.json", kind.provenance(plan, found))
    atomic_write_json(config_dir / "wandb.json", attack_wandb(plan, g_robust, f_robust, certified_at,
                                                              len(contradictions)))
    atomic_write_json(config_dir / "summary.json", summary)  # written last: its presence means reduced
    if contradictions:
        log.warning("%s: %d attacked input(s) within a certified radius PREDICT another class (an honest "
                    "certificate allows this with probability about alpha = %g per point): %s", plan["label"],
                    len(contradictions), alpha, contradictions[:5])
    return summary
