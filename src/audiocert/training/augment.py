"""Gaussian augmentation at a frontend stage, as the seed's "augmented" models had it: N(0, sigma^2) noise added at
the waveform, magspec or mfbe stage, x_stage + sigma * eps -> rest of the frontend -> model.

Training and evaluation both call it as ``augment.model_inputs`` at call time, so that a test can replace it in one
place.
"""

from __future__ import annotations

import torch

from audiocert.frontend import DeepSpeakerFrontend


def model_inputs(
    frontend: DeepSpeakerFrontend, waveform: torch.Tensor, stage: str | None, sigma: float
) -> torch.Tensor:
    """Frontend with optional Gaussian augmentation at ``stage``."""
    if stage is None or sigma == 0:
        return frontend(waveform)
    x = frontend.to_stage(waveform, stage)
    return frontend.from_stage(x + sigma * torch.randn_like(x), stage)
