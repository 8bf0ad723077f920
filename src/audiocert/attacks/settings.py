"""The ``attack`` config section: its checks (:func:`check_attack_settings`), the attack stream's size, eps grids."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audiocert.attacks.space import check_space
from audiocert.schemas import check_section
from audiocert.schemas.attack import (
    DEFAULT_STEP_FACTOR,
    EPS,
    AttackSchema,
    attack_stream_blocks,
    attack_stream_samples,
    check_stream,
)
from audiocert.schemas.rules import refuse_key
from audiocert.settings import check_number

__all__ = ["DEFAULT_STEP_FACTOR", "REQUIRED_KEYS", "AttackSettings", "attack_stream_blocks", "attack_stream_samples",
           "check_attack_settings", "check_eps", "check_stream", "waveform_eps_grid"]


@dataclass(frozen=True)
class AttackSettings:
    """The ``attack`` config section, checked (see :func:`check_attack_settings`).

    eps: the budgets, L2 in the units of the attack space (stage units for "stage", waveform samples for
    "waveform"); steps: T; samples: m noise draws per step; restarts: random restarts (restart 0 from delta = 0);
    space: where delta enters ("stage" or "waveform"); n, alpha: PREDICT of g on the attacked input;
    batch_size: noisy copies per forward/backward pass; step_factor: step a = step_factor * eps / T;
    base: also attack f alone; bf16: autocast the base classifier to bfloat16 on CUDA for the attack's passes
    (the judge's f is the Smooth's, with certify's bf16; set both alike to attack the f that is judged);
    judge_max_n: ``attack.judge.max_n``, where the judge's looks end (see :mod:`audiocert.attacks.judge`).
    """

    eps: tuple[float, ...]
    steps: int
    samples: int
    restarts: int
    space: str
    n: int
    alpha: float
    batch_size: int
    step_factor: float = DEFAULT_STEP_FACTOR
    base: bool = True
    bf16: bool = False
    judge_max_n: int | None = None  # the judge continues on undecided inputs up to this many samples (None: n)


REQUIRED_KEYS = ("eps", "steps", "samples", "restarts", "space", "n", "alpha", "batch_size")


def _positive_float(value: Any, name: str) -> float:
    return float(check_number(value, name, above=0))


def _count(value: Any, name: str) -> int:
    return int(check_number(value, name, minimum=1, integer=True))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def check_eps(eps: Any) -> tuple[float, ...]:
    """The budgets as a tuple of finite positive floats, without repeats; ValueError naming ``attack.eps``."""
    values = [eps] if isinstance(eps, (str, bytes)) or not isinstance(eps, Iterable) else list(eps)
    EPS.check("attack.eps", values)
    return tuple(float(v) for v in values)


def check_attack_settings(mapping: Mapping[str, Any], stage: str | None = None,
                          stages: Sequence[str] | None = None) -> AttackSettings:
    """Check the ``attack`` config section against its schema (audiocert.schemas.attack) and return it as
    :class:`AttackSettings`.

    Required keys: eps (a budget or a list), steps, samples, restarts, space, n, alpha, batch_size; optional:
    step_factor (2.0), base (true), bf16 (false), judge.max_n (null). Other keys are left to the caller. Every
    error names the field (``attack.eps``, ``attack.steps``, ...). With ``stage`` (and ``stages``, the stages the
    frontend computes) the space is checked against the smoothing stage too (:func:`check_space`).
    """
    missing = [k for k in REQUIRED_KEYS if k not in mapping or mapping[k] is None]
    if missing:
        raise refuse_key(f"attack.{missing[0]}", f"is missing: the attack config lacks "
                         f"{', '.join('attack.' + k for k in missing)}")
    values = check_section(AttackSchema, mapping, "attack")
    space = check_space(values["space"], stage, stages)
    return AttackSettings(eps=check_eps(values["eps"]), steps=int(values["steps"]), samples=int(values["samples"]),
                          restarts=int(values["restarts"]), space=space, n=int(values["n"]),
                          alpha=float(values["alpha"]), batch_size=int(values["batch_size"]),
                          step_factor=float(values.get("step_factor", DEFAULT_STEP_FACTOR)),
                          base=bool(values.get("base", True)), bf16=bool(values.get("bf16", False)),
                          judge_max_n=_optional_int((values.get("judge") or {}).get("max_n")))


def waveform_eps_grid(radii: Sequence[float], lipschitz_bound: float) -> tuple[float, ...]:
    """Waveform budgets r / L: the waveform-equivalent radii of magspec radii r under the proven bound L
    (``audiocert.lipschitz.waveform_lipschitz_bound(...).bound``, about 69.08 for the Deep Speaker frontend)."""
    bound = _positive_float(lipschitz_bound, "lipschitz_bound")
    return tuple(float(r) / bound for r in check_eps(radii))
