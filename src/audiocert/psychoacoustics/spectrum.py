"""The model's STFT (periodic Hann, n_fft 2048, hop 512, zero-padded ends), its inverse, and the 96-dB PSD scale."""

from __future__ import annotations

import math

import torch

from audiocert.psychoacoustics.grid import HOP, N_FFT, REFERENCE_DB, WINDOW_GAIN


def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float64, device=device)


def _stft(x: torch.Tensor) -> torch.Tensor:
    """(B, n) float64 -> (B, frames, 1025) complex128, zero-padded by N/2 at both ends."""
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=_window(x.device), center=True, pad_mode="constant",
                      return_complex=True)
    return spec.transpose(-1, -2)


def _istft(spec: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Least-squares inverse of :func:`_stft` (window-weighted overlap-add over the window-squared envelope)."""
    return torch.istft(spec.transpose(-1, -2), N_FFT, HOP, N_FFT, window=_window(spec.device), center=True,
                       length=num_samples)


def _raw_db(spec: torch.Tensor) -> torch.Tensor:
    """p = 10 log10 |g X / N|^2 (-inf for exact zeros)."""
    return 10.0 * torch.log10((WINDOW_GAIN / N_FFT) ** 2 * spec.abs().square())


def _anchor(raw_db: torch.Tensor, psd_max_db: torch.Tensor) -> torch.Tensor:
    """96 - p_max + p, with exact zeros staying -inf and anything over a silent anchor (p_max = -inf) at +inf."""
    anchored = REFERENCE_DB - psd_max_db[:, None, None] + raw_db
    return torch.where(raw_db == -math.inf, torch.full_like(raw_db, -math.inf), anchored)
