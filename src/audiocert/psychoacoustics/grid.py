"""The model's constants and its frequency grid: Bark scale, threshold in quiet, analysis frames (16 kHz)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000
N_FFT = 2048
HOP = 512
NUM_BINS = N_FFT // 2 + 1
REFERENCE_DB = 96.0                  # the clean maximum is mapped to 96 dB
WINDOW_GAIN = math.sqrt(8.0 / 3.0)   # amplitude gain on the Hann-windowed spectrum (see the package docstring)
ATH_FLOOR_BARK = 1.0                 # below this, ATH is held at its value here

Array = torch.Tensor | np.ndarray


def bark(frequency_hz: Array) -> torch.Tensor:
    """Critical-band rate z(f) = 13 atan(0.00076 f) + 3.5 atan((f / 7500)^2), in Bark."""
    f = torch.as_tensor(frequency_hz, dtype=torch.float64)
    return 13.0 * torch.atan(0.00076 * f) + 3.5 * torch.atan((f / 7500.0) ** 2)


def _terhardt_db(frequency_hz: torch.Tensor) -> torch.Tensor:
    khz = frequency_hz / 1000.0
    return 3.64 * khz ** -0.8 - 6.5 * torch.exp(-0.6 * (khz - 3.3) ** 2) + 1e-3 * khz ** 4 - 12.0


def _bark_to_hz(z: float) -> float:
    """Inverse of :func:`bark` by bisection (z is increasing in f)."""
    low, high = 0.0, float(SAMPLE_RATE)
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if float(bark(mid)) < z else (low, mid)
    return 0.5 * (low + high)


def absolute_threshold_db(frequency_hz: Array) -> torch.Tensor:
    """Threshold in quiet ATH(f) in dB (the formula of the module docstring), held at its 1-Bark value below 1 Bark."""
    f = torch.as_tensor(frequency_hz, dtype=torch.float64)
    return _terhardt_db(f.clamp_min(_bark_to_hz(ATH_FLOOR_BARK)))


@lru_cache(maxsize=8)
def _grid_cpu() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    freqs = torch.arange(NUM_BINS, dtype=torch.float64) * SAMPLE_RATE / N_FFT
    return freqs, bark(freqs), absolute_threshold_db(freqs)


def frequency_grid(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frequencies in Hz, Bark, threshold in quiet in dB) of the 1025 bins, float64."""
    return tuple(t.to(device) for t in _grid_cpu())  # type: ignore[return-value]


def num_frames(num_samples: int) -> int:
    """Analysis frames of an utterance of ``num_samples``: 1 + n // 512 (zero-padded by N/2 at both ends)."""
    return 1 + num_samples // HOP
