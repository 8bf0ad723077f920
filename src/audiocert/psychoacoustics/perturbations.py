"""Perturbations of an exact L2 norm: in uniformly random directions, or shaped by the masking threshold."""

from __future__ import annotations

import math

import torch

from audiocert.psychoacoustics.budget import ImperceptibleBudget, imperceptible_budget
from audiocert.psychoacoustics.grid import SAMPLE_RATE, Array
from audiocert.psychoacoustics.inputs import _as_batch, _per_item


def _norms(norm: float | Array, lead: tuple[int, ...], device: torch.device) -> torch.Tensor:
    r = _per_item(norm, lead, device, "norm")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"norm={norm} must be finite and >= 0")
    return r


def random_perturbation(shape: tuple[int, ...], norm: float | Array, event_dims: int = 1,
                        generator: torch.Generator | None = None, seed: int | None = None,
                        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                        ) -> torch.Tensor:
    """Perturbations of ``shape`` in uniformly random directions, each of L2 norm ``norm`` (a number or one per item).

    The norm is taken over the last ``event_dims`` dimensions (1 for waveforms (..., n); 2 for a magnitude
    spectrogram (..., frames, 257)). Directions are normalised i.i.d. Gaussians in float64, drawn from ``generator``
    on its device, or from a CPU generator seeded with ``seed`` (the same draws whatever ``device`` they are moved
    to). The norm is exact in float64; a float32 result is within float32 round-off (relative 1e-7) of it.
    """
    if not 1 <= event_dims <= len(shape):
        raise ValueError(f"event_dims={event_dims} must be in [1, {len(shape)}] for shape {shape}")
    if generator is None:
        if seed is None:
            raise ValueError("give a generator or a seed: perturbations must be reproducible")
        generator = torch.Generator().manual_seed(seed)
    lead = tuple(shape[:len(shape) - event_dims])
    direction = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    direction = direction.to(device).reshape(math.prod(lead), -1)
    r = _norms(norm, lead, direction.device)
    out = direction * (r / direction.norm(dim=-1))[:, None]
    return out.reshape(shape).to(dtype)


def shaped_perturbation(waveform: Array, norm: float | Array, seed: int = 0, iterations: int = 64,
                        budget: ImperceptibleBudget | None = None, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The masking-shaped perturbation of each utterance, scaled to waveform L2 norm ``norm`` (..., n).

    Its direction is that of :func:`imperceptible_budget` (the threshold's shape: the least audible direction for its
    norm that the construction finds); at norm r its max excess over theta is -margin + 20 log10(r / budget) dB, so
    it is inaudible exactly while r <= budget. Pass ``budget`` to reuse a computed one. The norm is exact in float64,
    within float32 round-off after the cast to the waveform's dtype.
    """
    x, lead, dtype = _as_batch(waveform)
    if budget is None:
        budget = imperceptible_budget(x, seed=seed, iterations=iterations, sample_rate=sample_rate)
    base = budget.perturbation.reshape(-1, x.shape[-1]).to(torch.float64)
    if base.shape != x.shape:
        raise ValueError(f"budget is for perturbations of shape {tuple(base.shape)}, the waveform's is "
                         f"{tuple(x.shape)}")
    length = base.norm(dim=-1)
    if bool((length == 0).any()):
        raise ValueError("an utterance has budget 0 (digital silence): it has no imperceptible direction")
    r = _norms(norm, lead, x.device)
    return (base * (r / length)[:, None]).reshape(*lead, x.shape[-1]).to(dtype)
