"""The Deep Speaker frontend, batched in torch, enterable at any smoothing stage.

Reproduces ``python_speech_features.fbank`` with its defaults (as Deep Speaker uses it) followed by Deep
Speaker's per-frame normalization::

    waveform x (float32, [-1, 1], 16 kHz)
      -> pre-emphasis      y[0] = x[0], y[t] = x[t] - 0.97 x[t-1]
      -> framing           frames of 400 samples every 160, rectangular window, zero-padded at the end,
                           1 + ceil((N - 400) / 160) frames
      -> |rfft(frame, 512)|                              stage "magspec"  (frames x 257)
      -> |X|^2 / 512 @ mel bank^T, exact zeros -> eps    linear Mel-filterbank energies (frames x 64)
      -> (v - mean) / max(std, 1e-12) per frame          stage "mfbe"     (frames x 64)
      -> model input (N, 1, frames, 64)

``to_stage(waveform, stage)`` gives the clean representation at a stage; ``from_stage(x, stage)`` continues
from a (possibly noisy) representation at that stage to the model input. Noise added between the two is the
smoothing noise; everything after it is part of the base classifier f.

The stages are those of :data:`audiocert.stages.STAGE_REGISTRY` (what each one is and what a certificate there
means); this module computes them (:meth:`DeepSpeakerFrontend.steps`, :meth:`DeepSpeakerFrontend.stage_shape`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from audiocert.stages import STAGES, check_stage  # noqa: F401 (STAGES re-exported: audiocert.frontend.STAGES)

# python_speech_features replaces exact zeros with float64 machine epsilon.
FLOAT_EPS = float(np.finfo(float).eps)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(
    num_filters: int = 64, nfft: int = 512, sample_rate: int = 16000, low_hz: float = 0.0,
    high_hz: float | None = None,
) -> np.ndarray:
    """The triangular mel bank of python_speech_features: (num_filters, nfft // 2 + 1), peaks at 1.

    Filter edges are FFT bins ``floor((nfft + 1) * mel_to_hz(m) / sample_rate)`` for ``num_filters + 2``
    points equally spaced in mel; a filter whose two edges share a bin has an empty half (no division by 0).
    """
    high_hz = sample_rate / 2 if high_hz is None else high_hz
    mels = np.linspace(hz_to_mel(low_hz), hz_to_mel(high_hz), num_filters + 2)
    edges = np.floor((nfft + 1) * mel_to_hz(mels) / sample_rate)
    bins = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = np.where((bins >= left) & (bins < centre), (bins - left) / (centre - left), 0.0)
        falling = np.where((bins >= centre) & (bins < right), (right - bins) / (right - centre), 0.0)
    return rising + falling


def num_frames(num_samples: int, frame_length: int = 400, hop_length: int = 160) -> int:
    """Frame count of python_speech_features.framesig: 1 + ceil((N - frame_length) / hop_length)."""
    if num_samples <= frame_length:
        return 1
    return 1 + math.ceil((num_samples - frame_length) / hop_length)


def samples_for_frames(frames: int, frame_length: int = 400, hop_length: int = 160) -> int:
    """Smallest waveform length giving exactly ``frames`` frames (160 frames -> 25,840 samples)."""
    return (frames - 1) * hop_length + frame_length


class DeepSpeakerFrontend(nn.Module):
    """Waveform -> normalized Mel-filterbank energies, as Deep Speaker computes them, enterable at any stage.

    Shapes (batch dimensions B are arbitrary leading dims): waveform (B, N); magspec (B, T, 257);
    mfbe (B, T, 64); model input (B, 1, T, 64). Runs on whatever device its input is on.
    """

    def __init__(
        self, sample_rate: int = 16000, frame_length: int = 400, hop_length: int = 160, nfft: int = 512,
        num_filters: int = 64, preemphasis: float = 0.97, low_hz: float = 0.0, high_hz: float | None = 8000.0,
    ) -> None:
        super().__init__()
        if frame_length > nfft:
            raise ValueError(f"frontend.frame_length={frame_length} exceeds frontend.nfft={nfft}")
        self.sample_rate, self.frame_length, self.hop_length = sample_rate, frame_length, hop_length
        self.nfft, self.num_filters, self.preemphasis = nfft, num_filters, preemphasis
        bank = mel_filterbank(num_filters, nfft, sample_rate, low_hz, high_hz)
        self.register_buffer("mel_bank_t", torch.tensor(bank.T, dtype=torch.float32), persistent=False)

    # --- the individual steps, tensors in, tensors out ---------------------------------------------------
    def preemphasize(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.cat([waveform[..., :1], waveform[..., 1:] - self.preemphasis * waveform[..., :-1]], dim=-1)

    def frame(self, signal: torch.Tensor) -> torch.Tensor:
        frames = num_frames(signal.shape[-1], self.frame_length, self.hop_length)
        padded_length = (frames - 1) * self.hop_length + self.frame_length
        signal = nn.functional.pad(signal, (0, padded_length - signal.shape[-1]))
        return signal.unfold(-1, self.frame_length, self.hop_length)  # a view, not a copy

    def magnitude(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(frames, n=self.nfft).abs()

    def mel_energies(self, magspec: torch.Tensor) -> torch.Tensor:
        power = magspec.square() / self.nfft
        energies = power @ self.mel_bank_t
        return torch.where(energies == 0, torch.full_like(energies, FLOAT_EPS), energies)

    @staticmethod
    def normalize(energies: torch.Tensor) -> torch.Tensor:
        mean = energies.mean(dim=-1, keepdim=True)
        std = energies.std(dim=-1, unbiased=False, keepdim=True)
        return (energies - mean) / std.clamp_min(1e-12)

    # --- staged entry and exit --------------------------------------------------------------------------
    def steps(self) -> tuple[tuple[str, Callable[[torch.Tensor], torch.Tensor]], ...]:
        """The frontend between its stages, in order: (stage, the step computing it from the stage before).

        The waveform, the input, is the first stage; the last stage's output is the model input (less its
        channel dimension). Every stage named here has an entry in :data:`audiocert.stages.STAGE_REGISTRY`.
        """
        return (
            ("magspec", lambda x: self.magnitude(self.frame(self.preemphasize(x)))),
            ("mfbe", lambda x: self.normalize(self.mel_energies(x))),
        )

    @property
    def stages(self) -> tuple[str, ...]:
        """The stages this frontend can be entered at, in order."""
        return ("waveform", *(name for name, _ in self.steps()))

    def _position(self, stage: str) -> int:
        """Index of ``stage`` in :attr:`stages`; ValueError for a stage the registry or the frontend lacks."""
        check_stage(stage)
        try:
            return self.stages.index(stage)
        except ValueError:
            raise ValueError(f"smoothing stage {stage!r} is registered but the frontend does not compute it: "
                             f"it computes {', '.join(self.stages)}") from None

    def to_stage(self, waveform: torch.Tensor, stage: str) -> torch.Tensor:
        """The clean representation of ``waveform`` at ``stage``."""
        position = self._position(stage)
        x = waveform
        for _, step in self.steps()[:position]:
            x = step(x)
        return x

    def from_stage(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        """Continue from a (possibly noisy) representation at ``stage`` to the model input (B, 1, T, 64)."""
        for _, step in self.steps()[self._position(stage):]:
            x = step(x)
        return x.unsqueeze(-3)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.from_stage(waveform, "waveform")

    def stage_shape(self, stage: str, num_samples: int) -> tuple[int, ...]:
        """Shape of one example's representation at ``stage`` for a waveform of ``num_samples``."""
        self._position(stage)
        frames = num_frames(num_samples, self.frame_length, self.hop_length)
        return {
            "waveform": (num_samples,),
            "magspec": (frames, self.nfft // 2 + 1),
            "mfbe": (frames, self.num_filters),
        }[stage]
