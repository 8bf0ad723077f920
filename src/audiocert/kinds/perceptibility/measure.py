"""One point's measurements: its imperceptible budget, perturbations of given norms at the stage, their
audibility and quality, and the imperceptible attack.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from audiocert import psychoacoustics as pa
from audiocert.attacks import attack_inputs, predict_attacked
from audiocert.imperceptible import (
    imperceptible_attack,
)
from audiocert.kinds.perceptibility.settings import KIND, PURPOSES, attack_settings, perturbation_space
from audiocert.statistics import ABSTAIN


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
