"""What a certificate implies for waveform perturbations: directly (the waveform stage), through a proven Lipschitz
bound L of waveform -> magnitude spectrogram (r / L), or not at all (normalized filterbank energies).

L is a *proven* upper bound on the Lipschitz constant of waveform -> magnitude spectrogram
(:func:`audiocert.lipschitz.waveform_lipschitz_bound`: the polyphase symbol of the linear map waveform -> complex
rfft of pre-emphasized frames, certified over theta; |.| is 1-Lipschitz), cached in the report directory. A frontend
the bound's derivation does not cover gets no waveform guarantee at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audiocert.lipschitz import DEFAULT_TOLERANCE, METHOD_VERSION, bound_for, linear_map_of
from audiocert.provenance import atomic_write_json, read_json, stable_hash
from audiocert.reporting.names import cell, fmt_float, fmt_up, waveform_bound
from audiocert.reporting.results import ConfigResult
from audiocert.stages import WaveformBound

LIPSCHITZ_CACHE = "lipschitz.json"
NO_BOUND = "no proven Lipschitz bound for this frontend: no waveform guarantee"


# ----------------------------------------------------------------------------------------------------------
# The Lipschitz bound of waveform -> magnitude spectrogram (proven: see audiocert.lipschitz)
# ----------------------------------------------------------------------------------------------------------
def _valid_entry(entry: Any, params: Mapping[str, Any], num_samples: int) -> bool:
    if not isinstance(entry, dict) or entry.get("method_version") != METHOD_VERSION:
        return False
    if entry.get("params") != dict(params) or entry.get("num_samples") != num_samples:
        return False
    values = [entry.get(key) for key in ("bound", "lower", "closed_form", "derivative_bound", "tolerance")]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return False
    return 0 < entry["lower"] <= entry["bound"] <= entry["closed_form"]


def cached_lipschitz(cache_path: Path, frontend_cfg: Mapping[str, Any] | None,
                     num_samples: Any) -> dict[str, Any] | None:
    """The proven bound L for (frontend, crop length), from ``cache_path`` (JSON) or computed and stored there.

    None when there is no proven bound: a frontend config the derivation does not cover, or no valid crop length.
    The cache key holds the linear map's parameters and the crop length: a zero-padded last frame adds a small
    boundary term to the bound, so the length matters (only through (N - frame_length) % hop).
    """
    lm = linear_map_of(frontend_cfg)
    if lm is None or isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        return None
    params = asdict(lm)
    key = stable_hash({"linear_map": params, "num_samples": num_samples, "method_version": METHOD_VERSION,
                       "tolerance": DEFAULT_TOLERANCE})
    try:
        cache = read_json(cache_path) if cache_path.is_file() else {}
    except (OSError, ValueError):  # a damaged cache is recomputed, not trusted
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    if _valid_entry(cache.get(key), params, num_samples):
        return cache[key]
    entry = bound_for(lm, num_samples).to_json()
    cache[key] = entry
    atomic_write_json(cache_path, cache)
    return entry


def frontend_config(r: ConfigResult) -> Any:
    """The frontend section of a config as its plan recorded it (None: the frontend's defaults)."""
    return r.config.get("frontend") if isinstance(r.config, Mapping) else r.config


def lipschitz_bound(entry: Mapping[str, Any]) -> float:
    return float(entry["bound"])


def lipschitz_proof_text(entry: Mapping[str, Any]) -> str:
    """How L was proven, for the meaning section."""
    params = entry["params"]
    text = (f"polyphase symbol H(θ) = Σ_q G_q e^(iqθ) of the linear map waveform -> complex rfft of pre-emphasized "
            f"frames (frame {params['frame_length']}, hop {params['hop_length']}, nfft {params['nfft']}, "
            f"pre-emphasis {params['preemphasis']:g}; |.| is 1-Lipschitz), whose infinite-length operator norm is "
            f"sup_θ σ_max(H(θ)); that supremum certified over θ ∈ [0, π] by a grid and branch-and-bound refinement "
            f"(σ_max is D-Lipschitz in θ with D = {entry['derivative_bound']:.4g}, plus a second-order bound) to "
            f"within {entry['tolerance']:g} of the best value evaluated, {entry['lower']:.6f} at θ = "
            f"{entry['theta']:.4g} ({entry['evaluations']} evaluations, float64 eigvalsh, raised by 1e-9 relative "
            "for round-off)")
    if not entry.get("tolerance_reached", True):
        text += " — the refinement ran out of budget before that tolerance; the bound is proven but looser"
    if entry.get("boundary_excess"):
        text += (f"; the crop's last frame is zero-padded, which adds a boundary term {entry['boundary_excess']:.4g} "
                 "to L² (the smallest eigenvalue of a local Gram difference)")
    if entry["bound"] >= entry["closed_form"]:
        text += f"; the closed form (1 + |p|)·sqrt(ceil(frame/hop)·λ_max(WᵀW)) = {entry['closed_form']:.6f} is used"
    else:
        text += f"; below the closed form (1 + |p|)·sqrt(ceil(frame/hop)·λ_max(WᵀW)) = {entry['closed_form']:.4f}"
    return text


# ----------------------------------------------------------------------------------------------------------
# Waveform radius and waveform-equivalent SNR of each config
# ----------------------------------------------------------------------------------------------------------
@dataclass
class WaveformTerms:
    """What a config's certificate implies for waveform perturbations."""

    guarantee: str  # a WaveformBound ("direct", "lipschitz", "none"); "no bound" (lipschitz without a proven L),
    #                 "unknown" (a stage the registry does not know)
    lipschitz: float | None = None  # L (lipschitz)
    radius: float | None = None  # median certified radius in waveform space (r, or r / L)
    snr_db: float | None = None  # median 20 log10(||x_waveform|| / waveform radius)
    snr_note: str = ""  # why snr_db is missing, where it is


def waveform_terms(r: ConfigResult, entry: Mapping[str, Any] | None) -> WaveformTerms:
    """Waveform radius and waveform-equivalent SNR 20 log10(||x_wave|| L / r) of a config (see section_meaning)."""
    certified = r.certified
    raw = float(np.median(r.radii[certified])) if certified.any() else None
    bound = waveform_bound(r.stage)
    if bound is WaveformBound.DIRECT:  # the stage is the waveform: both SNRs are the same number
        key = "median_wave_to_radius_db" if "median_wave_to_radius_db" in r.summary else "median_snr_db"
        snr = r.summary.get(key)
        return WaveformTerms("direct", None, raw, snr, "" if snr is not None else "n/a (no point certified)")
    if bound is WaveformBound.LIPSCHITZ:
        if entry is None:
            return WaveformTerms("no bound", snr_note="none (no proven Lipschitz bound)")
        L = lipschitz_bound(entry)
        if "median_wave_to_radius_db" not in r.summary:
            snr, note = None, "n/a (summary written before the reducer recorded median_wave_to_radius_db)"
        elif r.summary["median_wave_to_radius_db"] is None:
            snr, note = None, "n/a (no point certified)"
        else:
            snr, note = float(r.summary["median_wave_to_radius_db"]) + 20.0 * math.log10(L), ""
        return WaveformTerms("lipschitz", L, None if raw is None else raw / L, snr, note)
    if bound is WaveformBound.NONE:
        return WaveformTerms("none", snr_note="none (no waveform guarantee)")
    return WaveformTerms("unknown", snr_note="none (stage not known)")


def waveform_table(rows: Sequence[ConfigResult], lipschitz: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """One row per config: the radius and SNR at its stage, and what they mean for the waveform."""
    lines = ["| config | stage | median radius (stage) | SNR-equivalent (stage) | L | median waveform radius | "
             "waveform-equivalent SNR |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        terms = waveform_terms(r, lipschitz.get(r.config_hash))
        certified = r.certified
        raw = fmt_float(float(np.median(r.radii[certified]))) if certified.any() else "none certified"
        stage_snr = r.summary.get("median_snr_db")
        stage_snr = "n/a" if stage_snr is None else f"{stage_snr:.1f} dB"
        L = {"direct": "— (direct)", "lipschitz": fmt_up(terms.lipschitz or 0.0, 5), "no bound": "no proven bound",
             "none": "none (normalization)"}.get(terms.guarantee, "unknown")
        if terms.guarantee in ("direct", "lipschitz"):
            radius = fmt_float(terms.radius) if terms.radius is not None else "none certified"
        else:
            radius = "no waveform guarantee"
        snr = f"{terms.snr_db:.1f} dB" if terms.snr_db is not None else terms.snr_note.split(" (")[0]
        lines.append(f"| {cell(r.name)} | {r.stage} | {raw} | {stage_snr} | {L} | {radius} | {snr} |")
    return lines
