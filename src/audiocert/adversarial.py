"""Attacks as shard work: the empirical side of a certificate, planned, sharded, resumed and reduced like it.

``audiocert attack`` composes the same config as ``audiocert certify`` (same dataset, checkpoint, stage, sigma,
seed, test points) plus an ``attack`` section (conf/attack/). Each certification config gets an attack config in a
directory of its own inside the certification's, ``<config>/attack-<space>-<hash>/``, with a plan of kind
"attack": the certification's quantities and inputs, the checked attack settings (budgets resolved), and shards of
``attack.shard.examples`` test points x a range of budget indices (``ranges = {"eps": [lo, hi)}``). A shard runs
:func:`audiocert.attacks.attack_point` on each of its points: SmoothAdv PGD on g and plain PGD on f at each
budget, judged by PREDICT of g (and f's class) on the attacked input; its record holds the per-budget results
(no deltas), and the delta of its smallest successful attack on g beside it (``*.delta.npy``, its SHA-256 in the
record) for the report's attacked example. The budgets' results do not depend on how the budgets are cut into
shards (the attack solves each budget on its own, on common noise draws), so sharding by budget is sound.

The reducer (:meth:`AttackKind.reduce`) writes attack.tsv (one row per point and budget), robust.csv (empirical
robust accuracy of g and f per budget, beside certified accuracy at the same radius), summary.json and the
consistency check against the certification of the same config: a point certified at radius R with class c whose
attacked input at a budget eps <= R (in the certificate's space) PREDICTs another class is a contradiction, which
an honest certificate allows with probability about alpha per point. The attacked example is rendered as audio
and a spectrogram image.

Budgets: space "stage" attacks at the report's radii (the certificate's space); space "waveform" edits the audio,
at the waveform-equivalent radii r / L of the report's radii for stages with a proven Lipschitz bound L
(magspec; mfbe gets the same grid for comparison, though it has no waveform certificate), and at the radii
themselves for the waveform stage (where the two spaces are one).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from audiocert.attacks import AttackSettings, attack_inputs, attack_point, check_attack_settings, predict_attacked
from audiocert.lipschitz import waveform_lipschitz_bound
from audiocert.provenance import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_safe_name,
    code_version,
    read_json,
    stable_hash,
)
from audiocert.settings import check_number
from audiocert.shards import (
    IncompleteSweepError,
    Shard,
    ShardInventory,
    WorkKind,
    check_plan_consistency,
    cut_shards,
    inventory,
    is_int,
    read_plan,
    register_kind,
    select_points,
    shard_path,
)
from audiocert.stages import STAGES, WaveformBound
from audiocert.stages import stage as stage_entry
from audiocert.statistics import ABSTAIN, REPORT_RADII, certified_accuracy

log = logging.getLogger(__name__)

KIND = "attack"
RESULT_FIELDS = ("predict", "base_class")  # per budget: PREDICT of g on x + delta_g, f's class on x + delta_f
PGD_FIELDS = ("l2", "linf", "loss", "passes", "eval_passes", "nonfinite", "restarts", "flipped", "zero_steps")


# ----------------------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------------------
def lipschitz_of(config: Mapping[str, Any]) -> float | None:
    """The proven bound L of waveform -> stage for a config's stage (None where there is none)."""
    stage = config["representation"]["stage"]
    if stage_entry(stage).waveform_bound is not WaveformBound.LIPSCHITZ:
        return None
    return _bound(json.dumps(config.get("frontend"), sort_keys=True), int(config["dataset"]["crop_samples"]))


@functools.lru_cache(maxsize=16)
def _bound(frontend_json: str, crop_samples: int) -> float:
    return float(waveform_lipschitz_bound(json.loads(frontend_json), crop_samples).bound)


def default_budgets(config: Mapping[str, Any], space: str) -> tuple[float, ...]:
    """The report's radii at the stage; for a waveform attack on a non-waveform stage their r / L, with L the
    proven bound of magspec (mfbe, which has none, is attacked on the same grid for comparison)."""
    stage = config["representation"]["stage"]
    if space == "stage" or stage == "waveform":
        return REPORT_RADII
    magspec = {**config, "representation": {**config["representation"], "stage": "magspec"}}
    bound = lipschitz_of(magspec)
    if bound is None:
        raise ValueError(f"no waveform budgets for stage {stage!r}: give attack.eps explicitly")
    return tuple(r / bound for r in REPORT_RADII)


