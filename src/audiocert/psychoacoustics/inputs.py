"""Checks and conversions of the model's inputs: sample rate, numbers, waveform batches, per-utterance values."""

from __future__ import annotations

import math

import torch

from audiocert.psychoacoustics.grid import N_FFT, SAMPLE_RATE, Array


def check_sample_rate(sample_rate: int) -> None:
    """The model is defined at 16 kHz (its frequency grid and Bark mapping); anything else must be resampled."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: the psychoacoustic model is defined at {SAMPLE_RATE} Hz; "
                         f"resample the audio to {SAMPLE_RATE} Hz first (e.g. dataset.resample=true)")


def _check_finite_number(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}={value} must be finite and in [{low}, {high}]")
    return value


def _as_batch(waveform: Array, name: str = "waveform", min_samples: int = N_FFT
              ) -> tuple[torch.Tensor, tuple[int, ...], torch.dtype]:
    """(..., n) float array -> (B, n) float64 tensor on its device, the leading shape, and the input's dtype."""
    x = torch.as_tensor(waveform)
    if not (x.is_floating_point()):
        raise ValueError(f"{name} must be a float array (samples in [-1, 1]), got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (..., samples), got a scalar")
    if x.shape[-1] < min_samples:
        raise ValueError(f"{name} has {x.shape[-1]} samples, fewer than one analysis frame ({min_samples} samples "
                         f"= {min_samples / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE} Hz); use longer crops")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite samples (nan or inf)")
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, x.shape[-1]).to(torch.float64), lead, x.dtype


def _per_item(value: float | Array, lead: tuple[int, ...], device: torch.device, name: str) -> torch.Tensor:
    """A number, or one per utterance (broadcasting against the batch shape ``lead``), as a (B,) float64 tensor."""
    v = torch.as_tensor(value, dtype=torch.float64, device=device)
    try:
        return torch.broadcast_to(v, lead).reshape(-1)
    except RuntimeError:
        raise ValueError(f"{name} has shape {tuple(v.shape)}; expected a number or one per utterance of a batch of "
                         f"shape {lead}") from None
