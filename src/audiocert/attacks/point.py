"""One test point attacked at every eps and judged (:func:`attack_point`): what a shard worker calls per point."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from audiocert.attacks.judge import base_predict, judge_attacked
from audiocert.attacks.pgd import PGDResult, base_pgd, smoothed_pgd
from audiocert.attacks.settings import AttackSettings
from audiocert.attacks.space import StageMap, attacked_stage_inputs
from audiocert.sampler import Smooth


@dataclass
class PointAttack:
    """Everything the attacks found for one test point, per eps (arrays of length E in the order of ``eps``).

    smoothed: the attack on g; predict: the judge of g on x + delta_g (-1: undecided; -2: the attacked input is
    not finite, never judged); base (when run): the attack on f; base_class: f's class on x + delta_f (-2: not
    finite); predict_passes: forward passes the judge spent (all budgets).
    """

    example: int
    label: int
    eps: np.ndarray
    smoothed: PGDResult
    predict: np.ndarray
    predict_passes: int
    base: PGDResult | None = None
    base_class: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def robust(self) -> np.ndarray:
        """PREDICT on the attacked input is the label (per eps)."""
        return self.predict == self.label

    def smallest_success(self) -> int | None:
        """Index of the smallest eps whose attacked input PREDICT does not give the label, or None."""
        failed = np.flatnonzero(~self.robust)
        return None if failed.size == 0 else int(failed[np.argmin(self.eps[failed])])

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready summary (no deltas): per-eps lists of norms, losses, classes and costs."""
        record: dict[str, Any] = {
            "example": self.example, "label": self.label, "eps": self.eps.tolist(),
            "smoothed": _pgd_record(self.smoothed), "predict": self.predict.tolist(),
            "predict_passes": self.predict_passes, "settings": self.settings,
        }
        if self.base is not None and self.base_class is not None:
            record["base"] = _pgd_record(self.base)
            record["base_class"] = self.base_class.tolist()
        return record


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """A JSON-ready list: a non-finite number (a perturbation that overflowed, never judged) becomes None."""
    return [float(v) if np.isfinite(v) else None for v in values]


def _pgd_record(result: PGDResult) -> dict[str, Any]:
    return {"l2": _finite_or_none(result.l2), "linf": _finite_or_none(result.linf),
            "loss": _finite_or_none(result.loss),
            "flipped": result.flipped.tolist(), "restarts": result.restarts.tolist(),
            "passes": result.passes.tolist(), "eval_passes": result.eval_passes.tolist(),
            "nonfinite": result.nonfinite.tolist(), "zero_steps": result.zero_steps.tolist()}


def attack_point(smooth: Smooth, x: torch.Tensor, y: int, settings: AttackSettings, *, example: int,
                 to_stage: StageMap | None = None) -> PointAttack:
    """Attack one test point at every eps of ``settings`` and judge it: what a shard worker calls per point.

    ``smooth`` is the config's smoothed classifier (its base classifier, sigma, seed, and the block size of the
    prediction stream are reused); ``x``, ``to_stage`` as from :func:`attack_inputs`. A waveform space needs
    ``to_stage`` unless the smoothing stage is the waveform itself.
    """
    if settings.space == "waveform" and to_stage is None and getattr(smooth.base_classifier, "stage",
                                                                      "waveform") != "waveform":
        raise ValueError("attack.space='waveform' needs the map waveform -> smoothing stage (to_stage): this "
                         "classifier's stage cannot take a waveform attack without it (see attack_inputs)")
    classifier = smooth.base_classifier
    bf16 = settings.bf16 and x.device.type == "cuda"
    smoothed = smoothed_pgd(
        classifier, x, y, settings.eps, sigma=smooth.sigma, steps=settings.steps, samples=settings.samples,
        restarts=settings.restarts, seed=smooth.seed, example=example, to_stage=to_stage,
        batch_size=settings.batch_size, step_factor=settings.step_factor, autocast_bf16=bf16)
    z = attacked_stage_inputs(x, smoothed.delta, to_stage)
    predict, judged_samples = judge_attacked(smooth, z, settings.n, settings.alpha, settings.batch_size, example,
                                             settings.judge_max_n)
    base = base_class = None
    if settings.base:
        base = base_pgd(classifier, x, y, settings.eps, steps=settings.steps, restarts=settings.restarts,
                        seed=smooth.seed, example=example, to_stage=to_stage, step_factor=settings.step_factor,
                        autocast_bf16=bf16)
        base_class = base_predict(classifier, attacked_stage_inputs(x, base.delta, to_stage), settings.batch_size,
                                  bf16)
    return PointAttack(example=int(example), label=int(y), eps=np.asarray(settings.eps), smoothed=smoothed,
                       predict=predict, predict_passes=int(judged_samples.sum()), base=base,
                       base_class=base_class, settings={**asdict(settings), "eps": list(settings.eps)})
