"""The report's attacked example: the smallest successful attack on g as audio and a spectrogram image.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from audiocert.checkpoint import build_frontend
from audiocert.data import build_datasets
from audiocert.provenance import (
    atomic_write_bytes,
)
from audiocert.psychoacoustics import magspec_to_waveform


def render_example(kind: Any, config_dir: Path, plan: Mapping[str, Any], merged: Mapping[str, Any]
                   ) -> dict[str, Any] | None:
    """The smallest successful attack on g among the shards' saved deltas, as audio and a spectrogram image
    (clean, attacked, and the difference); None when no attack on g succeeded (or none was saved)."""
    for candidate in sorted(merged["deltas"], key=lambda d: (d["eps"], d["index"])):
        delta = kind.saved_delta(config_dir, candidate)
        if delta is not None:
            return write_example(config_dir, plan, candidate, torch.from_numpy(delta))
    return None


def write_example(config_dir: Path, plan: Mapping[str, Any], candidate: Mapping[str, Any],
                  delta: torch.Tensor) -> dict[str, Any]:
    """example.wav (attacked audio, where a waveform exists), example_clean.wav and example.png."""
    import matplotlib  # heavy: loaded by the reducer only, not by every command and worker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    position = candidate["position"]
    planned = plan["inputs"][position]
    config = plan["config"]
    waveform, _ = build_datasets(config["dataset"]).test[planned["index"]]
    frontend = build_frontend(config.get("frontend"))
    stage, space = config["representation"]["stage"], plan["quantities"]["attack"]["space"]
    rate = int(config["dataset"]["sample_rate"])
    with torch.no_grad():
        if space == "waveform" or stage == "waveform":
            attacked_wave = waveform + delta
            audio_note = "the attacked waveform"
        elif stage == "magspec":
            clean_stage = frontend.to_stage(waveform[None], stage)[0]
            attacked_wave = magspec_to_waveform(clean_stage + delta, waveform, frontend).float()
            audio_note = "resynthesised from the attacked magnitude spectrogram with the clean phase"
        else:
            attacked_wave = None
            audio_note = "none: a normalized-filterbank perturbation has no waveform"
        clean_mag = frontend.to_stage(waveform[None], "magspec")[0]
        shown = frontend.to_stage(attacked_wave[None], "magspec")[0] if attacked_wave is not None else None
    files = {}
    soundfile.write(config_dir / "example_clean.wav", waveform.numpy(), rate)
    files["clean_audio"] = "example_clean.wav"
    if attacked_wave is not None:
        soundfile.write(config_dir / "example.wav", attacked_wave.clamp(-1, 1).numpy(), rate)
        files["attacked_audio"] = "example.wav"
    panels = [("clean |rfft| (dB)", clean_mag)]
    if shown is not None:
        panels += [(f"attacked, eps = {candidate['eps']:.4g} (dB)", shown),
                   ("difference (dB)", (shown - clean_mag).abs())]
    elif stage == "mfbe":
        clean_stage = frontend.to_stage(waveform[None], stage)[0]
        panels += [(f"attacked mfbe, eps = {candidate['eps']:.4g}", clean_stage + delta), ("delta (mfbe)", delta)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, image) in zip(axes[0], panels, strict=True):
        values = image.T.numpy()
        if "dB" in title:
            values = 20 * np.log10(np.maximum(values, 1e-6))
        ax.imshow(values, origin="lower", aspect="auto", cmap="magma")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame")
    axes[0][0].set_ylabel("bin")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(config_dir / "example.png", buffer.getvalue())
    files["image"] = "example.png"
    return {"idx": int(planned["index"]), "label": int(planned["label"]), "eps": float(candidate["eps"]),
            "space": space, "audio": audio_note, "delta_l2": float(delta.double().norm()), **files}
