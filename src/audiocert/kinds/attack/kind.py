"""Attacks as a kind of work: the empirical side of a certificate, planned, sharded, resumed and reduced like it.

``audiocert attack`` composes the same config as ``audiocert certify`` plus an ``attack`` section (conf/attack/).
Each certification config gets an attack config in a directory of its own inside the certification's,
``<config>/attack-<space>-<hash>/``. A shard runs :func:`audiocert.attacks.attack_point` on each of its points:
SmoothAdv PGD on g and plain PGD on f at each budget, judged by PREDICT of g (and f's class) on the attacked
input; its record holds the per-budget results (no deltas), and the delta of its smallest successful attack on g
beside it (``*.delta.npy``, its SHA-256 in the record) for the report's attacked example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.attacks import UNJUDGED, AttackSettings, attack_inputs, attack_point, predict_attacked
from audiocert.kinds.attack.plan import KIND, PGD_FIELDS, RESULT_FIELDS, _finite_list, attack_quantities
from audiocert.kinds.attack.reduce import reduce_attack
from audiocert.kinds.attack.section import robustness_section
from audiocert.kinds.derived import DerivedKind, PointResults
from audiocert.settings import check_number
from audiocert.shards import IncompleteSweepError, Shard, ShardInventory, cut_shards, is_int, select_points
from audiocert.statistics import ABSTAIN


class AttackKind(DerivedKind):
    """Attacks on g (and f) at budgets, judged by PREDICT; one round. Shards: ``attack.shard.examples`` test
    points x a range of budget indices (``ranges = {"eps": [lo, hi)}``); the budgets' results do not depend on
    how the budgets are cut into shards (each budget is solved on its own, on common noise draws)."""

    name = KIND
    range_keys = ("eps",)
    progress_unit = "point_budgets"  # a shard's "samples": points x budgets attacked, not noise samples

    def quantities(self, config: Mapping[str, Any], certify_plan: Mapping[str, Any],
                   certify_dir: Path) -> dict[str, Any]:
        quantities = attack_quantities(config, certify_plan["quantities"])
        self.certified(certify_dir, certify_plan, "compares each attack with the point's certificate")
        settings = quantities["attack"]
        check_number(settings["shard"]["examples"], "attack.shard.examples", minimum=1, integer=True)
        check_number(settings["shard"]["eps"] or len(settings["eps"]), "attack.shard.eps", minimum=1, integer=True)
        if settings["points_per_speaker"] is not None:
            check_number(settings["points_per_speaker"], "attack.points_per_speaker", minimum=1, integer=True)
        return quantities

    def expected_quantities(self, plan: Mapping[str, Any], certify_quantities: Mapping[str, Any]) -> dict[str, Any]:
        return attack_quantities(plan["config"], certify_quantities)

    def shard_list(self, certify_plan: Mapping[str, Any], quantities: Mapping[str, Any]) -> list[Shard]:
        settings = quantities["attack"]
        budgets = len(settings["eps"])
        per_shard = settings["shard"]["eps"] or budgets
        positions = select_points(certify_plan, settings["points_per_speaker"])
        shards: list[Shard] = []
        for lo in range(0, budgets, per_shard):
            shards += cut_shards([(positions, {"eps": (lo, min(lo + per_shard, budgets))})],
                                 settings["shard"]["examples"], budgets, first_index=len(shards))
        return shards

    def label_suffix(self, quantities: Mapping[str, Any]) -> str:
        return f"attack-{quantities['attack']['space']}"

    def prefix(self, plan: Mapping[str, Any]) -> str:
        return f"attack-{plan['quantities']['attack']['space']}"

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
            example_delta = self.save_example_delta(work, shard, delta.astype(np.float32), position,
                                                    eps_index=shard.ranges["eps"][0] + k, eps=float(eps))
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
            if not (is_int(point.get("predict_passes")) and point["predict_passes"] >= 0):
                return f"the judge's passes of example {planned['index']} are not a count", None
            clean = point.get("clean_predict")
            if not (is_int(clean) and (clean == ABSTAIN or 0 <= clean < classes)):
                return f"the clean PREDICT of example {planned['index']} is not a class or -1", None
            predict = point.get("predict")
            if not (isinstance(predict, list) and len(predict) == width and all(
                    is_int(c) and (c in (ABSTAIN, UNJUDGED) or 0 <= c < classes) for c in predict)):
                return f"PREDICT classes of example {planned['index']} are not {width} classes, -1 or -2", None
            smoothed = point.get("smoothed")
            if not isinstance(smoothed, dict):
                return f"no attack on g for example {planned['index']}", None
            unjudged = [c == UNJUDGED for c in predict]
            for key in ("l2", "linf", "loss"):
                if key == "loss" and not (isinstance(smoothed.get(key), list) and len(smoothed[key]) == width):
                    return f"attack losses of example {planned['index']} are not {width} numbers", None
                if key != "loss" and not _norms_ok(smoothed.get(key), width, unjudged):
                    return (f"{key} norms of example {planned['index']} are not {width} finite numbers (None only "
                            "where the attacked input was not finite)"), None
            if any(norm is not None and norm > eps * (1 + 1e-6)
                   for norm, eps in zip(smoothed["l2"], settings.eps, strict=True)):
                return f"an attacked input of example {planned['index']} lies outside its L2 ball", None
            for key in ("passes", "eval_passes", "nonfinite", "restarts", "zero_steps"):
                if not _finite_list(smoothed.get(key), width, integer=True):
                    return f"{key} of example {planned['index']} are not {width} counts", None
            if settings.base:
                base, base_class = point.get("base"), point.get("base_class")
                if not (isinstance(base_class, list) and len(base_class) == width and isinstance(base, dict)
                        and all(is_int(c) and (c == UNJUDGED or 0 <= c < classes) for c in base_class)
                        and _norms_ok(base.get("l2"), width, [c == UNJUDGED for c in base_class])):
                    return f"the attack on f of example {planned['index']} is missing or damaged", None
        delta = record.get("example_delta")
        if delta is not None and not (self.example_delta_ok(delta, shard) and is_int(delta.get("eps_index"))):
            return "example_delta is damaged", None
        return "", results

    def accumulator(self, plan: Mapping[str, Any]) -> AttackAccumulator:
        return AttackAccumulator(plan)

    def reduce(self, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
        return reduce_attack(self, config_dir, found)

    def report_section(self, context: Any) -> list[str]:
        return robustness_section(self, context)

    def outcome(self, summary: Mapping[str, Any]) -> str:
        upper = ", ".join(f"{v:.2f}" for v in summary["g_robust_upper"])
        undecided = ", ".join(f"{v:.2f}" for v in summary["g_undecided"])
        checked = (f"{summary['contradictions']} of {summary['certified_points']} certified point(s) contradict "
                   "their certificate" if summary["certified_points"] is not None else "no certificates to compare")
        unjudged = (f"; {summary['unjudged']} (point, budget) pair(s) unjudged: the attacked input was not finite"
                    if summary.get("unjudged") else "")
        return (f"{summary['points']} points attacked at {len(summary['eps'])} budget(s) ({summary['space']} space): "
                f"upper bound on g's robust accuracy {upper} (undecided {undecided}); {checked}{unjudged}")


def _norms_ok(values: Any, width: int, unjudged: Sequence[bool]) -> bool:
    """``width`` finite norms >= 0, where None stands only for a perturbation that was not finite (unjudged)."""
    return isinstance(values, list) and len(values) == width and all(
        _finite_list([v], 1) or (v is None and skipped) for v, skipped in zip(values, unjudged, strict=True))


class AttackAccumulator(PointResults):
    """Per (point, budget) arrays of the attack results, filled as records are read (P x E; -2 = not covered)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        super().__init__(plan)
        points, budgets = len(plan["examples"]), len(plan["quantities"]["attack"]["eps"])
        self.plan = plan
        self.arrays = {name: np.full((points, budgets), -2, dtype=np.int64) for name in RESULT_FIELDS}
        self.arrays |= {f"g_{name}": np.full((points, budgets), np.nan) for name in PGD_FIELDS}
        self.arrays |= {f"f_{name}": np.full((points, budgets), np.nan) for name in PGD_FIELDS}
        self.covered = np.zeros((points, budgets), dtype=np.int64)
        self.clean = np.full(points, -2, dtype=np.int64)
        self.judge_passes = np.zeros(points, dtype=np.int64)

    def add(self, record: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        lo, hi = record["ranges"]["eps"]
        for position, point in zip(record["examples"], results, strict=True):
            self.covered[position, lo:hi] += 1
            self.clean[position] = point["clean_predict"]
            self.judge_passes[position] += point["predict_passes"]
            self.arrays["predict"][position, lo:hi] = point["predict"]
            if "base_class" in point:
                self.arrays["base_class"][position, lo:hi] = point["base_class"]
            for name in PGD_FIELDS:
                self.arrays[f"g_{name}"][position, lo:hi] = np.asarray(point["smoothed"][name], dtype=float)
                if "base" in point:
                    self.arrays[f"f_{name}"][position, lo:hi] = np.asarray(point["base"][name], dtype=float)
        self.add_record(record)

    def result(self) -> dict[str, Any]:
        attacked = self.covered.sum(axis=1) > 0
        if np.any(self.covered[attacked] != 1):
            raise IncompleteSweepError("attack shards cover some (point, budget) other than exactly once")
        return {**self.arrays, "attacked": attacked, "clean_predict": self.clean, "judge_passes": self.judge_passes,
                "seconds": self.seconds, "deltas": self.deltas}


ATTACK = AttackKind()
