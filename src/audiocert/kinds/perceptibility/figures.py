"""What the perceptibility reducer draws and renders: the PSD figure of a point and the quietest attack's audio.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch

from audiocert import psychoacoustics as pa
from audiocert.checkpoint import build_frontend
from audiocert.data import build_datasets
from audiocert.kinds.derived import log
from audiocert.kinds.perceptibility.measure import PointPerturbations, certified_radius_at_stage, point_seed
from audiocert.kinds.perceptibility.settings import KIND
from audiocert.provenance import (
    atomic_write_bytes,
)
from audiocert.shards import (
    waveform_digest,
)


# ----------------------------------------------------------------------------------------------------------
# Figures and audio of the reducer
# ----------------------------------------------------------------------------------------------------------
def _load_point(plan: Mapping[str, Any], position: int) -> tuple[torch.Tensor, Any]:
    planned = plan["inputs"][position]
    waveform, _ = build_datasets(plan["config"]["dataset"]).test[planned["index"]]
    if waveform_digest(waveform) != planned["digest"]:
        raise ValueError(f"test example {planned['index']} changed since it was planned")
    return waveform, build_frontend(plan["config"].get("frontend"))


def write_psd_figure(config_dir: Path, plan: Mapping[str, Any], position: int) -> dict[str, Any]:
    """psd.png: for one point, per radius (the grid and its certified radius), the clean PSD, the masking threshold
    and the PSDs of the first random and of the shaped perturbation, at the frame where the random one exceeds the
    threshold most. The perturbations are recomputed exactly as the shard drew them (same seeds)."""
    from matplotlib.figure import Figure  # heavy: loaded by the reducer only

    settings = plan["quantities"][KIND]
    seed, stage = int(plan["quantities"]["seed"]), plan["quantities"]["stage"]
    waveform, frontend = _load_point(plan, position)
    example = int(plan["inputs"][position]["index"])
    x = waveform.double()
    threshold = pa.masking_threshold(x)
    budget = pa.imperceptible_budget(x, settings["margin_db"], seed=point_seed(seed, example, "budget"),
                                     iterations=settings["budget_iterations"], threshold=threshold)
    perturbations = PointPerturbations(x, stage, frontend, budget, settings["draws"], seed, example)
    radii = [(float(r), f"r = {r:g}") for r in settings["radii"]]
    certified = certified_radius_at_stage(plan, position)
    if certified is not None:
        radii.append((certified, f"certified R = {certified:.4g}"))
    columns = 3
    rows = math.ceil(len(radii) / columns)
    fig = Figure(figsize=(4.2 * columns, 2.9 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    freqs = threshold.frequencies.numpy()
    units = "waveform" if perturbations.space == "waveform" else "magspec"
    for ax, (r, title) in zip(axes.flat, radii, strict=False):
        deltas = perturbations.deltas([r])[0]                                     # (K + 1, n)
        psd = pa.perturbation_psd_db(deltas[[0, -1]], threshold.psd_max_db)       # (2, frames, 1025)
        excess = psd[0] - threshold.theta_db
        frame = int(excess.amax(dim=-1).argmax())
        ax.plot(freqs, threshold.psd_db[frame].numpy(), color="0.6", linewidth=0.8, label="clean PSD")
        ax.plot(freqs, threshold.theta_db[frame].numpy(), color="black", linewidth=1.4, label="masking threshold")
        ax.plot(freqs, psd[0, frame].numpy(), color="tab:red", linewidth=0.8, label="random perturbation")
        ax.plot(freqs, psd[1, frame].numpy(), color="tab:blue", linewidth=0.8, label="masking-shaped perturbation")
        ax.set_title(f"{title} ({units}): frame {frame}, max excess {float(excess[frame].max()):+.1f} dB",
                     fontsize=8)
        ax.set_ylim(-40, 110)
        ax.set_xlabel("frequency (Hz)", fontsize=8)
        ax.set_ylabel("dB (clean max = 96)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(radii):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=6, loc="upper right")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(config_dir / "psd.png", buffer.getvalue())
    return {"file": "psd.png", "idx": example, "radii": [r for r, _ in radii]}


def render_attack_example(kind: Any, config_dir: Path, plan: Mapping[str, Any], merged: Mapping[str, Any],
                          positions: Sequence[int], points: Sequence[Mapping[str, Any]],
                          radius_w: np.ndarray | None) -> dict[str, Any] | None:
    """The quietest successful attack among the shards' saved deltas as audio (attack_clean.wav, attack.wav), with
    its point's certified waveform radius; None when no attack succeeded (or none was saved)."""
    candidates = sorted(merged["deltas"], key=lambda d: (max(d["max_excess_db"], 0.0), d["l2"], d["index"]))
    for candidate in candidates:
        delta = kind.saved_delta(config_dir, candidate)
        if delta is None:
            continue
        path = config_dir / "shards" / candidate["file"]
        position = candidate["position"]
        waveform, _ = _load_point(plan, position)
        if delta.shape != tuple(waveform.shape):
            log.warning("%s has shape %s, the point's waveform %s: not rendered", path, delta.shape,
                        tuple(waveform.shape))
            continue
        rate = int(plan["config"]["dataset"]["sample_rate"])
        soundfile.write(config_dir / "attack_clean.wav", waveform.numpy(), rate)
        soundfile.write(config_dir / "attack.wav", np.clip(waveform.numpy() + delta, -1.0, 1.0), rate)
        k = list(positions).index(position)
        point = points[k]
        return {"idx": int(plan["inputs"][position]["index"]), "label": int(plan["inputs"][position]["label"]),
                "l2": float(candidate["l2"]), "linf": point["attack"]["linf"],
                "max_excess_db": float(candidate["max_excess_db"]), "predict": point["attack"]["predict"],
                "waveform_radius": None if radius_w is None else float(radius_w[k]),
                "budget": point["budget"]["budget"], "clean_audio": "attack_clean.wav", "attacked_audio": "attack.wav"}
    return None
