"""Perceptibility as a kind of work: does a certified radius cover the perturbations a listener cannot hear?
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.attacks import UNJUDGED
from audiocert.kinds.derived import DerivedKind, PointResults
from audiocert.kinds.perceptibility.measure import certified_radius_at_stage, measure_point
from audiocert.kinds.perceptibility.reduce import reduce_perceptibility
from audiocert.kinds.perceptibility.section import perceptibility_section
from audiocert.kinds.perceptibility.settings import (
    KIND,
    RANGE,
    certificates_of,
    perceptibility_quantities,
    perceptibility_settings,
)
from audiocert.shards import (
    IncompleteSweepError,
    Shard,
    ShardInventory,
    cut_shards,
    is_int,
    select_points,
)
from audiocert.statistics import ABSTAIN


# ----------------------------------------------------------------------------------------------------------
# The kind: run, check, merge, reduce
# ----------------------------------------------------------------------------------------------------------
def _number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and low <= value <= high


def _table(values: Any, rows: int, columns: int | None, low: float = -math.inf, high: float = math.inf,
           nullable: bool = False) -> bool:
    """``values`` is a list of ``rows`` numbers (columns None) or of ``rows`` lists of ``columns`` numbers in
    [low, high] (None allowed where ``nullable``)."""
    def ok(v: Any) -> bool:
        return (nullable and v is None) or _number(v, low, high)

    if not isinstance(values, list) or len(values) != rows:
        return False
    if columns is None:
        return all(ok(v) for v in values)
    return all(isinstance(row, list) and len(row) == columns and all(ok(v) for v in row) for row in values)


def check_measurements(block: Any, rows: int, draws: int, quality: int, space_has_stage: bool) -> str:
    """'' when ``block`` is a :func:`measure_radii` result of ``rows`` radii, else what is wrong."""
    if not isinstance(block, dict) or set(block) != {"random", "shaped"}:
        return "not a random / shaped pair"
    for name, columns, q_columns in (("random", draws, quality), ("shaped", None, None)):
        part = block[name]
        if not isinstance(part, dict) or set(part) != {"excess_db", "fraction_above", "waveform_l2", "stage_l2",
                                                       "pesq", "stoi"}:
            return f"{name}: not the six measurements"
        if not _table(part["excess_db"], rows, columns):
            return f"{name} excess_db is not {rows} x {columns or 1} finite numbers"
        if not _table(part["fraction_above"], rows, columns, 0.0, 1.0):
            return f"{name} fraction_above is not {rows} x {columns or 1} fractions"
        if not _table(part["waveform_l2"], rows, columns, 0.0):
            return f"{name} waveform_l2 is not {rows} x {columns or 1} norms"
        if space_has_stage != (part["stage_l2"] is not None) or (
                part["stage_l2"] is not None and not _table(part["stage_l2"], rows, columns, 0.0)):
            return f"{name} stage_l2 is missing, misplaced or not {rows} x {columns or 1} norms"
        if not _table(part["pesq"], rows, q_columns, -0.5, 5.0, nullable=True):
            return f"{name} PESQ is not {rows} x {q_columns or 1} scores or null"
        if not _table(part["stoi"], rows, q_columns, -1.0, 1.0, nullable=True):
            return f"{name} STOI is not {rows} x {q_columns or 1} scores or null"
    return ""


def check_attack_record(attack: Any, label: int, classes: int) -> str:
    if not isinstance(attack, dict):
        return "not a record"
    if not isinstance(attack.get("found"), bool) or not _number(attack.get("eps0"), 0.0):
        return "found / eps0 missing"
    for key in ("candidates", "flipped_steps", "passes", "eval_passes", "predict_passes", "nonfinite"):
        if not (is_int(attack.get(key)) and attack[key] >= 0):
            return f"{key} is not a count"
    if not _number(attack.get("final_eps"), 0.0) or not _number(attack.get("final_lambda"), 0.0):
        return "final_eps / final_lambda are not finite"
    judged = attack.get("judged")
    if not (isinstance(judged, list) and all(is_int(c) and (c in (ABSTAIN, UNJUDGED) or 0 <= c < classes)
                                             for c in judged)):
        return "judged classes are not classes, -1 or -2"
    if attack["found"]:
        if not (_number(attack.get("l2"), 0.0, attack["eps0"] * (1 + 1e-6)) and _number(attack.get("linf"), 0.0)
                and attack["linf"] <= attack["l2"] * (1 + 1e-6) + 1e-12):
            return "the found attack's norms are not finite or leave the first ball"
        if not (_number(attack.get("max_excess_db")) and _number(attack.get("fraction_above"), 0.0, 1.0)):
            return "the found attack's audibility is missing"
        predict = attack.get("predict")
        if not (is_int(predict) and 0 <= predict < classes and predict != label) or predict not in judged:
            return "the found attack's class is not another class PREDICT gave"
    elif any(attack.get(k) is not None for k in ("l2", "linf", "max_excess_db", "fraction_above", "predict")):
        return "norms of an attack that found nothing"
    return ""


class PerceptibilityKind(DerivedKind):
    """Budgets, audibility at certified radii, quality scores and the imperceptible attack; one round."""

    name = KIND
    range_keys = (RANGE,)
    progress_unit = "point_radii"  # a shard's "samples": points x radii measured
    payload_keys = ("results", "example_delta")

    def quantities(self, config: Mapping[str, Any], certify_plan: Mapping[str, Any],
                   certify_dir: Path) -> dict[str, Any]:
        perceptibility_settings(config)  # every field named before the certificates are looked for
        certificates = certificates_of(Path(certify_dir), certify_plan)
        return perceptibility_quantities(config, certify_plan["quantities"], certificates)

    def expected_quantities(self, plan: Mapping[str, Any], certify_quantities: Mapping[str, Any]) -> dict[str, Any]:
        certificates = plan["quantities"][KIND]["certificates"]
        count = len(plan["examples"])
        if not (isinstance(certificates["predict"], list) and len(certificates["predict"]) == count
                and all(is_int(c) for c in certificates["predict"])):
            raise ValueError("its certified classes are not one per point")
        if not (isinstance(certificates["radius"], list) and len(certificates["radius"]) == count
                and all(_number(r, 0.0) for r in certificates["radius"])):
            raise ValueError("its certified radii are not one per point")
        return perceptibility_quantities(plan["config"], certify_quantities, certificates)

    def shard_list(self, certify_plan: Mapping[str, Any], quantities: Mapping[str, Any]) -> list[Shard]:
        settings = quantities[KIND]
        positions = select_points(certify_plan, settings["points_per_speaker"])
        radii = len(settings["radii"])
        return cut_shards([(positions, {RANGE: (0, radii)})], settings["shard"]["examples"], radii)

    def run(self, work: Any, shard: Shard, on_example: Callable[[int, int], None] | None) -> dict[str, Any]:
        plan = work.plan
        results, best = [], None
        for done, position in enumerate(shard.examples, start=1):
            record, found = measure_point(work.context, plan, position)
            results.append(record)
            if found is not None and found.found:
                key = (max(found.max_excess_db, 0.0), found.l2)
                if best is None or key < best[0]:
                    best = (key, position, found)
            if on_example is not None:
                on_example(done, len(shard.examples))
        example_delta = None
        if best is not None and plan["quantities"][KIND]["save_examples"]:
            _, position, found = best
            example_delta = self.save_example_delta(work, shard, found.delta.detach().float().cpu().numpy(),
                                                    position, l2=float(found.l2),
                                                    max_excess_db=float(found.max_excess_db))
        return {"results": results, "example_delta": example_delta}

    def check_payload(self, record: Mapping[str, Any], plan: Mapping[str, Any], shard: Shard,
                      inputs: Sequence[Mapping[str, Any]]) -> tuple[str, Any]:
        settings = plan["quantities"][KIND]
        classes = int(plan["config"]["dataset"]["num_classes"])
        rows, draws, quality = len(settings["radii"]), settings["draws"], settings["quality_draws"]
        has_stage = plan["quantities"]["stage"] != "waveform"
        results = record.get("results")
        if not isinstance(results, list) or len(results) != len(inputs):
            return "results are not one entry per example", None
        for position, point, planned in zip(shard.examples, results, inputs, strict=True):
            where = f"example {planned['index']}"
            if not isinstance(point, dict) or point.get("example") != planned["index"] or \
                    point.get("label") != planned["label"]:
                return f"results of {where} are missing or name another example", None
            if not (_number(point.get("waveform_norm"), 0.0) and _number(point.get("stage_norm"), 0.0)):
                return f"norms of {where} are not finite", None
            budget = point.get("budget")
            if not (isinstance(budget, dict) and all(_number(budget.get(k), 0.0) for k in (
                    "budget", "upper_bound", "within_3db")) and _number(budget.get("tightness"), 0.0, 1.0 + 1e-9)
                    and _number(budget.get("max_excess_db")) and _number(budget.get("median_slack_db"))
                    and budget["budget"] <= budget["upper_bound"] * (1 + 1e-9)):
                return f"the imperceptible budget of {where} is missing or not finite", None
            round_trip = point.get("round_trip")
            if (settings["space"] == "magspec") != (round_trip is not None) or (
                    round_trip is not None and not _number(round_trip, 0.0)):
                return f"the resynthesis round trip of {where} is missing or misplaced", None
            if why := check_measurements(point.get("grid"), rows, draws, quality, has_stage):
                return f"grid measurements of {where}: {why}", None
            certified_radius = certified_radius_at_stage(plan, position)
            certified = point.get("certified")
            if (certified is None) != (certified_radius is None):
                return f"measurements at the certified radius of {where} are missing or misplaced", None
            if certified is not None and (why := check_measurements(certified, 1, draws, quality, has_stage)):
                return f"certified-radius measurements of {where}: {why}", None
            errors = point.get("quality_errors")
            if not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
                return f"quality_errors of {where} are not strings", None
            attack, clean = point.get("attack"), point.get("clean_predict")
            if settings["attack"]["enabled"]:
                if not (is_int(clean) and (clean == ABSTAIN or 0 <= clean < classes)):
                    return f"the clean PREDICT of {where} is not a class or -1", None
                if (attack is None) != (clean != planned["label"]):
                    return f"the attack of {where} is missing, or present where g was wrong", None
                if attack is not None and (why := check_attack_record(attack, planned["label"], classes)):
                    return f"the attack of {where}: {why}", None
            elif attack is not None or clean is not None:
                return f"an attack on {where} although perceptibility.attack.enabled is false", None
        delta = record.get("example_delta")
        if delta is not None and not (self.example_delta_ok(delta, shard) and _number(delta.get("l2"), 0.0)
                                      and _number(delta.get("max_excess_db"))):
            return "example_delta is damaged", None
        return "", results

    def accumulator(self, plan: Mapping[str, Any]) -> PerceptibilityAccumulator:
        return PerceptibilityAccumulator(plan)

    def reduce(self, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
        return reduce_perceptibility(self, config_dir, found)

    def report_section(self, context: Any) -> list[str]:
        return perceptibility_section(self, context)

    def outcome(self, summary: Mapping[str, Any]) -> str:
        return f"{summary['points']} points measured; {summary.get('headline', '')}"


class PerceptibilityAccumulator(PointResults):
    """The points' records by plan position, as shards are read (each must be covered exactly once)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        super().__init__(plan)
        self.points: dict[int, Mapping[str, Any]] = {}
        self.covered = np.zeros(len(plan["examples"]), dtype=np.int64)

    def add(self, record: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        for position, point in zip(record["examples"], results, strict=True):
            self.covered[position] += 1
            self.points[position] = point
        self.add_record(record)

    def result(self) -> dict[str, Any]:
        if np.any(self.covered > 1):
            raise IncompleteSweepError("perceptibility shards cover some point more than once")
        return {"points": self.points, "measured": self.covered > 0, "seconds": self.seconds, "deltas": self.deltas}


PERCEPTIBILITY = PerceptibilityKind()