def attack_settings(config: Mapping[str, Any]) -> AttackSettings:
    """The checked ``attack`` section of a resolved config, budgets resolved (null: :func:`default_budgets`)."""
    section = dict(config.get("attack") or {})
    if not section:
        raise ValueError("the config has no attack section: run `audiocert attack` (it adds conf/attack/)")
    stage = config["representation"]["stage"]
    if section.get("eps") is None:
        check_attack_settings({**section, "eps": [1.0]}, stage, STAGES)  # the other fields, named, first
        section["eps"] = list(default_budgets(config, str(section["space"])))
    return check_attack_settings(section, stage, STAGES)


def attack_quantities(config: Mapping[str, Any], certify_quantities: Mapping[str, Any]) -> dict[str, Any]:
    """What determines an attack's results: the certification's quantities (the same f, g, points and streams)
    and, under "attack", the attack's settings with its budgets resolved; the attack config's hash is computed
    from this."""
    settings = attack_settings(config)
    section = config["attack"]
    return {**{k: v for k, v in certify_quantities.items() if k != "attack"},
            "attack": {**dataclasses.asdict(settings), "eps": list(settings.eps),
                       "points_per_speaker": section.get("points_per_speaker"),
                       "shard": {"examples": int(section["shard"]["examples"]),
                                 "eps": None if section["shard"].get("eps") is None else int(section["shard"]["eps"])}}}


def make_attack_plan(cfg: DictConfig, certify_plan: Mapping[str, Any], certify_dir: Path | None = None
                     ) -> dict[str, Any]:
    """The attack plan of a config, on the points of its certification plan (``certify_plan``, as make_plan made
    it: checked config, checkpoint digest, fingerprinted inputs). The certification need not be reduced yet
    (``certify_dir`` is not read): the reducer compares with its certificates when they exist."""
    config = OmegaConf.to_container(cfg, resolve=True)
    quantities = attack_quantities(config, certify_plan["quantities"])
    settings = quantities["attack"]
    check_safe_name(cfg.attack.name, "attack.name")
    for field in ("examples",):
        check_number(settings["shard"][field], f"attack.shard.{field}", minimum=1, integer=True)
    per_shard = settings["shard"]["eps"] or len(settings["eps"])
    check_number(per_shard, "attack.shard.eps", minimum=1, integer=True)
    points = settings["points_per_speaker"]
    if points is not None:
        check_number(points, "attack.points_per_speaker", minimum=1, integer=True)
    positions = select_points(certify_plan, points)
    groups = [(positions, {"eps": (lo, min(lo + per_shard, len(settings["eps"])))})
              for lo in range(0, len(settings["eps"]), per_shard)]
    shards = []
    for points, ranges in groups:
        shards += cut_shards([(points, ranges)], settings["shard"]["examples"], len(settings["eps"]),
                             first_index=len(shards))
    return {
        "kind": KIND, "config_hash": stable_hash(quantities), "code_version": code_version(),
        "label": f"{certify_plan['label']}-attack-{settings['space']}", "config": config, "quantities": quantities,
        "parent_hash": certify_plan["config_hash"], "checkpoint": certify_plan["checkpoint"],
        "examples": certify_plan["examples"], "inputs": certify_plan["inputs"],
        "inputs_digest": certify_plan["inputs_digest"], "shards": [s.to_json() for s in shards],
    }


def attack_dir_for(certify_dir: Path, plan: Mapping[str, Any]) -> Path:
    return Path(certify_dir) / f"attack-{plan['quantities']['attack']['space']}-{plan['config_hash'][:8]}"


def attack_dirs(certify_dir: Path) -> list[Path]:
    """The attack config directories of a certification config."""
    return sorted(p.parent for p in Path(certify_dir).glob("attack-*/plan.json"))


# ----------------------------------------------------------------------------------------------------------
# The kind: run, check, merge, reduce
# ----------------------------------------------------------------------------------------------------------
def _finite_list(values: Any, length: int, minimum: float = 0.0, integer: bool = False) -> bool:
    kinds = (int,) if integer else (int, float)
    return isinstance(values, list) and len(values) == length and all(
        type(v) in kinds and math.isfinite(v) and v >= minimum for v in values)


