"""The settings of an attack config: its budgets and what determines its results (the hash covers them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from audiocert.attacks import AttackSettings, check_attack_settings
from audiocert.kinds.derived import lipschitz_of
from audiocert.stages import STAGES
from audiocert.statistics import REPORT_RADII

KIND = "attack"
RESULT_FIELDS = ("predict", "base_class")  # per budget: PREDICT of g on x + delta_g, f's class on x + delta_f


PGD_FIELDS = ("l2", "linf", "loss", "passes", "eval_passes", "nonfinite", "restarts", "flipped", "zero_steps")


# ----------------------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------------------
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


def _finite_list(values: Any, length: int, minimum: float = 0.0, integer: bool = False) -> bool:
    kinds = (int,) if integer else (int, float)
    return isinstance(values, list) and len(values) == length and all(
        type(v) in kinds and math.isfinite(v) and v >= minimum for v in values)
