"""Perceptibility as shard work: does a certified radius cover the perturbations a listener cannot hear?

``audiocert perceptibility`` composes the same config as ``audiocert certify`` plus a ``perceptibility`` section
(conf/perceptibility/). It needs the certification of the same config reduced first: the certified class and
radius of every point are read from its certificates.tsv when the work is planned and become part of the plan (and
of its hash). Each certification config gets a perceptibility config in a directory of its own inside the
certification's, ``<config>/perceptibility-<hash>/``, whose plan has kind "perceptibility": the certification's
quantities, inputs and certificates, the checked settings, and shards of ``perceptibility.shard.examples`` test
points (``ranges = {"radii": [0, G)}``: every shard measures all G radii of its points).

Per point a shard computes (everything seeded from (seed, example), so a rerun gives the same numbers):

1. The global masking threshold theta of the clean waveform and its imperceptible budget B (the largest
   imperceptible waveform L2 norm the construction finds, a lower bound) with the upper bound U of the largest one
   (:func:`audiocert.psychoacoustics.imperceptible_budget`).
2. Perturbations of exactly L2 norm r *at the stage*, for each radius r of the grid (``perceptibility.radii``,
   default the report's radii) and for the point's certified radius R: ``draws`` uniformly random directions (the
   same directions at every radius) and one masking-shaped direction (the budget's, the least audible direction
   the construction finds). Waveform stage: the perturbation is the waveform's. Magspec: a perturbation Delta of
   the magnitude spectrogram is resynthesised to a waveform with the clean phase (inverse rfft, least-squares
   overlap-add, inverse pre-emphasis; :func:`audiocert.psychoacoustics.magspec_to_waveform`); the waveform
   perturbation is resynth(M + Delta) - resynth(M), linear in Delta (so norms scale exactly), the shaped Delta is
   the budget perturbation's image under the linearised magnitude map Re(conj(X / |X|) F d), and the magspec
   displacement the resynthesised audio really carries is measured (``stage_l2``: a random Delta is not the
   magnitude spectrogram of any signal, so resynthesis keeps only part of it). mfbe has no waveform counterpart:
   its grid radii are taken as waveform norms ("how audible is a waveform perturbation of norm r") and the mfbe
   displacement each causes is measured; its certified radius is not resynthesised.
3. For each perturbation: its max excess over theta (dB; > 0 is audible under the model) and the fraction of
   time-frequency bins above theta; for the shaped one and the first ``quality_draws`` random ones, wideband PESQ
   and STOI of x + delta against x (null with the reason where the package refuses).
4. The imperceptible attack (:mod:`audiocert.imperceptible`, when ``perceptibility.attack.enabled``) on points that
   PREDICT classifies correctly: the quietest successful attack found, its L2 and L-infinity norms and its max
   excess over theta. The delta of each shard's quietest success is saved beside its record (``*.delta.npy``,
   SHA-256 in the record) for the report's audio.

The reducer (:meth:`PerceptibilityKind.reduce`) writes points.tsv (one row per point), audibility.csv (per radius and
direction), summary.json with a one-line headline, provenance.json, wandb.json, psd.png (threshold vs perturbation
PSD for one point at every radius) and the quietest attack as audio. The certified waveform radius is R at the
waveform stage and R / L at magspec (L the proven Lipschitz bound, :func:`audiocert.adversarial.lipschitz_of`); a
certificate covers the whole imperceptible set when R_w >= the largest imperceptible norm, which lies in [B, U]:
proven when R_w >= U, impossible when R_w < B.
"""

from __future__ import annotations

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

from audiocert import psychoacoustics as pa
from audiocert.adversarial import lipschitz_of
from audiocert.attacks import attack_inputs, predict_attacked
from audiocert.imperceptible import (
    ImperceptibleSettings,
    check_imperceptible_settings,
    imperceptible_attack,
    quietest_order,
)
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
from audiocert.statistics import ABSTAIN, REPORT_RADII

log = logging.getLogger(__name__)

