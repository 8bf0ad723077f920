"""The settings of a perceptibility config: checked, with the certificates it is planned on (the hash covers them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audiocert.imperceptible import (
    ImperceptibleSettings,
    check_imperceptible_settings,
)
from audiocert.kinds.certify import planned_certificates
from audiocert.schemas import check_section
from audiocert.schemas.perceptibility import PerceptibilitySchema, check_perceptible_dataset
from audiocert.settings import check_number
from audiocert.statistics import REPORT_RADII

log = logging.getLogger(__name__)


KIND = "perceptibility"


RANGE = "radii"


PURPOSES = {"budget": 0, "random": 1}  # seed streams of a point (see point_seed)


# ----------------------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------------------
def perturbation_space(stage: str) -> str:
    """Where the experiment's perturbations are drawn: the magnitude spectrogram for magspec (resynthesised), the
    waveform otherwise (mfbe: no resynthesis exists, waveform perturbations stand in)."""
    return "magspec" if stage == "magspec" else "waveform"


def check_radii(radii: Any) -> list[float]:
    """The grid: finite radii > 0, ascending, without repeats (null: the report's radii)."""
    if radii is None:
        return [float(r) for r in REPORT_RADII]
    values = [radii] if isinstance(radii, (int, float, str)) else list(radii)
    if not values:
        raise ValueError("perceptibility.radii is empty: give radii > 0, or null for the report's radii")
    checked = [float(check_number(v, f"perceptibility.radii[{k}]", above=0)) for k, v in enumerate(values)]
    if sorted(set(checked)) != checked:
        raise ValueError(f"perceptibility.radii={checked} must be ascending without repeats")
    return checked


def perceptibility_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``perceptibility`` section of a resolved config (radii resolved): the section is checked against
    its schema (audiocert.schemas.perceptibility), and the dataset against what the psychoacoustic model needs;
    ValueError naming the field."""
    section = config.get("perceptibility")
    if not section:
        raise ValueError("the config has no perceptibility section: run `audiocert perceptibility` (it adds "
                         "conf/perceptibility/)")
    check_perceptible_dataset(config["dataset"])
    values = check_section(PerceptibilitySchema, section, "perceptibility")
    attack = values["attack"]
    return {
        "space": perturbation_space(config["representation"]["stage"]),
        "radii": check_radii(values.get("radii")),
        "draws": int(values["draws"]),
        "quality_draws": int(values["quality_draws"]),
        "margin_db": float(values["margin_db"]),
        "budget_iterations": int(values["budget_iterations"]),
        "points_per_speaker": None if values.get("points_per_speaker") is None else int(values["points_per_speaker"]),
        "shard": {"examples": int(values["shard"]["examples"])},
        "save_examples": bool(values.get("save_examples", True)),
        "attack": {"enabled": bool(attack["enabled"]),
                   **(vars_of(check_imperceptible_settings(attack, "perceptibility.attack")) if attack["enabled"]
                      else {})},
    }


def vars_of(settings: ImperceptibleSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in ImperceptibleSettings.__dataclass_fields__}


def attack_settings(plan: Mapping[str, Any]) -> ImperceptibleSettings | None:
    section = plan["quantities"][KIND]["attack"]
    if not section["enabled"]:
        return None
    return ImperceptibleSettings(**{k: v for k, v in section.items() if k != "enabled"})


def perceptibility_quantities(config: Mapping[str, Any], certify_quantities: Mapping[str, Any],
                              certificates: Mapping[str, list]) -> dict[str, Any]:
    """What determines the results: the certification's quantities (same f, g, points, streams) and, under
    "perceptibility", the checked settings and the certified (class, radius) of every planned point."""
    return {**{k: v for k, v in certify_quantities.items() if k != KIND},
            KIND: {**perceptibility_settings(config), "certificates": {
                "predict": list(certificates["predict"]), "radius": list(certificates["radius"])}}}


# ----------------------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------------------
def certificates_of(certify_dir: Path, certify_plan: Mapping[str, Any]) -> dict[str, list]:
    """{"predict": [...], "radius": [...]} per example of ``certify_plan`` from the reduced certification in
    ``certify_dir``; FileNotFoundError saying to certify first when there is none of exactly this config."""
    rows = planned_certificates(certify_dir, certify_plan)
    if rows is None:
        raise FileNotFoundError(
            f"run `audiocert certify` with the same overrides first (perceptibility compares each point's certified "
            f"radius with what a listener hears; {certify_dir} has no reduced certification of this config "
            f"{certify_plan['config_hash']})")
    return {"predict": [int(rows[i]["predict"]) for i in certify_plan["examples"]],
            "radius": [float(rows[i]["radius"]) for i in certify_plan["examples"]]}
