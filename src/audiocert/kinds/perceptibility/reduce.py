"""The perceptibility reducer: coverage of the imperceptible sets by the certificates, audibility at certified
and grid radii, the imperceptible attack's results; points.tsv, audibility.csv, summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.kinds.derived import lipschitz_of, log
from audiocert.kinds.perceptibility.figures import render_attack_example, write_psd_figure
from audiocert.kinds.perceptibility.settings import KIND
from audiocert.provenance import atomic_write_json, atomic_write_text, seal
from audiocert.shards import (
    ShardInventory,
)
from audiocert.statistics import ABSTAIN, rate_interval


# ----------------------------------------------------------------------------------------------------------
# Reducing
# ----------------------------------------------------------------------------------------------------------
def waveform_radii(plan: Mapping[str, Any], radius: np.ndarray) -> tuple[np.ndarray | None, float | None, str]:
    """Certified waveform radii R_w (R at the waveform stage, R / L at magspec; None for mfbe), L, and in words."""
    stage = plan["quantities"]["stage"]
    if stage == "waveform":
        return radius.copy(), None, "the waveform stage certifies the waveform itself: R_w = R"
    bound = lipschitz_of(plan["config"])
    if bound is None:
        return None, None, (f"{stage} has no waveform counterpart (no Lipschitz bound of the waveform -> {stage} map): "
                            "its certificates say nothing about waveform perturbations, so no coverage is claimed")
    return radius / bound, bound, f"R_w = R / L with the proven bound L = {bound:.4f} of the waveform -> {stage} map"


def _quartiles(values: np.ndarray) -> dict[str, float | None]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"q25": None, "median": None, "q75": None}
    q = np.quantile(values, [0.25, 0.5, 0.75])
    return {"q25": float(q[0]), "median": float(q[1]), "q75": float(q[2])}


def coverage(radius_w: np.ndarray | None, certified: np.ndarray, budget: np.ndarray, upper: np.ndarray
             ) -> dict[str, Any]:
    """How certificates compare with the imperceptible sets: the largest imperceptible norm lies in [B, U], so a
    certificate (R_w > 0) covers the whole imperceptible set for sure when R_w >= U and cannot when R_w < B.

    Fractions are over all ``points`` (an abstention certifies nothing, so it covers nothing); the ratio R_w / B is
    over the certified points.
    """
    points = int(budget.size)
    if radius_w is None:
        return {"points": points, "certified": int(certified.sum()), "covers_proven": None, "covers_at_most": None,
                "fraction_covers_proven": None, "fraction_covers_at_most": None,
                "ratio": {"q25": None, "median": None, "q75": None}}
    proven = certified & (radius_w >= upper)
    at_most = certified & (radius_w >= budget)
    ratio = radius_w[certified] / budget[certified]
    return {"points": points, "certified": int(certified.sum()), "covers_proven": int(proven.sum()),
            "covers_at_most": int(at_most.sum()), "fraction_covers_proven": float(proven.mean()) if points else None,
            "fraction_covers_at_most": float(at_most.mean()) if points else None, "ratio": _quartiles(ratio)}


def _stack(points: Sequence[Mapping[str, Any]], block: str, name: str, field: str) -> np.ndarray:
    """(P, R[, K]) float array of one measurement of the points (None -> nan)."""
    return np.array([[[np.nan if v is None else v for v in (row if isinstance(row, list) else [row])]
                      for row in p[block][name][field]] for p in points], dtype=float)


def audibility_rows(points: Sequence[Mapping[str, Any]], block: str, radii: Sequence[float], label: str
                    ) -> list[dict[str, Any]]:
    """Per radius and direction kind: fraction audible (max excess > 0), excess quartiles, fraction of bins above,
    median waveform and stage norms, median PESQ / STOI (and how many were refused)."""
    rows = []
    if not points:
        return rows
    for name in ("random", "shaped"):
        excess = _stack(points, block, name, "excess_db")             # (P, R, K)
        above = _stack(points, block, name, "fraction_above")
        wave = _stack(points, block, name, "waveform_l2")
        stage = _stack(points, block, name, "stage_l2") if points[0][block][name]["stage_l2"] is not None else None
        pesq, stoi = _stack(points, block, name, "pesq"), _stack(points, block, name, "stoi")
        for k, radius in enumerate(radii):
            e = excess[:, k].ravel()
            q = _quartiles(e)
            rows.append({
                "radius": float(radius), "which": label, "direction": name, "perturbations": int(e.size),
                "fraction_audible": float((e > 0).mean()), "excess_db_q25": q["q25"], "excess_db_median": q["median"],
                "excess_db_q75": q["q75"], "excess_db_max": float(e.max()),
                "fraction_bins_above_mean": float(above[:, k].mean()),
                "waveform_l2_median": float(np.median(wave[:, k])),
                "stage_l2_median": None if stage is None else float(np.median(stage[:, k])),
                "pesq_median": _quartiles(pesq[:, k])["median"], "stoi_median": _quartiles(stoi[:, k])["median"],
                "quality_scored": int(np.isfinite(pesq[:, k]).sum()),
                "quality_refused": int((~np.isfinite(pesq[:, k])).sum() + (~np.isfinite(stoi[:, k])).sum()),
            })
    return rows


AUDIBILITY_COLUMNS = ("radius", "which", "direction", "perturbations", "fraction_audible", "excess_db_q25",
                      "excess_db_median", "excess_db_q75", "excess_db_max", "fraction_bins_above_mean",
                      "waveform_l2_median", "stage_l2_median", "pesq_median", "stoi_median", "quality_scored",
                      "quality_refused")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def points_tsv(plan: Mapping[str, Any], positions: Sequence[int], points: Sequence[Mapping[str, Any]],
               labels: np.ndarray, predict: np.ndarray, radius: np.ndarray, radius_w: np.ndarray | None,
               certified: np.ndarray, budget_snr: np.ndarray) -> list[str]:
    """points.tsv as lines: one row per point (its certificate, budget, coverage, audibility at its radius, and
    the imperceptible attack's result)."""
    settings = plan["quantities"][KIND]
    budget = np.array([p["budget"]["budget"] for p in points], dtype=float)
    upper = np.array([p["budget"]["upper_bound"] for p in points], dtype=float)
    tightness = np.array([p["budget"]["tightness"] for p in points], dtype=float)
    tsv = ["idx\tlabel\tpredict\tradius\twaveform_radius\tbudget\tupper_bound\ttightness\tratio\tcovers_proven\t"
           "covers_at_most\tbudget_snr_db\tround_trip\tfraction_audible_at_radius\tmax_excess_at_radius_db\t"
           "shaped_excess_at_radius_db\tpesq_at_radius\tstoi_at_radius\tclean_predict\tattack_found\tattack_l2\t"
           "attack_linf\tattack_excess_db\tattack_fraction_above\tattack_predict"]
    for k, point in enumerate(points):
        rw = None if radius_w is None else float(radius_w[k])
        at = point["certified"]
        random_at = np.array(at["random"]["excess_db"][0], dtype=float) if at else None
        attack = point["attack"] or {}
        tsv.append("\t".join(_cell(v) for v in (
            plan["examples"][positions[k]], int(labels[k]), int(predict[k]), float(radius[k]), rw,
            float(budget[k]), float(upper[k]), float(tightness[k]),
            None if rw is None or not certified[k] else rw / float(budget[k]),
            None if rw is None else int(certified[k] and rw >= upper[k]),
            None if rw is None else int(certified[k] and rw >= budget[k]), float(budget_snr[k]), point["round_trip"],
            None if random_at is None else float((random_at > 0).mean()),
            None if random_at is None else float(random_at.max()),
            at["shaped"]["excess_db"][0] if at else None,
            at["random"]["pesq"][0][0] if at and settings["quality_draws"] else None,
            at["random"]["stoi"][0][0] if at and settings["quality_draws"] else None,
            point["clean_predict"], None if not attack else int(attack["found"]), attack.get("l2"),
            attack.get("linf"), attack.get("max_excess_db"), attack.get("fraction_above"), attack.get("predict"))))
    return tsv


def psd_figure(config_dir: Path, plan: Mapping[str, Any], positions: Sequence[int]) -> dict[str, Any] | None:
    """psd.png of the first measured point; None (one warning) when it cannot be drawn: a figure must not cost the
    numbers."""
    if not positions:
        return None
    try:
        return write_psd_figure(config_dir, plan, positions[0])
    except Exception as error:
        log.warning("%s: the PSD figure could not be drawn: %s", config_dir, error)
        return None


def reduce_perceptibility(kind: Any, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one perceptibility config: points.tsv, audibility.csv, psd.png, the quietest attack's audio,
    provenance.json, wandb.json and summary.json (written last)."""
    config_dir = Path(config_dir)
    plan, found = kind.merged(config_dir, found)
    merged = found.merged
    settings = plan["quantities"][KIND]
    stage = plan["quantities"]["stage"]
    positions = [int(p) for p in np.flatnonzero(merged["measured"])]
    points = [merged["points"][p] for p in positions]
    certificates = settings["certificates"]
    predict = np.array([certificates["predict"][p] for p in positions], dtype=np.int64)
    radius = np.array([certificates["radius"][p] for p in positions], dtype=float)
    labels = np.array([plan["inputs"][p]["label"] for p in positions], dtype=np.int64)
    # "Certified" means one thing everywhere: a correct prediction with radius > 0 (wrong-class certificates are
    # counted apart and enter no figure).
    certified = (predict == labels) & (radius > 0)
    wrong_class = (predict != ABSTAIN) & (predict != labels) & (radius > 0)
    budget = np.array([p["budget"]["budget"] for p in points], dtype=float)
    upper = np.array([p["budget"]["upper_bound"] for p in points], dtype=float)
    tightness = np.array([p["budget"]["tightness"] for p in points], dtype=float)
    waveform_norm = np.array([p["waveform_norm"] for p in points], dtype=float)
    radius_w, bound, relation = waveform_radii(plan, radius)
    covered = coverage(radius_w, certified, budget, upper)
    grid_rows = audibility_rows(points, "grid", settings["radii"], "grid")
    at_certified = [p for k, p in enumerate(points) if p["certified"] is not None and certified[k]]
    certified_rows = audibility_rows(at_certified, "certified", [math.nan], "certified")
    attack_summary, attack_rows = summarise_attacks(plan, positions, points, labels, predict, radius_w, certified)

    with np.errstate(divide="ignore"):
        budget_snr = 20.0 * np.log10(waveform_norm / budget)
    tsv = points_tsv(plan, positions, points, labels, predict, radius, radius_w, certified, budget_snr)
    csv = [",".join(AUDIBILITY_COLUMNS)] + [",".join(_cell(row[c]) for c in AUDIBILITY_COLUMNS)
                                            for row in grid_rows + certified_rows]

    budgets = {"budget": _quartiles(budget), "upper_bound": _quartiles(upper), "tightness": _quartiles(tightness),
               "budget_snr_db": _quartiles(budget_snr), "waveform_norm": _quartiles(waveform_norm),
               "round_trip": _quartiles(np.array([p["round_trip"] for p in points if p["round_trip"] is not None]))}
    errors = sorted({e for p in points for e in p["quality_errors"]})
    summary = {
        "kind": KIND, "label": plan["label"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
        "stage": stage, "space": settings["space"], "sigma": float(plan["quantities"]["sigma"]),
        "alpha": float(plan["quantities"]["alpha"]), "points": len(points), "radii": settings["radii"],
        "lipschitz_bound": bound, "relation": relation, "coverage": covered,
        "waveform_radius": None if radius_w is None else _quartiles(radius_w[certified]),
        "radius": _quartiles(radius[certified]), "budgets": budgets, "audibility": grid_rows,
        "audibility_at_certified": certified_rows, "points_at_certified": len(at_certified),
        "certified_points": int(certified.sum()), "wrong_class_certificates": int(wrong_class.sum()),
        "quality_errors": errors[:20], "attack": attack_summary,
        "settings": {k: v for k, v in settings.items() if k != "certificates"},
        "seconds_per_point": float(merged["seconds"][positions].mean()) if positions else None,
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
    summary["headline"] = headline(summary)
    summary["psd_figure"] = psd_figure(config_dir, plan, positions)
    summary["example"] = render_attack_example(kind, config_dir, plan, merged, positions, points, radius_w)
    atomic_write_text(config_dir / "points.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(config_dir / "audibility.csv", "\n".join(csv) + "\n")
    if attack_rows:
        atomic_write_text(config_dir / "attack.tsv", "\n".join(attack_rows) + "\n")
    atomic_write_json(config_dir / "provenance.json", kind.provenance(plan, found))
    atomic_write_json(config_dir / "wandb.json", wandb_spec(plan, summary, points, positions, budget, upper,
                                                            radius_w))
    atomic_write_json(config_dir / "summary.json", seal(summary))  # written last: its presence means reduced
    return summary


def summarise_attacks(plan: Mapping[str, Any], positions: Sequence[int], points: Sequence[Mapping[str, Any]],
                      labels: np.ndarray, predict: np.ndarray, radius_w: np.ndarray | None, certified: np.ndarray
                      ) -> tuple[dict[str, Any] | None, list[str]]:
    """The imperceptible attack over the points: how many were attacked and broken, the quietest successful
    attacks against the certified waveform radii, and contradictions (a success of norm < R_w whose class is not
    the certified one: an honest certificate allows that with probability about alpha per point)."""
    if not plan["quantities"][KIND]["attack"]["enabled"]:
        return None, []
    rows = ["idx\tlabel\tcertified_class\twaveform_radius\teps0\tfound\tinaudible\tl2\tlinf\tmax_excess_db\t"
            "fraction_above\tpredict\tjudged\tfinal_eps\tpasses"]
    found_l2, found_excess, ratios, contradictions = [], [], [], []
    attacked = inaudible = 0
    for k, point in enumerate(points):
        attack = point["attack"]
        if attack is None:
            continue
        attacked += 1
        rw = None if radius_w is None or not certified[k] else float(radius_w[k])
        silent = attack["found"] and attack["max_excess_db"] <= 0
        inaudible += int(silent)
        if attack["found"]:
            found_l2.append(attack["l2"])
            found_excess.append(attack["max_excess_db"])
            if rw is not None:
                ratios.append(attack["l2"] / rw)
                if attack["l2"] < rw and attack["predict"] != int(predict[k]):
                    contradictions.append({"idx": int(plan["examples"][positions[k]]), "l2": attack["l2"],
                                           "waveform_radius": rw, "certified_class": int(predict[k]),
                                           "attacked_class": attack["predict"]})
        rows.append("\t".join(_cell(v) for v in (
            plan["examples"][positions[k]], int(labels[k]), int(predict[k]), rw, attack["eps0"], int(attack["found"]),
            int(silent), attack["l2"], attack["linf"], attack["max_excess_db"], attack["fraction_above"],
            attack["predict"], ",".join(str(c) for c in attack["judged"]), attack["final_eps"], attack["passes"])))
    correct = sum(1 for p in points if p["clean_predict"] is not None and p["clean_predict"] == p["label"])
    summary = {
        "points": len(points), "clean_correct": correct, "attacked": attacked, "found": len(found_l2),
        "inaudible": inaudible, "l2": _quartiles(np.array(found_l2)),
        "max_excess_db": _quartiles(np.array(found_excess)),
        "l2_over_waveform_radius": _quartiles(np.array(ratios)), "contradictions": len(contradictions),
        "contradiction_points": contradictions[:20],
    }
    return summary, rows


def headline(s: Mapping[str, Any]) -> str:
    """One line: coverage, audibility at the certified radius, the quietest attack."""
    c = s["coverage"]
    parts = []
    if c["fraction_covers_at_most"] is None:
        parts.append(f"{s['stage']}: no waveform certificate; median imperceptible budget "
                     f"{s['budgets']['budget']['median']:.3g}")
    else:
        ratio = c["ratio"]["median"]
        parts.append(f"certificates covering the imperceptible set: {c['covers_proven']} proven, at most "
                     f"{c['covers_at_most']} of {c['points']} points; R_w / budget median "
                     f"{'n/a' if ratio is None else f'{ratio:.3g}'}")
    random_at = [r for r in s["audibility_at_certified"] if r["direction"] == "random"]
    if random_at:
        parts.append(f"random perturbations of the certified norm audible in {random_at[0]['fraction_audible']:.0%}")
    attack = s.get("attack")
    if attack:
        l2 = attack["l2"]["median"]
        parts.append(f"imperceptible attack: {attack['found']} of {attack['attacked']} broken ({attack['inaudible']} "
                     f"inaudible), median L2 {'n/a' if l2 is None else f'{l2:.3g}'}")
    return "; ".join(parts)


def wandb_spec(plan: Mapping[str, Any], summary: Mapping[str, Any], points: Sequence[Mapping[str, Any]],
               positions: Sequence[int], budget: np.ndarray, upper: np.ndarray, radius_w: np.ndarray | None
               ) -> dict[str, Any]:
    """What the W&B run logs (tracking.ConfigRun): the fraction-audible curve, the budgets, summary metrics."""
    rows = {r["radius"]: r for r in summary["audibility"] if r["direction"] == "random"}
    shaped = {r["radius"]: r for r in summary["audibility"] if r["direction"] == "shaped"}
    table = [[r, rows[r]["fraction_audible"], shaped[r]["fraction_audible"], rows[r]["excess_db_median"],
              shaped[r]["excess_db_median"], rows[r]["pesq_median"], rows[r]["stoi_median"]] for r in rows]
    budgets = [[int(plan["examples"][p]), float(budget[k]), float(upper[k]),
                None if radius_w is None else float(radius_w[k]),
                None if radius_w is None else float(radius_w[k] / budget[k])] for k, p in enumerate(positions)]
    c, attack = summary["coverage"], summary.get("attack") or {}
    metrics = {"perceptibility/points": summary["points"],
               "perceptibility/fraction_covers_proven": c["fraction_covers_proven"],
               "perceptibility/fraction_covers_at_most": c["fraction_covers_at_most"],
               "perceptibility/ratio_median": c["ratio"]["median"],
               "perceptibility/budget_median": summary["budgets"]["budget"]["median"],
               "perceptibility/tightness_median": summary["budgets"]["tightness"]["median"]}
    for row in summary["audibility_at_certified"]:
        metrics[f"perceptibility/fraction_audible_at_certified/{row['direction']}"] = row["fraction_audible"]
    if attack:
        metrics |= {"perceptibility/attack_found": attack["found"], "perceptibility/attack_inaudible":
                    attack["inaudible"], "perceptibility/attack_l2_median": attack["l2"]["median"]}
    return {"job_type": KIND, "tables": {
        "perceptibility/audibility": {"columns": ["radius", "fraction_audible_random", "fraction_audible_shaped",
                                                  "excess_db_median_random", "excess_db_median_shaped",
                                                  "pesq_median_random", "stoi_median_random"], "data": table},
        "perceptibility/budgets": {"columns": ["idx", "budget", "upper_bound", "waveform_radius", "ratio"],
                                   "data": budgets}},
        "lines": [{"table": "perceptibility/audibility", "x": "radius", "y": y,
                   "title": f"{y} vs radius ({plan['label']})"}
                  for y in ("fraction_audible_random", "fraction_audible_shaped")],
        "summary": {k: v for k, v in metrics.items() if v is not None} | coverage_intervals(summary),
        # The quietest successful attack and the PSD figure, as the reducer wrote them (absent files are skipped).
        "media": [{"key": "perceptibility/attack_clean", "path": "attack_clean.wav", "type": "audio",
                   "caption": "clean"},
                  {"key": "perceptibility/attack", "path": "attack.wav", "type": "audio", "caption": "attacked"},
                  {"key": "perceptibility/psd", "path": "psd.png", "type": "image",
                   "caption": "masking threshold, clean PSD and perturbation PSDs"}],
        "comparison": {"label": plan["label"], "kind": KIND, "stage": plan["quantities"].get("stage"),
                       "sigma": plan["quantities"].get("sigma"), "algorithm": "perceptibility",
                       "points": summary["points"]}}


def coverage_intervals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The coverage fractions over the points with their 95% Clopper-Pearson intervals."""
    points, out = int(summary["points"] or 0), {}
    for key in ("fraction_covers_proven", "fraction_covers_at_most"):
        value = summary["coverage"].get(key)
        if value is not None and points:
            band = rate_interval(round(value * points), points)
            out |= {f"perceptibility/{key}_low": band[0], f"perceptibility/{key}_high": band[1]}
    return out
