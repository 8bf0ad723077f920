"""The ``attack`` config section: its checks (:func:`check_attack_settings`), the attack stream's size, eps grids."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audiocert.attacks.space import check_space
from audiocert.sampler import MAX_BLOCKS
from audiocert.settings import check_number

DEFAULT_STEP_FACTOR = 2.0  # step a = 2 eps / T (the choice, and SmoothAdv's 2 eps / T)


@dataclass(frozen=True)
class AttackSettings:
    """The ``attack`` config section, checked (see :func:`check_attack_settings`).

    eps: the budgets, L2 in the units of the attack space (stage units for "stage", waveform samples for
    "waveform"); steps: T; samples: m noise draws per step; restarts: random restarts (restart 0 from delta = 0);
    space: where delta enters ("stage" or "waveform"); n, alpha: PREDICT of g on the attacked input;
    batch_size: noisy copies per forward/backward pass; step_factor: step a = step_factor * eps / T;
    base: also attack f alone; bf16: autocast the base classifier to bfloat16 on CUDA for the attack's passes
    (the judge's f is the Smooth's, with certify's bf16; set both alike to attack the f that is judged).
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


REQUIRED_KEYS = ("eps", "steps", "samples", "restarts", "space", "n", "alpha", "batch_size")


def _positive_float(value: Any, name: str) -> float:
    return float(check_number(value, name, above=0))


def _count(value: Any, name: str) -> int:
    return int(check_number(value, name, minimum=1, integer=True))


def check_eps(eps: Any) -> tuple[float, ...]:
    """The budgets as a tuple of finite positive floats, without repeats; ValueError naming ``attack.eps``."""
    values = [eps] if isinstance(eps, (str, bytes)) or not isinstance(eps, Iterable) else list(eps)
    if not values:
        raise ValueError("attack.eps is empty: give at least one budget > 0")
    checked = tuple(_positive_float(v, f"attack.eps[{i}]") for i, v in enumerate(values))
    if len(set(checked)) != len(checked):
        raise ValueError(f"attack.eps={list(checked)} repeats a budget: list each once")
    return checked



def attack_stream_samples(steps: int, samples: int, restarts: int) -> int:
    """Attack-stream noise samples a setting draws: (1 + restarts x T) x m (the evaluation draws, then T steps
    per restart)."""
    return (1 + restarts * steps) * samples


def attack_stream_blocks(steps: int, samples: int, restarts: int, block_size: int | None = None) -> int:
    """Noise blocks of the attack stream a setting uses: its noise blocks plus one start block per restart >= 1."""
    block_size = samples if block_size is None else block_size
    return math.ceil(attack_stream_samples(steps, samples, restarts) / block_size) + restarts - 1


def check_stream(steps: int, samples: int, restarts: int, block_size: int | None = None) -> None:
    """ValueError unless the setting fits the attack stream of an example (``MAX_BLOCKS`` blocks)."""
    used = attack_stream_blocks(steps, samples, restarts, block_size)
    if used > MAX_BLOCKS:
        raise ValueError(
            f"(1 + attack.restarts={restarts} x attack.steps={steps}) x attack.samples={samples} needs {used} noise "
            f"blocks of {block_size or samples} samples, more than the {MAX_BLOCKS} of an example's attack stream: "
            "lower attack.restarts or attack.steps")


def check_attack_settings(mapping: Mapping[str, Any], stage: str | None = None,
                          stages: Sequence[str] | None = None) -> AttackSettings:
    """Check the ``attack`` config section and return it as :class:`AttackSettings`.

    Required keys: eps (a budget or a list), steps, samples, restarts, space, n, alpha, batch_size; optional:
    step_factor (2.0), base (true), bf16 (false). Other keys are left to the caller. Every error names the field
    (``attack.eps``, ``attack.steps``, ...). With ``stage`` (and ``stages``, the stages the frontend computes) the
    space is checked against the smoothing stage too (:func:`check_space`).
    """
    missing = [k for k in REQUIRED_KEYS if k not in mapping or mapping[k] is None]
    if missing:
        raise ValueError(f"the attack config lacks {', '.join('attack.' + k for k in missing)}")
    eps = check_eps(mapping["eps"])
    steps, samples, restarts, n, batch_size = (_count(mapping[key], f"attack.{key}")
                                               for key in ("steps", "samples", "restarts", "n", "batch_size"))
    space = check_space(mapping["space"], stage, stages)
    alpha = float(check_number(mapping["alpha"], "attack.alpha", above=0, below=0.5))
    step_factor = _positive_float(mapping.get("step_factor", DEFAULT_STEP_FACTOR), "attack.step_factor")
    flags = {}
    for key, default in (("base", True), ("bf16", False)):
        value = mapping.get(key, default)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"attack.{key}={value!r} must be true or false")
        flags[key] = bool(value)
    check_stream(steps, samples, restarts)
    return AttackSettings(eps=eps, steps=steps, samples=samples, restarts=restarts, space=space, n=n,
                          alpha=alpha, batch_size=batch_size, step_factor=step_factor, **flags)


def waveform_eps_grid(radii: Sequence[float], lipschitz_bound: float) -> tuple[float, ...]:
    """Waveform budgets r / L: the waveform-equivalent radii of magspec radii r under the proven bound L
    (``audiocert.lipschitz.waveform_lipschitz_bound(...).bound``, about 69.08 for the Deep Speaker frontend)."""
    bound = _positive_float(lipschitz_bound, "lipschitz_bound")
    return tuple(float(r) / bound for r in check_eps(radii))
