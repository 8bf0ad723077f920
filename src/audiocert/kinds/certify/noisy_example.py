"""What a certification's W&B run plays: one test point, clean and with one draw of the smoothing noise.

Rendered by the monitor (never by the reducer, never in a shard) when it logs the results: the first planned
point, its waveform, and the same waveform with Gaussian noise of the config's sigma added at its stage (magspec:
resynthesised with the clean phase; mfbe has no waveform, so only the clean audio). The draw is an illustration
of what g averages over, seeded by the config's seed, not one of the draws the certificates counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from audiocert.checkpoint import build_frontend
from audiocert.data import build_datasets
from audiocert.psychoacoustics import magspec_to_waveform


def noisy_example(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    """[{"key", "audio" (float32 array), "rate", "caption"}] for the clean and the perturbed point."""
    config, quantities = plan["config"], plan["quantities"]
    stage, sigma = quantities["stage"], float(quantities["sigma"])
    planned = plan["inputs"][0]
    waveform, _ = build_datasets(config["dataset"]).test[planned["index"]]
    rate = int(config["dataset"]["sample_rate"])
    where = f"point {planned['index']} (label {planned['label']})"
    items = [{"key": "example/clean", "audio": waveform.numpy(), "rate": rate, "caption": f"{where}, clean"}]
    generator = torch.Generator().manual_seed(int(quantities.get("seed", 0)))
    with torch.no_grad():
        if stage == "waveform":
            noisy = waveform + sigma * torch.randn(waveform.shape, generator=generator)
        elif stage == "magspec":
            frontend = build_frontend(config.get("frontend"))
            clean = frontend.to_stage(waveform[None], stage)[0]
            noisy = magspec_to_waveform(clean + sigma * torch.randn(clean.shape, generator=generator), waveform,
                                        frontend).float()
        else:
            return items
    caption = f"{where} + one draw of N(0, {sigma:g}^2 I) at stage {stage}"
    return items + [{"key": "example/perturbed", "audio": noisy.clamp(-1, 1).numpy(), "rate": rate,
                     "caption": caption}]