class AttackKind(WorkKind):
    """Attacks on g (and f) at budgets, judged by PREDICT; one round."""

    name = KIND
    range_keys = ("eps",)
    payload_keys = ("results", "example_delta")

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        certify = {k: v for k, v in plan["quantities"].items() if k != "attack"}
        check_plan_consistency({**plan, "quantities": certify})
        expected = attack_quantities(plan["config"], certify)
        assert expected == plan["quantities"], "its attack quantities differ from what its config says"

    @staticmethod
    def settings(plan: Mapping[str, Any], shard: Shard | None = None) -> AttackSettings:
        attack = dict(plan["quantities"]["attack"])
        eps = attack["eps"] if shard is None else attack["eps"][shard.ranges["eps"][0]:shard.ranges["eps"][1]]
        fields = {f.name for f in dataclasses.fields(AttackSettings)}
        return AttackSettings(**{k: v for k, v in attack.items() if k in fields and k != "eps"}, eps=tuple(eps))

    def run(self, work: Any, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        context = work.context
        settings = self.settings(work.plan, shard)
        results, best = [], None
        for done, position in enumerate(shard.examples, start=1):
            waveform, x_stage, planned = context.example(position)
            # PREDICT of g on the clean input (same n, alpha, stream): an attack succeeds only where g was right.
            clean = int(predict_attacked(context.smooth, x_stage[None], settings.n, settings.alpha,
                                         settings.batch_size, planned["index"])[0])
            x, to_stage = attack_inputs(context.staged, waveform.to(context.device), settings.space)
            point = attack_point(context.smooth, x, planned["label"], settings, example=planned["index"],
                                 to_stage=to_stage)
            record = point.to_record()
            record.pop("settings", None)  # the plan holds them
            record["clean_predict"] = clean
            results.append(record)
            k = point.smallest_success() if clean == planned["label"] else None
            if k is not None and (best is None or settings.eps[k] < best[0]):
                best = (settings.eps[k], position, k, point.smoothed.delta[k].detach().float().cpu().numpy())
            if on_example is not None:
                on_example(done, len(shard.examples))
        example_delta = None
        if best is not None and int(work.plan["config"]["attack"].get("save_examples", 1)):
            eps, position, k, delta = best
            buffer = io.BytesIO()
            np.save(buffer, delta.astype(np.float32), allow_pickle=False)
            data = buffer.getvalue()
            path = shard_path(work.config_dir, work.plan["config_hash"], shard.index).with_suffix(".delta.npy")
            atomic_write_bytes(path, data)  # before the record: a record names only a delta that is on disk
            example_delta = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "position": position,
                             "eps_index": shard.ranges["eps"][0] + k, "eps": float(eps)}
        return {"results": results, "example_delta": example_delta}

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        settings = self.settings(plan, shard)
        classes = int(plan["config"]["dataset"]["num_classes"])
        width = len(settings.eps)
        results = record.get("results")
        if not isinstance(results, list) or len(results) != len(inputs):
            return "results are not one entry per example", None
        for point, planned in zip(results, inputs, strict=True):
            if not isinstance(point, dict) or point.get("example") != planned["index"] or \
                    point.get("label") != planned["label"]:
                return f"results of example {planned['index']} are missing or name another example", None
            if point.get("eps") != list(settings.eps):
                return f"results of example {planned['index']} cover budgets {point.get('eps')}", None
            clean = point.get("clean_predict")
            if not (is_int(clean) and (clean == ABSTAIN or 0 <= clean < classes)):
                return f"the clean PREDICT of example {planned['index']} is not a class or -1", None
            predict = point.get("predict")
            if not (isinstance(predict, list) and len(predict) == width and all(
                    is_int(c) and (c == ABSTAIN or 0 <= c < classes) for c in predict)):
                return f"PREDICT classes of example {planned['index']} are not {width} classes or -1", None
            smoothed = point.get("smoothed")
            if not isinstance(smoothed, dict):
                return f"no attack on g for example {planned['index']}", None
            for key in ("l2", "linf", "loss"):
                if key == "loss" and not (isinstance(smoothed.get(key), list) and len(smoothed[key]) == width):
                    return f"attack losses of example {planned['index']} are not {width} numbers", None
                if key != "loss" and not _finite_list(smoothed.get(key), width):
                    return f"{key} norms of example {planned['index']} are not {width} finite numbers", None
            if any(norm > eps * (1 + 1e-6) for norm, eps in zip(smoothed["l2"], settings.eps, strict=True)):
                return f"an attacked input of example {planned['index']} lies outside its L2 ball", None
            for key in ("passes", "eval_passes", "nonfinite", "restarts", "zero_steps"):
                if not _finite_list(smoothed.get(key), width, integer=True):
                    return f"{key} of example {planned['index']} are not {width} counts", None
            if settings.base:
                base, base_class = point.get("base"), point.get("base_class")
                if not (isinstance(base, dict) and _finite_list(base.get("l2"), width) and isinstance(base_class, list)
                        and len(base_class) == width and all(is_int(c) and 0 <= c < classes for c in base_class)):
                    return f"the attack on f of example {planned['index']} is missing or damaged", None
        delta = record.get("example_delta")
        if delta is not None:
            if not (isinstance(delta, dict) and isinstance(delta.get("file"), str) and "/" not in delta["file"]
                    and isinstance(delta.get("sha256"), str) and delta.get("position") in shard.examples
                    and is_int(delta.get("eps_index"))):
                return "example_delta is damaged", None
        return "", results

    def accumulator(self, plan: Mapping[str, Any]) -> AttackAccumulator:
        return AttackAccumulator(plan)

    def reduce(self, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
        return reduce_attack(config_dir, found)


class AttackAccumulator:
    """Per (point, budget) arrays of the attack results, filled as records are read (P x E; -2 = not covered)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        points, budgets = len(plan["examples"]), len(plan["quantities"]["attack"]["eps"])
        self.plan = plan
        self.arrays = {name: np.full((points, budgets), -2, dtype=np.int64) for name in RESULT_FIELDS}
        self.arrays |= {f"g_{name}": np.full((points, budgets), np.nan) for name in PGD_FIELDS}
        self.arrays |= {f"f_{name}": np.full((points, budgets), np.nan) for name in PGD_FIELDS}
        self.covered = np.zeros((points, budgets), dtype=np.int64)
        self.clean = np.full(points, -2, dtype=np.int64)
        self.seconds = np.zeros(points)
        self.deltas: list[dict[str, Any]] = []

    def add(self, record: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        lo, hi = record["ranges"]["eps"]
        for position, point in zip(record["examples"], results, strict=True):
            self.covered[position, lo:hi] += 1
            self.clean[position] = point["clean_predict"]
            self.arrays["predict"][position, lo:hi] = point["predict"]
            if "base_class" in point:
                self.arrays["base_class"][position, lo:hi] = point["base_class"]
            for name in PGD_FIELDS:
                self.arrays[f"g_{name}"][position, lo:hi] = np.asarray(point["smoothed"][name], dtype=float)
                if "base" in point:
                    self.arrays[f"f_{name}"][position, lo:hi] = np.asarray(point["base"][name], dtype=float)
        self.seconds[record["examples"]] += record["elapsed_s"] / len(record["examples"])
        if record.get("example_delta"):
            self.deltas.append({**record["example_delta"], "index": record["index"]})

    def result(self) -> dict[str, Any]:
        attacked = self.covered.sum(axis=1) > 0
        if np.any(self.covered[attacked] != 1):
            raise IncompleteSweepError("attack shards cover some (point, budget) other than exactly once")
        return {**self.arrays, "attacked": attacked, "clean_predict": self.clean, "seconds": self.seconds,
                "deltas": self.deltas}


ATTACK = register_kind(AttackKind())


# ----------------------------------------------------------------------------------------------------------
# Reducing: tables, the consistency check against the certificates, the attacked example
# ----------------------------------------------------------------------------------------------------------
def certificate_radii(plan: Mapping[str, Any], certify_dir: Path) -> dict[int, tuple[int, float]] | None:
    """dataset index -> (certified class or -1, radius) from the certification's certificates.tsv when the
    certification of exactly these quantities is reduced (None otherwise)."""
    from audiocert.reducer import planned_certificates  # the certification reducer, a sibling layer

    rows = planned_certificates(certify_dir, {"config_hash": plan["parent_hash"], "examples": plan["examples"]})
    return None if rows is None else {idx: (r["predict"], r["radius"]) for idx, r in rows.items()}


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


def reduce_attack(config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one attack config: attack.tsv, robust.csv, summary.json, provenance.json, the consistency check
    against its certification, the attacked example; wandb.json (what the W&B run logs)."""
    config_dir = Path(config_dir)
    plan = read_plan(config_dir)
    if found is None or found.merged is None:
        found = inventory(config_dir, plan, merge=True)
    if not found.complete:
        raise IncompleteSweepError(found.problems(config_dir))
    merged = found.merged
    attack = plan["quantities"]["attack"]
    eps = np.asarray(attack["eps"], dtype=float)
    labels = np.asarray([i["label"] for i in plan["inputs"]])
    attacked = merged["attacked"]
    rows = np.flatnonzero(attacked)
    g_robust = merged["predict"][rows] == labels[rows, None]
    f_robust = merged["base_class"][rows] == labels[rows, None] if attack["base"] else None
    certificates = certificate_radii(plan, config_dir.parent)
    compared, comparison = budgets_in_certificate_space(plan)
    certified_at = None
    contradictions: list[dict[str, Any]] = []
    if certificates is not None:
        certs = [certificates.get(plan["examples"][p]) for p in rows]
        if all(c is not None for c in certs):
            predicted = np.array([c[0] for c in certs])
            radius = np.array([c[1] for c in certs])
            correct = predicted == labels[rows]
            if compared is not None:
                certified_at = [certified_accuracy(radius, correct, r) for r in compared]
                for k, p in enumerate(rows):
                    for e in range(eps.size):
                        g_class = int(merged["predict"][p, e])
                        # Certified: g(x + delta) = c for every ||delta|| < R (strictly inside the ball).
                        if predicted[k] != ABSTAIN and compared[e] < radius[k] and g_class not in (ABSTAIN,
                                                                                                 int(predicted[k])):
                            contradictions.append({"idx": int(plan["examples"][p]), "eps": float(eps[e]),
                                                   "radius": float(radius[k]), "certified_class": int(predicted[k]),
                                                   "attacked_class": g_class})
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
    example = render_example(config_dir, plan, merged)
    summary["example"] = example
    provenance = {"config": plan["config"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
                  "quantities": plan["quantities"], "plan_code_version": plan["code_version"],
                  "reducer_code_version": code_version(), "checkpoint": plan["checkpoint"],
                  "inputs_digest": plan["inputs_digest"], "shards": len(found.records),
                  "shard_hosts": sorted({r["host"] for r in found.records.values()})}
    table = [[float(eps[e]), float(g_robust[:, e].mean()), None if f_robust is None else float(f_robust[:, e].mean()),
              None if certified_at is None else float(certified_at[e])] for e in range(eps.size)]
    wandb = {"job_type": KIND, "tables": {"attack/robust_accuracy": {
        "columns": ["eps", "g_robust_accuracy", "f_robust_accuracy", "certified_accuracy"], "data": table}},
        "lines": [{"table": "attack/robust_accuracy", "x": "eps", "y": y, "title": f"{y} vs eps ({plan['label']})"}
                  for y in ("g_robust_accuracy", "f_robust_accuracy", "certified_accuracy")
                  if not (y == "f_robust_accuracy" and f_robust is None) and not (
                      y == "certified_accuracy" and certified_at is None)],
        "summary": {"attack/contradictions": len(contradictions), "attack/points": int(rows.size),
                    **{f"attack/g_robust_accuracy/eps={e:.4g}": float(v) for e, v in zip(
                        eps, g_robust.mean(axis=0), strict=True)}}}
    atomic_write_text(config_dir / "attack.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(config_dir / "robust.csv", "\n".join(curve) + "\n")
    atomic_write_json(config_dir / "provenance.json", provenance)
    atomic_write_json(config_dir / "wandb.json", wandb)
    atomic_write_json(config_dir / "summary.json", summary)  # written last: its presence means reduced
    if contradictions:
        log.warning("%s: %d attacked input(s) within a certified radius PREDICT another class (an honest "
                    "certificate allows this with probability about alpha = %g per point): %s", plan["label"],
                    len(contradictions), alpha, contradictions[:5])
    return summary


def render_example(config_dir: Path, plan: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any] | None:
    """The smallest successful attack on g among the shards' saved deltas, as audio and a spectrogram image
    (clean, attacked, and the difference); None when no attack on g succeeded (or none was saved)."""
    candidates = sorted(merged["deltas"], key=lambda d: (d["eps"], d["index"]))
    for candidate in candidates:
        path = config_dir / "shards" / candidate["file"]
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if hashlib.sha256(data).hexdigest() != candidate["sha256"]:
            log.warning("%s does not match the SHA-256 its shard record names: not rendered", path)
            continue
        delta = np.load(io.BytesIO(data), allow_pickle=False)
        return write_example(config_dir, plan, candidate, torch.from_numpy(delta))
    return None


def write_example(config_dir: Path, plan: Mapping[str, Any], candidate: Mapping[str, Any],
                  delta: torch.Tensor) -> dict[str, Any]:
    """example.wav (attacked audio, where a waveform exists), example_clean.wav and example.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile

    from audiocert.checkpoint import build_frontend
    from audiocert.data import build_datasets

    position = candidate["position"]
    planned = plan["inputs"][position]
    config = plan["config"]
    waveform, _ = build_datasets(config["dataset"]).test[planned["index"]]
    frontend = build_frontend(config.get("frontend"))
    stage, space = config["representation"]["stage"], plan["quantities"]["attack"]["space"]
    rate = int(config["dataset"]["sample_rate"])
    with torch.no_grad():
        if space == "waveform" or stage == "waveform":
            attacked_wave = waveform + delta
            audio_note = "the attacked waveform"
        elif stage == "magspec":
            from audiocert.psychoacoustics import magspec_to_waveform

            clean_stage = frontend.to_stage(waveform[None], stage)[0]
            attacked_wave = magspec_to_waveform(clean_stage + delta, waveform, frontend).float()
            audio_note = "resynthesised from the attacked magnitude spectrogram with the clean phase"
        else:
            attacked_wave = None
            audio_note = "none: a normalized-filterbank perturbation has no waveform"
        clean_mag = frontend.to_stage(waveform[None], "magspec")[0]
        shown = frontend.to_stage(attacked_wave[None], "magspec")[0] if attacked_wave is not None else None
    files = {}
    soundfile.write(config_dir / "example_clean.wav", waveform.numpy(), rate)
    files["clean_audio"] = "example_clean.wav"
    if attacked_wave is not None:
        soundfile.write(config_dir / "example.wav", attacked_wave.clamp(-1, 1).numpy(), rate)
        files["attacked_audio"] = "example.wav"
    panels = [("clean |rfft| (dB)", clean_mag)]
    if shown is not None:
        panels += [(f"attacked, eps = {candidate['eps']:.4g} (dB)", shown),
                   ("difference (dB)", (shown - clean_mag).abs())]
    elif stage == "mfbe":
        clean_stage = frontend.to_stage(waveform[None], stage)[0]
        panels += [(f"attacked mfbe, eps = {candidate['eps']:.4g}", clean_stage + delta), ("delta (mfbe)", delta)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels, strict=True):
        values = image.T.numpy()
        if "dB" in title:
            values = 20 * np.log10(np.maximum(values, 1e-6))
        ax.imshow(values, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
    axes[0][0].set_ylabel("bin")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(config_dir / "example.png", buffer.getvalue())
    files["image"] = "example.png"
    return {"idx": int(planned["index"]), "label": int(planned["label"]), "eps": float(candidate["eps"]),
            "space": space, "audio": audio_note, "delta_l2": float(delta.double().norm()), **files}


def read_attack_summary(attack_dir: Path) -> dict[str, Any] | None:
    """summary.json of a reduced attack config (None when not reduced or damaged)."""
    try:
        summary = read_json(attack_dir / "summary.json") if (attack_dir / "summary.json").is_file() else None
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("kind") == KIND else None


# The seam audiocert.launch.plan_config plans every kind of work through.
make_kind_plan = make_attack_plan
kind_dir_for = attack_dir_for

__all__ = ["ATTACK", "AttackKind", "attack_dir_for", "attack_dirs", "make_attack_plan", "read_attack_summary",
           "reduce_attack"]
