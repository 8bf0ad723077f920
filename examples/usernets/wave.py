"""A waveform model: strided 1-D convolutions straight on the samples (no hand-made features)."""

from __future__ import annotations

import torch
from torch import nn


class WaveformNet(nn.Module):
    """(B, N) waveform -> (B, num_classes) logits."""

    def __init__(self, num_classes: int, channels: int = 32) -> None:
        super().__init__()
        layers, c_in = [], 1
        for kernel, stride in ((80, 4), (3, 2), (3, 2), (3, 2), (3, 2)):
            layers += [nn.Conv1d(c_in, channels, kernel, stride=stride), nn.GroupNorm(4, channels), nn.ReLU()]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(waveform.unsqueeze(1)))
