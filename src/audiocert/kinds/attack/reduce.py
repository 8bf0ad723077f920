"""The attack reducer: attack.tsv, robust.csv, the consistency check against the certificates, summary.json.

Each (point, budget) has one of three outcomes, from the judge of g on the attacked input
(:mod:`audiocert.attacks.judge`): *held* (the label), *flipped* (another class: g is wrong there with probability
>= 1 - alpha) or *undecided* (the judge abstained after its last look). Only a flip shows a point broken, so the
fraction held + undecided is an upper bound on g's robust accuracy at that budget (up to alpha per point), and
certified accuracy a lower bound: certified <= true robust accuracy of g <= held + undecided. An attacked input
that was not finite is *unjudged* (never judged, counted and reported); it shows nothing broken either, so it joins
the upper bound. Every rate over the attacked points carries its 95% Clopper-Pearson interval.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.attacks import UNJUDGED
from audiocert.kinds.attack.example import render_example
from audiocert.kinds.attack.plan import KIND
from audiocert.kinds.derived import lipschitz_of
from audiocert.provenance import atomic_write_json, atomic_write_text, seal
from audiocert.shards import (
    ShardInventory,
)
from audiocert.statistics import ABSTAIN, binomial_tail, certified_accuracy, rate_interval

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
                ) -> dict[str, Any]:
    """The certificates against the attack: certified accuracy at each budget (in the certificate's space), the
    certified points (a class, radius > 0), and the contradictions: a certified point (class c, radius R) whose
    attacked input at some budget below R is judged another class. A point counts once, whatever the number of
    budgets that contradict it; an honest certificate allows about alpha N of N certified points (``p_value``: the
    one-sided binomial probability of k or more under that rate)."""
    found: dict[str, Any] = {"certified_accuracy": None, "certified_points": None, "pairs": [], "points": 0,
                             "p_value": None}
    if certificates is None or compared is None:
        return found
    certs = [certificates.get(plan["examples"][p]) for p in rows]
    if any(c is None for c in certs):
        return found
    predicted = np.array([c["predict"] for c in certs])
    radius = np.array([c["radius"] for c in certs])
    correct = predicted == labels[rows]
    eps = plan["quantities"]["attack"]["eps"]
    for k, p in enumerate(rows):
        for e in range(len(eps)):
            g_class = int(merged["predict"][p, e])
            # Certified: g(x + delta) = c for every ||delta|| < R (strictly inside the ball).
            if predicted[k] != ABSTAIN and compared[e] < radius[k] and \
                    g_class not in (ABSTAIN, UNJUDGED, int(predicted[k])):
                found["pairs"].append({"idx": int(plan["examples"][p]), "eps": float(eps[e]),
                                       "radius": float(radius[k]), "certified_class": int(predicted[k]),
                                       "attacked_class": g_class})
    certified_points = int(((predicted != ABSTAIN) & (radius > 0)).sum())
    points = len({c["idx"] for c in found["pairs"]})
    alpha = float(plan["quantities"]["alpha"])
    found.update(certified_accuracy=[certified_accuracy(radius, correct, r) for r in compared],
                 certified_points=certified_points, points=points,
                 p_value=binomial_tail(points, certified_points, alpha) if certified_points else None)
    return found


def outcomes(predict: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per (point, budget) of the judge's classes: held (the label), flipped (another class), undecided (-1),
    unjudged (-2: the attacked input was not finite)."""
    held = predict == labels[:, None]
    undecided = predict == ABSTAIN
    unjudged = predict == UNJUDGED
    return {"held": held, "undecided": undecided, "unjudged": unjudged, "flipped": ~held & ~undecided & ~unjudged}


def not_broken(g: Mapping[str, np.ndarray]) -> np.ndarray:
    """The (point, budget) pairs the attack did not show broken: held, undecided or unjudged."""
    return g["held"] | g["undecided"] | g["unjudged"]


def intervals(hits: np.ndarray) -> list[list[float] | None]:
    """The 95% Clopper-Pearson interval of each column's rate (points x budgets booleans)."""
    interval = [rate_interval(int(column.sum()), int(column.size)) for column in hits.T]
    return [None if i is None else list(i) for i in interval]


def _cell(value: Any) -> str:
    """A table cell: empty for no value (None, or a norm of a perturbation that was not finite)."""
    return "" if value is None or not np.isfinite(value) else repr(float(value))


def attack_tables(plan: Mapping[str, Any], merged: Mapping[str, Any], rows: np.ndarray, labels: np.ndarray,
                  g: Mapping[str, np.ndarray], f_robust: np.ndarray | None, compared: np.ndarray | None,
                  certified_at: list[float] | None) -> tuple[list[str], list[str]]:
    """attack.tsv (one row per point and budget, with the judge's outcome) and robust.csv (per budget: the
    outcomes' rates, the upper bound held + undecided with its interval, f's robust accuracy, certified accuracy)."""
    eps = np.asarray(plan["quantities"]["attack"]["eps"], dtype=float)
    name = np.where(g["held"], "held", np.where(g["flipped"], "flipped", np.where(g["unjudged"], "unjudged",
                                                                                 "undecided")))
    tsv = ["idx\tlabel\teps\tg_predict\tg_robust\tg_outcome\tg_l2\tg_linf\tf_class\tf_robust\tf_l2\tpasses\t"
           "nonfinite"]
    for k, p in enumerate(rows):
        for e in range(eps.size):
            tsv.append("\t".join(str(v) for v in (
                plan["examples"][p], labels[p], repr(float(eps[e])), int(merged["predict"][p, e]),
                int(g["held"][k, e]), name[k, e], _cell(merged["g_l2"][p, e]),
                _cell(merged["g_linf"][p, e]), int(merged["base_class"][p, e]),
                "" if f_robust is None else int(f_robust[k, e]), _cell(merged["f_l2"][p, e]),
                int(merged["g_passes"][p, e] + np.nan_to_num(merged["f_passes"][p, e])),
                int(merged["g_nonfinite"][p, e]))))
    upper = not_broken(g)
    band = intervals(upper)
    curve = ["eps,eps_in_certificate_space,g_held,g_undecided,g_flipped,g_unjudged,g_robust_upper,g_robust_upper_low,"
             "g_robust_upper_high,f_robust_accuracy,certified_accuracy"]
    for e in range(eps.size):
        curve.append(",".join([repr(float(eps[e])), "" if compared is None else repr(float(compared[e])),
                               *(repr(float(g[key][:, e].mean())) for key in ("held", "undecided", "flipped")),
                               repr(float(g["unjudged"][:, e].mean())),
                               repr(float(upper[:, e].mean())), _cell(band[e] and band[e][0]),
                               _cell(band[e] and band[e][1]),
                               "" if f_robust is None else repr(float(f_robust[:, e].mean())),
                               "" if certified_at is None else repr(float(certified_at[e]))]))
    return tsv, curve


def attack_wandb(plan: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the W&B run logs: per budget the certified lower bound, the upper bound and the outcomes; summary
    metrics."""
    eps = summary["eps"]
    columns = ["eps", "certified_accuracy", "g_robust_upper", "g_held", "g_undecided", "g_flipped",
               "f_robust_accuracy"]
    table = [[float(eps[e]), None if summary["certified_accuracy"] is None else summary["certified_accuracy"][e],
              *(summary[key][e] for key in ("g_robust_upper", "g_held", "g_undecided", "g_flipped")),
              None if summary["f_robust_accuracy"] is None else summary["f_robust_accuracy"][e]]
             for e in range(len(eps))]
    lines = [y for y in ("certified_accuracy", "g_robust_upper", "g_undecided", "f_robust_accuracy")
             if summary.get(y) is not None]
    return {"job_type": KIND, "tables": {"attack/robust_accuracy": {"columns": columns, "data": table}},
            "lines": [{"table": "attack/robust_accuracy", "x": "eps", "y": y, "title": f"{y} vs eps ({plan['label']})"}
                      for y in lines],
            "summary": {"attack/contradictions": summary["contradictions"], "attack/points": summary["points"],
                        "attack/unjudged": summary["unjudged"],
                        **{f"attack/g_robust_upper/eps={e:.4g}": v for e, v in zip(
                            eps, summary["g_robust_upper"], strict=True)},
                        **{f"attack/g_undecided/eps={e:.4g}": v for e, v in zip(
                            eps, summary["g_undecided"], strict=True)},
                        **attack_intervals(summary)},
            # The smallest successful attack, as render_example wrote it (a file not written is skipped).
            "media": [{"key": "attack/example_clean", "path": "example_clean.wav", "type": "audio",
                       "caption": "clean"},
                      {"key": "attack/example_attacked", "path": "example.wav", "type": "audio", "caption": "attacked"},
                      {"key": "attack/example_spectrogram", "path": "example.png", "type": "image",
                       "caption": "clean, attacked, difference"}],
            "comparison": {"label": plan["label"], "kind": KIND, "stage": summary["stage"], "sigma": summary["sigma"],
                           "algorithm": "attack", "points": summary["points"],
                           "clean_accuracy_g": summary.get("g_clean_accuracy"),
                           "passes_per_point": summary.get("passes_per_point")}}


def attack_intervals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Each bound at each budget with its 95% Clopper-Pearson interval over the attacked points; g's clean accuracy
    (PREDICT on the clean points) with its interval."""
    out: dict[str, Any] = {}
    for key, values, bands in (("g_robust_upper", summary["g_robust_upper"], summary.get("g_robust_upper_interval")),
                               ("certified_accuracy", summary.get("certified_accuracy"),
                                summary.get("certified_interval"))):
        for e, value, band in zip(summary["eps"], values or [], bands or [None] * len(values or []), strict=True):
            out[f"attack/{key}/eps={e:.4g}"] = value
            if band:
                out[f"attack/{key}_low/eps={e:.4g}"], out[f"attack/{key}_high/eps={e:.4g}"] = band[0], band[1]
    clean, points = summary.get("g_clean_accuracy"), int(summary["points"])
    if clean is not None and points:
        band = rate_interval(round(clean * points), points)
        out |= {"attack/g_clean_accuracy": clean, "attack/g_clean_accuracy_low": band[0],
                "attack/g_clean_accuracy_high": band[1]}
    return out


def reduce_attack(kind: Any, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one attack config: attack.tsv, robust.csv, summary.json, provenance.json, the consistency check
    against its certification, the attacked example; wandb.json (what the W&B run logs)."""
    config_dir = Path(config_dir)
    plan, found = kind.merged(config_dir, found)
    merged = found.merged
    attack = plan["quantities"]["attack"]
    labels = np.asarray([i["label"] for i in plan["inputs"]])
    rows = np.flatnonzero(merged["attacked"])
    g = outcomes(merged["predict"][rows], labels[rows])
    # f's empirical robust accuracy: a base perturbation that was not finite (-2) shows nothing broken either
    f_robust = np.isin(merged["base_class"][rows], [UNJUDGED]) | (merged["base_class"][rows] == labels[rows, None]) \
        if attack["base"] else None
    certificates = kind.certificates(config_dir.parent, plan)
    compared, comparison = budgets_in_certificate_space(plan)
    checked = consistency(plan, merged, rows, labels, certificates, compared)
    tsv, curve = attack_tables(plan, merged, rows, labels, g, f_robust, compared, checked["certified_accuracy"])
    summary = attack_summary(plan, merged, rows, labels, g, f_robust, compared, comparison, checked, found)
    summary["certificates"] = "reduced" if certificates is not None else (
        "not reduced: run `audiocert certify` of the same config for the certified curve and the consistency check")
    summary["example"] = render_example(kind, config_dir, plan, merged)
    atomic_write_text(config_dir / "attack.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(config_dir / "robust.csv", "\n".join(curve) + "\n")
    atomic_write_json(config_dir / "provenance.json", kind.provenance(plan, found))
    atomic_write_json(config_dir / "wandb.json", attack_wandb(plan, summary))
    atomic_write_json(config_dir / "summary.json", seal(summary))  # written last: its presence means reduced
    if checked["points"]:
        log.warning("%s: %d of %d certified point(s) contradict their certificate (an honest certificate allows "
                    "about alpha N = %.3g; one-sided binomial p = %.3g): %s", plan["label"], checked["points"],
                    checked["certified_points"], float(plan["quantities"]["alpha"]) * checked["certified_points"],
                    checked["p_value"], checked["pairs"][:5])
    return summary


def attack_summary(plan: Mapping[str, Any], merged: Mapping[str, Any], rows: np.ndarray, labels: np.ndarray,
                   g: Mapping[str, np.ndarray], f_robust: np.ndarray | None, compared: np.ndarray | None,
                   comparison: str, checked: Mapping[str, Any], found: ShardInventory) -> dict[str, Any]:
    """summary.json of an attack config: per budget the outcomes' rates, the bounds with their intervals, the
    consistency with the certificates, costs."""
    attack = plan["quantities"]["attack"]
    upper = not_broken(g)
    certified = checked["certified_accuracy"]
    correct_counts = None if certified is None else [round(c * rows.size) for c in certified]
    return {
        "kind": KIND, "label": plan["label"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
        "space": attack["space"], "stage": plan["quantities"]["stage"],
        "sigma": float(plan["quantities"]["sigma"]), "eps": [float(e) for e in attack["eps"]],
        "eps_in_certificate_space": None if compared is None else compared.tolist(), "comparison": comparison,
        "points": int(rows.size),
        **{f"g_{key}": g[key].mean(axis=0).tolist() for key in ("held", "flipped", "undecided", "unjudged")},
        "unjudged": int(g["unjudged"].sum()),
        "g_robust_upper": upper.mean(axis=0).tolist(), "g_robust_upper_interval": intervals(upper),
        "g_clean_accuracy": float((merged["clean_predict"][rows] == labels[rows]).mean()) if rows.size else None,
        "f_robust_accuracy": None if f_robust is None else f_robust.mean(axis=0).tolist(),
        "certified_accuracy": certified,
        "certified_interval": None if correct_counts is None else [
            None if (i := rate_interval(k, int(rows.size))) is None else list(i) for k in correct_counts],
        "certified_points": checked["certified_points"], "contradictions": checked["points"],
        "contradiction_pairs": len(checked["pairs"]), "contradiction_p_value": checked["p_value"],
        "contradiction_points": checked["pairs"][:50],
        "alpha": float(plan["quantities"]["alpha"]), "settings": {k: v for k, v in attack.items() if k != "shard"},
        "passes_per_point": float(np.nansum(merged["g_passes"][rows]) + np.nansum(merged["f_passes"][rows]))
        / max(rows.size, 1),
        "judge_passes_per_point": float(merged["judge_passes"][rows].sum()) / max(rows.size, 1),
        "nonfinite_gradients": int(np.nansum(merged["g_nonfinite"][rows]) + np.nansum(merged["f_nonfinite"][rows])),
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
