"""A keyword-spotting style CNN (after the small CNNs of Speech Commands baselines) with its own log-mel front end.

The front end is part of the network: audiocert hands it the (noisy) waveform (`model.input=waveform`), so the
certificate is a waveform certificate, and attacks differentiate through torchaudio's MelSpectrogram.
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn


class KWSNet(nn.Module):
    """(B, N) waveform at ``sample_rate`` -> (B, num_classes) logits."""

    def __init__(self, num_classes: int, sample_rate: int = 16000, n_mels: int = 40, channels: int = 32,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=480, win_length=480,
                                                        hop_length=160, n_mels=n_mels)

        def block(c_in: int, c_out: int) -> nn.Sequential:
            # GroupNorm, not BatchNorm: the smoothed classifier sees noisy inputs whose statistics differ from
            # the batches it was trained on, and per-example normalization does not depend on them.
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.features = nn.Sequential(block(1, channels), block(channels, channels), block(channels, 2 * channels))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(2 * channels, num_classes))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # A floor well above numerical zero: quiet stretches then look alike with and without the smoothing noise
        # (log(x + 1e-6) of clean digital silence is far from that of silence plus noise).
        logmel = torch.log(self.mel(waveform) + 1e-2)  # (B, n_mels, frames)
        logmel = (logmel - logmel.mean(dim=(-2, -1), keepdim=True)) / (logmel.std(dim=(-2, -1), keepdim=True) + 1e-5)
        return self.head(self.features(logmel.unsqueeze(1)))