KIND = "perceptibility"
RANGE = "radii"
PURPOSES = {"budget": 0, "random": 1}  # seed streams of a point (see point_seed)
MAX_DRAWS = 256


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


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{field}={value!r} must be true or false")
    return bool(value)


def perceptibility_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``perceptibility`` section of a resolved config (radii resolved); ValueError naming the field."""
    section = config.get("perceptibility")
    if not section:
        raise ValueError("the config has no perceptibility section: run `audiocert perceptibility` (it adds "
                         "conf/perceptibility/)")
    pa.check_sample_rate(int(config["dataset"]["sample_rate"]))
    crop = int(config["dataset"]["crop_samples"])
    if crop < pa.N_FFT:
        raise ValueError(f"dataset.crop_samples={crop} is shorter than one analysis frame of the psychoacoustic model "
                         f"({pa.N_FFT} samples)")
    for key in ("draws", "quality_draws", "margin_db", "budget_iterations", "shard", "attack"):
        if section.get(key) is None:
            raise ValueError(f"the config lacks perceptibility.{key}")
    draws = int(check_number(section["draws"], "perceptibility.draws", minimum=1, maximum=MAX_DRAWS, integer=True))
    points = section.get("points_per_speaker")
    attack = dict(section["attack"])
    enabled = _flag(attack.get("enabled"), "perceptibility.attack.enabled")
    checked_attack = check_imperceptible_settings(attack, "perceptibility.attack")
    return {
        "space": perturbation_space(config["representation"]["stage"]),
        "radii": check_radii(section.get("radii")),
        "draws": draws,
        "quality_draws": int(check_number(section["quality_draws"], "perceptibility.quality_draws", minimum=0,
                                          maximum=draws, integer=True)),
        "margin_db": float(check_number(section["margin_db"], "perceptibility.margin_db", minimum=0, maximum=100)),
        "budget_iterations": int(check_number(section["budget_iterations"], "perceptibility.budget_iterations",
                                              minimum=0, maximum=10_000, integer=True)),
        "points_per_speaker": None if points is None else int(check_number(
            points, "perceptibility.points_per_speaker", minimum=1, integer=True)),
        "shard": {"examples": int(check_number(section["shard"].get("examples"), "perceptibility.shard.examples",
                                               minimum=1, integer=True))},
        "save_examples": _flag(section.get("save_examples", True), "perceptibility.save_examples"),
        "attack": {"enabled": enabled, **(vars_of(checked_attack) if enabled else {})},
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
    from audiocert.reducer import planned_certificates  # the certification reducer, a sibling layer

    rows = planned_certificates(certify_dir, certify_plan)
    if rows is None:
        raise FileNotFoundError(
            f"run `audiocert certify` with the same overrides first (perceptibility compares each point's certified "
            f"radius with what a listener hears; {certify_dir} has no reduced certification of this config "
            f"{certify_plan['config_hash']})")
    return {"predict": [int(rows[i]["predict"]) for i in certify_plan["examples"]],
            "radius": [float(rows[i]["radius"]) for i in certify_plan["examples"]]}


def make_perceptibility_plan(cfg: DictConfig, certify_plan: Mapping[str, Any], certify_dir: Path
                             ) -> dict[str, Any]:
    """The perceptibility plan of a config, on the points and certificates of its certification (``certify_plan``,
    as make_plan made it; its reduced certificates are read from ``certify_dir``)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    check_safe_name(cfg.perceptibility.get("name", KIND), "perceptibility.name")
    perceptibility_settings(config)  # every field named before the certificates are looked for
    certificates = certificates_of(Path(certify_dir), certify_plan)
    quantities = perceptibility_quantities(config, certify_plan["quantities"], certificates)
    settings = quantities[KIND]
    positions = select_points(certify_plan, settings["points_per_speaker"])
    radii = len(settings["radii"])
    shards = cut_shards([(positions, {RANGE: (0, radii)})], settings["shard"]["examples"], radii)
    return {
        "kind": KIND, "config_hash": stable_hash(quantities), "code_version": code_version(),
        "label": f"{certify_plan['label']}-{KIND}", "config": config, "quantities": quantities,
        "parent_hash": certify_plan["config_hash"], "checkpoint": certify_plan["checkpoint"],
        "examples": certify_plan["examples"], "inputs": certify_plan["inputs"],
        "inputs_digest": certify_plan["inputs_digest"], "shards": [s.to_json() for s in shards],
    }


def perceptibility_dir_for(certify_dir: Path, plan: Mapping[str, Any]) -> Path:
    return Path(certify_dir) / f"{KIND}-{plan['config_hash'][:8]}"


def perceptibility_dirs(certify_dir: Path) -> list[Path]:
    """The perceptibility config directories of a certification config."""
    return sorted(p.parent for p in Path(certify_dir).glob(f"{KIND}-*/plan.json"))


# ----------------------------------------------------------------------------------------------------------
# One point
# ----------------------------------------------------------------------------------------------------------
def point_seed(seed: int, example: int, purpose: str) -> int:
    """A 63-bit seed for one purpose ("budget", "random") of one example, from numpy's SeedSequence of
    (seed, example, purpose id): distinct purposes and examples get independent streams, reruns the same."""
    state = np.random.SeedSequence([int(seed), int(example), PURPOSES[purpose]]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def cpu_frontend(config: Mapping[str, Any]) -> Any:
    """The config's frontend on the CPU (the psychoacoustic side runs there in float64, whatever the device)."""
    return _frontend(json.dumps(config.get("frontend"), sort_keys=True))


@functools.lru_cache(maxsize=8)
def _frontend(frontend_json: str) -> Any:
    from audiocert.checkpoint import build_frontend

    return build_frontend(json.loads(frontend_json))


def linearised_magspec(delta: torch.Tensor, waveform: torch.Tensor, frontend: Any) -> torch.Tensor:
    """Re(conj(u) F delta), u = X / |X| (1 where X = 0): the first-order change of |X| = |F x| (the magnitude
    spectrogram) along the waveform perturbation ``delta`` (..., n) -> (..., frames, nfft / 2 + 1), float64."""
    def spectrum(w: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(frontend.frame(frontend.preemphasize(w.double())), n=frontend.nfft)

    clean = spectrum(waveform)
    magnitude = clean.abs()
    phase = torch.where(magnitude > 0, clean / magnitude.clamp_min(1e-300), 1.0 + 0j)
    return (spectrum(delta) * phase.conj()).real


class PointPerturbations:
    """The unit perturbations of one point: waveform responses (K + 1, n) float64 to a stage perturbation of L2 norm
    1 in each of K random directions and the shaped one (last), and how to measure them at any radius."""

    def __init__(self, waveform: torch.Tensor, stage: str, frontend: Any, budget: pa.ImperceptibleBudget,
                 draws: int, seed: int, example: int) -> None:
        self.x = waveform.detach().to("cpu", torch.float64)
        self.stage, self.frontend = stage, frontend
        self.space = perturbation_space(stage)
        n = self.x.numel()
        shaped = budget.perturbation.detach().to("cpu", torch.float64).reshape(n)
        random_seed = point_seed(seed, example, "random")
        self.round_trip = None
        if self.space == "waveform":
            random = pa.random_perturbation((draws, n), 1.0, seed=random_seed, dtype=torch.float64)
            self.units = torch.cat([random, (shaped / shaped.norm())[None]])
        else:
            clean = frontend.to_stage(self.x[None], "magspec")[0]
            directions = pa.random_perturbation((draws, *clean.shape), 1.0, event_dims=2, seed=random_seed,
                                                dtype=torch.float64)
            image = linearised_magspec(shaped, self.x, frontend)
            stage_units = torch.cat([directions, (image / image.norm())[None]])
            base = pa.magspec_to_waveform(clean, self.x, frontend)
            self.round_trip = float((base - self.x).norm() / self.x.norm())
            clean_batch = self.x.expand(stage_units.shape[0], n)
            self.units = pa.magspec_to_waveform(clean + stage_units, clean_batch, frontend) - base
        with torch.no_grad():
            self.clean_stage = None if self.stage == "waveform" else self._stage(self.x[None])[0]

    def _stage(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The smoothing stage of waveforms (float64 for magspec; mfbe in the frontend's float32 filterbank)."""
        if self.stage == "mfbe":
            return self.frontend.to_stage(waveforms.float(), "mfbe").double()
        return self.frontend.to_stage(waveforms, self.stage)

    def deltas(self, radius: float | Sequence[float]) -> torch.Tensor:
        """(R, K + 1, n) waveform perturbations at the stage radii ``radius``."""
        r = torch.as_tensor(radius, dtype=torch.float64).reshape(-1)
        return r[:, None, None] * self.units[None]

    def stage_l2(self, deltas: torch.Tensor) -> torch.Tensor | None:
        """(R, K + 1) ||s(x + delta) - s(x)||: the displacement at the stage the audio really carries (None for the
        waveform stage, where it is the radius itself)."""
        if self.clean_stage is None:
            return None
        with torch.no_grad():
            moved = self._stage((self.x + deltas).reshape(-1, self.x.numel()))
        return (moved - self.clean_stage).flatten(1).norm(dim=1).reshape(deltas.shape[:2])


def _floats(values: Any) -> Any:
    """Nested lists of floats with non-finite values as None (JSON has no nan)."""
    if isinstance(values, (list, tuple)):
        return [_floats(v) for v in values]
    value = float(values)
    return value if math.isfinite(value) else None


def measure_radii(perturbations: PointPerturbations, threshold: pa.MaskingThreshold, radii: Sequence[float],
                  quality_draws: int, errors: set[str]) -> dict[str, Any]:
    """Audibility (and PESQ/STOI) of the point's perturbations at each radius: {"random": {...}, "shaped": {...}},
    random entries (R, K) lists, shaped entries (R,) lists; PESQ/STOI refusals are None, their reasons go to
    ``errors``."""
    deltas = perturbations.deltas(radii)                                            # (R, K + 1, n)
    heard = pa.audibility(deltas, threshold)
    waveform_l2 = deltas.norm(dim=-1)
    stage_l2 = perturbations.stage_l2(deltas)
    scored = [*range(quality_draws), deltas.shape[1] - 1]                           # the first Q random, shaped
    x = perturbations.x
    quality = pa.quality_scores(x.expand(len(radii), len(scored), x.numel()), x + deltas[:, scored])
    errors.update(e for e in (*quality.pesq_errors, *quality.stoi_errors) if e)
    out: dict[str, Any] = {}
    for name, columns, q_columns in (("random", slice(0, -1), slice(0, -1)), ("shaped", -1, -1)):
        out[name] = {
            "excess_db": _floats(heard.excess_db[:, columns].tolist()),
            "fraction_above": _floats(heard.fraction_above[:, columns].tolist()),
            "waveform_l2": _floats(waveform_l2[:, columns].tolist()),
            "stage_l2": None if stage_l2 is None else _floats(stage_l2[:, columns].tolist()),
            "pesq": _floats(quality.pesq[:, q_columns].tolist()), "stoi": _floats(quality.stoi[:, q_columns].tolist()),
        }
    return out


def certified_radius_at_stage(plan: Mapping[str, Any], position: int) -> float | None:
    """The point's certified radius where perturbations of that norm can be drawn and heard (waveform, magspec;
    None for an abstention or a stage without resynthesis)."""
    certificates = plan["quantities"][KIND]["certificates"]
    if plan["quantities"]["stage"] not in ("waveform", "magspec") or certificates["predict"][position] == ABSTAIN:
        return None
    radius = float(certificates["radius"][position])
    return radius if radius > 0 else None


def measure_point(context: Any, plan: Mapping[str, Any], position: int) -> tuple[dict[str, Any], Any]:
    """Everything a shard records of one point (see the module docstring), and the found attack (or None)."""
    settings = plan["quantities"][KIND]
    seed = int(plan["quantities"]["seed"])
    waveform, x_stage, planned = context.example(position)
    example, label = int(planned["index"]), int(planned["label"])
    x = waveform.detach().to("cpu", torch.float64)
    if not bool(x.any()):
        raise ValueError(f"test example {example} is digitally silent: the psychoacoustic model has no level to "
                         "anchor its threshold; leave it out of the test set")
    threshold = pa.masking_threshold(x)
    budget = pa.imperceptible_budget(x, settings["margin_db"], seed=point_seed(seed, example, "budget"),
                                     iterations=settings["budget_iterations"], threshold=threshold)
    stage = plan["quantities"]["stage"]
    perturbations = PointPerturbations(x, stage, cpu_frontend(plan["config"]), budget, settings["draws"], seed,
                                       example)
    errors: set[str] = set()
    grid = measure_radii(perturbations, threshold, settings["radii"], settings["quality_draws"], errors)
    radius = certified_radius_at_stage(plan, position)
    certified = None if radius is None else measure_radii(perturbations, threshold, [radius],
                                                          settings["quality_draws"], errors)
    record: dict[str, Any] = {
        "example": example, "label": label, "waveform_norm": float(x.norm()),
        "stage_norm": float(torch.linalg.vector_norm(x_stage.double())),
        "budget": {key: float(getattr(budget, key)) for key in (
            "budget", "upper_bound", "tightness", "max_excess_db", "median_slack_db", "within_3db")},
        "round_trip": perturbations.round_trip, "grid": grid, "certified": certified,
        "quality_errors": sorted(errors), "clean_predict": None, "attack": None,
    }
    attack = attack_settings(plan)
    result = None
    if attack is not None:
        clean = int(predict_attacked(context.smooth, x_stage[None], attack.n, attack.alpha, attack.batch_size,
                                     example)[0])
        record["clean_predict"] = clean
        if clean == label:  # an attack succeeds only where g was right
            wave, to_stage = attack_inputs(context.staged, waveform.to(context.device), "waveform")
            result = imperceptible_attack(context.smooth, wave, label, threshold,
                                          attack.start * float(budget.budget), attack, example=example,
                                          to_stage=to_stage)
            record["attack"] = result.to_record()
    return record, result


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
    if not (isinstance(judged, list) and all(is_int(c) and (c == ABSTAIN or 0 <= c < classes) for c in judged)):
        return "judged classes are not classes or -1"
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


class PerceptibilityKind(WorkKind):
    """Budgets, audibility at certified radii, quality scores and the imperceptible attack; one round."""

    name = KIND
    range_keys = (RANGE,)
    payload_keys = ("results", "example_delta")

    def check_plan(self, plan: Mapping[str, Any]) -> None:
        certify = {k: v for k, v in plan["quantities"].items() if k != KIND}
        check_plan_consistency({**plan, "quantities": certify})
        certificates = plan["quantities"][KIND]["certificates"]
        count = len(plan["examples"])
        assert isinstance(certificates["predict"], list) and len(certificates["predict"]) == count and all(
            is_int(c) for c in certificates["predict"]), "its certified classes are not one per point"
        assert isinstance(certificates["radius"], list) and len(certificates["radius"]) == count and all(
            _number(r, 0.0) for r in certificates["radius"]), "its certified radii are not one per point"
        expected = perceptibility_quantities(plan["config"], certify, certificates)
        assert expected == plan["quantities"], "its perceptibility quantities differ from what its config says"

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
            buffer = io.BytesIO()
            np.save(buffer, found.delta.detach().float().cpu().numpy(), allow_pickle=False)
            data = buffer.getvalue()
            path = shard_path(work.config_dir, plan["config_hash"], shard.index).with_suffix(".delta.npy")
            atomic_write_bytes(path, data)  # before the record: a record names only a delta that is on disk
            example_delta = {"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "position": position,
                             "l2": float(found.l2), "max_excess_db": float(found.max_excess_db)}
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
        if delta is not None and not (
                isinstance(delta, dict) and isinstance(delta.get("file"), str) and "/" not in delta["file"]
                and isinstance(delta.get("sha256"), str) and delta.get("position") in shard.examples
                and _number(delta.get("l2"), 0.0) and _number(delta.get("max_excess_db"))):
            return "example_delta is damaged", None
        return "", results

    def accumulator(self, plan: Mapping[str, Any]) -> PerceptibilityAccumulator:
        return PerceptibilityAccumulator(plan)

    def reduce(self, config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
        return reduce_perceptibility(config_dir, found)


class PerceptibilityAccumulator:
    """The points' records by plan position, as shards are read (each must be covered exactly once)."""

    def __init__(self, plan: Mapping[str, Any]) -> None:
        self.points: dict[int, Mapping[str, Any]] = {}
        self.covered = np.zeros(len(plan["examples"]), dtype=np.int64)
        self.seconds = np.zeros(len(plan["examples"]))
        self.deltas: list[dict[str, Any]] = []

    def add(self, record: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> None:
        for position, point in zip(record["examples"], results, strict=True):
            self.covered[position] += 1
            self.points[position] = point
        self.seconds[record["examples"]] += record["elapsed_s"] / len(record["examples"])
        if record.get("example_delta"):
            self.deltas.append({**record["example_delta"], "index": record["index"]})

    def result(self) -> dict[str, Any]:
        if np.any(self.covered > 1):
            raise IncompleteSweepError("perceptibility shards cover some point more than once")
        return {"points": self.points, "measured": self.covered > 0, "seconds": self.seconds, "deltas": self.deltas}


PERCEPTIBILITY = register_kind(PerceptibilityKind())


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


def reduce_perceptibility(config_dir: Path, found: ShardInventory | None = None) -> dict[str, Any]:
    """Finalise one perceptibility config: points.tsv, audibility.csv, psd.png, the quietest attack's audio,
    provenance.json, wandb.json and summary.json (written last)."""
    config_dir = Path(config_dir)
    plan = read_plan(config_dir)
    if found is None or found.merged is None:
        found = inventory(config_dir, plan, merge=True)
    if not found.complete:
        raise IncompleteSweepError(found.problems(config_dir))
    merged = found.merged
    settings = plan["quantities"][KIND]
    stage = plan["quantities"]["stage"]
    positions = [int(p) for p in np.flatnonzero(merged["measured"])]
    points = [merged["points"][p] for p in positions]
    certificates = settings["certificates"]
    predict = np.array([certificates["predict"][p] for p in positions], dtype=np.int64)
    radius = np.array([certificates["radius"][p] for p in positions], dtype=float)
    labels = np.array([plan["inputs"][p]["label"] for p in positions], dtype=np.int64)
    certified = (predict != ABSTAIN) & (radius > 0)
    budget = np.array([p["budget"]["budget"] for p in points], dtype=float)
    upper = np.array([p["budget"]["upper_bound"] for p in points], dtype=float)
    tightness = np.array([p["budget"]["tightness"] for p in points], dtype=float)
    waveform_norm = np.array([p["waveform_norm"] for p in points], dtype=float)
    radius_w, bound, relation = waveform_radii(plan, radius)
    covered = coverage(radius_w, certified, budget, upper)
    grid_rows = audibility_rows(points, "grid", settings["radii"], "grid")
    at_certified = [p for p in points if p["certified"] is not None]
    certified_rows = audibility_rows(at_certified, "certified", [math.nan], "certified")
    attack_summary, attack_rows = summarise_attacks(plan, positions, points, labels, predict, radius_w, certified)

    with np.errstate(divide="ignore"):
        budget_snr = 20.0 * np.log10(waveform_norm / budget)
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
        "quality_errors": errors[:20], "attack": attack_summary,
        "settings": {k: v for k, v in settings.items() if k != "certificates"},
        "seconds_per_point": float(merged["seconds"][positions].mean()) if positions else None,
        "shard_seconds": float(sum(r["elapsed_s"] for r in found.records.values())),
    }
    summary["headline"] = headline(summary)
    figure = None
    if positions:
        try:
            figure = write_psd_figure(config_dir, plan, positions[0])
        except Exception as error:  # a figure must not cost the numbers
            log.warning("%s: the PSD figure could not be drawn: %s", config_dir, error)
    summary["psd_figure"] = figure
    summary["example"] = render_attack_example(config_dir, plan, merged, positions, points, radius_w)
    provenance = {"config": plan["config"], "config_hash": plan["config_hash"], "parent_hash": plan["parent_hash"],
                  "quantities": plan["quantities"], "plan_code_version": plan["code_version"],
                  "reducer_code_version": code_version(), "checkpoint": plan["checkpoint"],
                  "inputs_digest": plan["inputs_digest"], "shards": len(found.records),
                  "shard_hosts": sorted({r["host"] for r in found.records.values()})}
    atomic_write_text(config_dir / "points.tsv", "\n".join(tsv) + "\n")
    atomic_write_text(config_dir / "audibility.csv", "\n".join(csv) + "\n")
    if attack_rows:
        atomic_write_text(config_dir / "attack.tsv", "\n".join(attack_rows) + "\n")
    atomic_write_json(config_dir / "provenance.json", provenance)
    atomic_write_json(config_dir / "wandb.json", wandb_spec(plan, summary, points, positions, budget, upper,
                                                            radius_w))
    atomic_write_json(config_dir / "summary.json", summary)  # written last: its presence means reduced
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
        "summary": {k: v for k, v in metrics.items() if v is not None}}


# ----------------------------------------------------------------------------------------------------------
# Figures and audio of the reducer
# ----------------------------------------------------------------------------------------------------------
def _load_point(plan: Mapping[str, Any], position: int) -> tuple[torch.Tensor, Any]:
    from audiocert.checkpoint import build_frontend
    from audiocert.data import build_datasets

    planned = plan["inputs"][position]
    waveform, _ = build_datasets(plan["config"]["dataset"]).test[planned["index"]]
    from audiocert.shards import waveform_digest

    if waveform_digest(waveform) != planned["digest"]:
        raise ValueError(f"test example {planned['index']} changed since it was planned")
    return waveform, build_frontend(plan["config"].get("frontend"))


def write_psd_figure(config_dir: Path, plan: Mapping[str, Any], position: int) -> dict[str, Any]:
    """psd.png: for one point, per radius (the grid and its certified radius), the clean PSD, the masking threshold
    and the PSDs of the first random and of the shaped perturbation, at the frame where the random one exceeds the
    threshold most. The perturbations are recomputed exactly as the shard drew them (same seeds)."""
    from matplotlib.figure import Figure

    settings = plan["quantities"][KIND]
    seed, stage = int(plan["quantities"]["seed"]), plan["quantities"]["stage"]
    waveform, frontend = _load_point(plan, position)
    example = int(plan["inputs"][position]["index"])
    x = waveform.double()
    threshold = pa.masking_threshold(x)
    budget = pa.imperceptible_budget(x, settings["margin_db"], seed=point_seed(seed, example, "budget"),
                                     iterations=settings["budget_iterations"], threshold=threshold)
    perturbations = PointPerturbations(x, stage, frontend, budget, settings["draws"], seed, example)
    radii = [(float(r), f"r = {r:g}") for r in settings["radii"]]
    certified = certified_radius_at_stage(plan, position)
    if certified is not None:
        radii.append((certified, f"certified R = {certified:.4g}"))
    columns = 3
    rows = math.ceil(len(radii) / columns)
    fig = Figure(figsize=(4.2 * columns, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    freqs = threshold.frequencies.numpy()
    units = "waveform" if perturbations.space == "waveform" else "magspec"
    for ax, (r, title) in zip(axes.flat, radii, strict=False):
        deltas = perturbations.deltas([r])[0]                                     # (K + 1, n)
        psd = pa.perturbation_psd_db(deltas[[0, -1]], threshold.psd_max_db)       # (2, frames, 1025)
        excess = psd[0] - threshold.theta_db
        frame = int(excess.amax(dim=-1).argmax())
        ax.plot(freqs, threshold.psd_db[frame].numpy(), color="0.6", linewidth=0.8, label="clean PSD")
        ax.plot(freqs, threshold.theta_db[frame].numpy(), color="black", linewidth=1.4, label="masking threshold")
        ax.plot(freqs, psd[0, frame].numpy(), color="tab:red", linewidth=0.8, label="random perturbation")
        ax.plot(freqs, psd[1, frame].numpy(), color="tab:blue", linewidth=0.8, label="masking-shaped perturbation")
        ax.set_title(f"{title} ({units}): frame {frame}, max excess {float(excess[frame].max()):+.1f} dB",
                     fontsize=8)
        ax.set_ylim(-40, 110)
        ax.set_xlabel("frequency (Hz)", fontsize=8)
        ax.set_ylabel("dB (clean max = 96)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(radii):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6, loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(config_dir / "psd.png", buffer.getvalue())
    return {"file": "psd.png", "idx": example, "radii": [r for r, _ in radii]}


def render_attack_example(config_dir: Path, plan: Mapping[str, Any], merged: Mapping[str, Any],
                          positions: Sequence[int], points: Sequence[Mapping[str, Any]],
                          radius_w: np.ndarray | None) -> dict[str, Any] | None:
    """The quietest successful attack among the shards' saved deltas as audio (attack_clean.wav, attack.wav), with
    its point's certified waveform radius; None when no attack succeeded (or none was saved)."""
    import soundfile

    candidates = sorted(merged["deltas"], key=lambda d: (max(d["max_excess_db"], 0.0), d["l2"], d["index"]))
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
        position = candidate["position"]
        waveform, _ = _load_point(plan, position)
        if delta.shape != tuple(waveform.shape):
            log.warning("%s has shape %s, the point's waveform %s: not rendered", path, delta.shape,
                        tuple(waveform.shape))
            continue
        rate = int(plan["config"]["dataset"]["sample_rate"])
        soundfile.write(config_dir / "attack_clean.wav", waveform.numpy(), rate)
        soundfile.write(config_dir / "attack.wav", np.clip(waveform.numpy() + delta, -1.0, 1.0), rate)
        k = list(positions).index(position)
        point = points[k]
        return {"idx": int(plan["inputs"][position]["index"]), "label": int(plan["inputs"][position]["label"]),
                "l2": float(candidate["l2"]), "linf": point["attack"]["linf"],
                "max_excess_db": float(candidate["max_excess_db"]), "predict": point["attack"]["predict"],
                "waveform_radius": None if radius_w is None else float(radius_w[k]),
                "budget": point["budget"]["budget"], "clean_audio": "attack_clean.wav", "attacked_audio": "attack.wav"}
    return None


def read_perceptibility_summary(directory: Path) -> dict[str, Any] | None:
    """summary.json of a reduced perceptibility config (None when not reduced or damaged)."""
    try:
        summary = read_json(directory / "summary.json") if (directory / "summary.json").is_file() else None
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) and summary.get("kind") == KIND else None


# The seam audiocert.launch.plan_config plans every kind of work through.
make_kind_plan = make_perceptibility_plan
kind_dir_for = perceptibility_dir_for

__all__ = [
    "PERCEPTIBILITY", "PerceptibilityKind", "PointPerturbations", "coverage", "make_perceptibility_plan",
    "measure_point", "perceptibility_dir_for", "perceptibility_dirs", "perceptibility_settings", "point_seed",
    "quietest_order", "read_perceptibility_summary", "reduce_perceptibility",
]
