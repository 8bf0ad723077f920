"""What each certificate means (Park et al. 2026's reporting items): per config, the certified object, where the
noise enters, gain policy, post-noise modification, raw radius, SNR-equivalent, the waveform guarantee it implies
(directly; through r / L; or none) and its waveform-equivalent SNR, also gathered in one table; for a sequential
config, what its radius is (a lower bound at the level of the look where the point stopped)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from audiocert.algorithms import make_algorithm
from audiocert.reporting.context import ReportContext
from audiocert.reporting.names import fmt_float, fmt_radius, fmt_up, stage_title, stage_units
from audiocert.reporting.results import ConfigResult
from audiocert.reporting.waveform_guarantee import NO_BOUND, lipschitz_proof_text, waveform_table, waveform_terms
from audiocert.statistics import ABSTAIN

INTRO = (
    "The reporting items of Park et al. (2026): what is certified, where the noise enters, what is done to "
    "the signal before and after it, the raw radius, its SNR-equivalent 20 log10(‖x_stage‖ / r), and the "
    "waveform guarantee it implies, with its waveform-equivalent SNR 20 log10(‖x_waveform‖ / r_waveform): "
    "for a magnitude-spectrogram certificate r_waveform = r / L with L a proven upper bound on the "
    "Lipschitz constant of waveform -> magnitude spectrogram, so the waveform SNR is "
    "20 log10(‖x_waveform‖·L / r); for a waveform certificate the two SNRs coincide; normalized "
    "filterbank energies have no waveform guarantee and no waveform SNR. Medians over the certified "
    "points (correct, radius > 0).")


def meaning_section(context: ReportContext) -> list[str]:
    """The waveform table, then what each config's certificate means."""
    complete = context.complete
    lines = ["## What each certificate means", "", INTRO, ""]
    lines += waveform_table(complete, context.lipschitz) + [""]
    if any(r.table_radii for r in complete):
        lines += ["Sequential configs' median radii are lower bounds at the level of each point's stopping look and "
                  f"run smaller than Cohen's at the same n{context.see}: they say how far the table's answers reach, "
                  "not the radius the model could be certified for.", ""]
    for r in complete:
        lines += config_meaning(r, context.clean_accuracy(r), context.lipschitz.get(r.config_hash))
    return lines


def ceiling_level(r: ConfigResult) -> str:
    """The n and level of a config's ceiling: α for Cohen; the last look's α_K for sequential."""
    if r.table_radii:
        try:
            last = make_algorithm(r.quantities).look_alphas[-1]
        except (KeyError, TypeError, ValueError, AttributeError):  # a plan of another code version
            return f"n = {r.n}, the last look's share of α = {r.alpha:g}"
        return f"n = {r.n}, the last look's α_K = {last:.3g} of α = {r.alpha:g}"
    return f"n = {r.n}, α = {r.alpha:g}"


def sequential_radius_text(r: ConfigResult) -> str:
    """What a sequential config's per-point radius is, and how to read it."""
    radii = ", ".join(fmt_radius(x) for x in r.table_radii or ())
    try:
        algorithm = make_algorithm(r.quantities)
        first = (f"{algorithm.looks[0]:,} estimation samples at α_1 = {algorithm.look_alphas[0]:.3g} for a point "
                 f"that settles at the first look, against n = {r.n:,} at α = {r.alpha:g} for Cohen's")
    except (KeyError, TypeError, ValueError, AttributeError):  # a plan of another code version
        first = "a point that settles at the first look has few samples at a small α_k"
    return ("each point's radius is σ·Φ⁻¹(pA_lower) with pA_lower bounded at the level α_k of the look where the "
            "point stopped (Σ α_k = α, so the guarantee holds with probability ≥ 1 − α, as Cohen's), from the "
            "samples drawn up to that look. A point stops as soon as more samples would not change its answers to "
            f"\"R ≥ r?\" at the table radii ({radii}), so its radius is a lower bound that answers those questions, "
            f"not the largest radius n samples could certify: it runs smaller than Cohen's ({first}), and so does "
            "its median. Compare certified accuracy at the table radii; between them the curve is conservative.")


def config_meaning(r: ConfigResult, clean: Mapping[str, Any], lipschitz: Mapping[str, Any] | None) -> list[str]:
    """One config's reporting items, its waveform guarantee and its accuracy."""
    semantics = r.summary.get("semantics", {})
    certified = r.certified
    raw = float(np.median(r.radii[certified])) if certified.any() else None
    snr = r.summary.get("median_snr_db")
    units = stage_units(r.stage)
    terms = waveform_terms(r, lipschitz)
    lines = [f"### {r.name} (`{r.config_hash[:8]}`)", ""]
    if semantics.get("model"):  # a user's network (model=external); the ResCNN's configs carry no such item
        lines.append(f"- **Model:** {semantics['model']}")
    lines.append(f"- **Certified object:** {semantics.get('certified_object', r.stage)}")
    lines.append(f"- **Perturbation location:** {semantics.get('perturbation_location', r.stage)}")
    lines.append(f"- **Gain policy:** {semantics.get('gain_policy', 'not recorded')}")
    lines.append(f"- **Post-noise modification:** {semantics.get('post_noise_modification', 'not recorded')}")
    lines.append(f"- **Radius norm:** {semantics.get('radius_norm', 'L2 over the stage representation')}")
    level = ceiling_level(r)
    if raw is None:
        lines.append(f"- **Raw radius:** no point certified (ceiling {r.ceiling:.4g} at {level})")
    else:
        lines.append(f"- **Raw radius:** median {raw:.4g} ({units}) over the {int(certified.sum())} certified "
                     f"point(s) of {r.radii.size}; ceiling {r.ceiling:.4g} at {level}")
    if r.table_radii:
        lines.append(f"- **Sequential radius:** {sequential_radius_text(r)}")
    norm = r.summary.get("median_stage_norm")
    snr_text = "n/a (no point certified)" if snr is None else f"{snr:.1f} dB"
    lines.append(f"- **SNR-equivalent of the radius:** median 20 log10(‖x_{r.stage}‖ / r) = {snr_text} "
                 f"(median ‖x_{r.stage}‖ = {fmt_float(norm)})")
    if terms.guarantee == "direct":
        lines.append("- **Waveform guarantee:** direct — the smoothed prediction is constant for every waveform "
                     "perturbation of L2 norm below the radius"
                     + ("" if raw is None else f" (median {raw:.4g})") + ".")
        snr_wave = f"{terms.snr_db:.1f} dB" if terms.snr_db is not None else terms.snr_note
        lines.append(f"- **Waveform-equivalent SNR:** {snr_wave}, the SNR-equivalent above (the smoothing stage is "
                     "the waveform).")
    elif terms.guarantee == "lipschitz":
        assert lipschitz is not None and terms.lipschitz is not None
        crop = f"{r.crop_samples:,}-sample crops"
        text = (f"- **Waveform guarantee:** through the proven Lipschitz bound L = {fmt_up(terms.lipschitz)} of "
                f"waveform -> {stage_title(r.stage)} for {crop}. How L was proven: {lipschitz_proof_text(lipschitz)}. "
                f"A {r.stage} radius r covers every waveform perturbation of L2 norm below r / L")
        if terms.radius is not None:
            text += f": waveform radius r / L = {terms.radius:.4g} (median over certified points)"
        lines.append(text + ".")
        if terms.snr_db is not None:
            wave_db = float(r.summary["median_wave_to_radius_db"])
            lines.append(f"- **Waveform-equivalent SNR:** median 20 log10(‖x_waveform‖·L / r) = {terms.snr_db:.1f} dB "
                         f"(median 20 log10(‖x_waveform‖ / r) = {wave_db:.1f} dB, plus 20 log10 L = "
                         f"{20.0 * math.log10(terms.lipschitz):.2f} dB; median ‖x_waveform‖ = "
                         f"{fmt_float(r.summary.get('median_waveform_norm'))}): no waveform perturbation at a "
                         "higher SNR can change the smoothed prediction; the waveform counterpart of the "
                         "feature-space SNR above.")
        else:
            lines.append(f"- **Waveform-equivalent SNR:** {terms.snr_note}.")
    elif terms.guarantee == "no bound":
        lines.append(f"- **Waveform guarantee:** none — {NO_BOUND} (its frontend config has keys or values that "
                     "the bound's derivation does not cover, or no plain crop length), so no waveform radius "
                     "follows.")
        lines.append("- **Waveform-equivalent SNR:** none (no waveform guarantee).")
    elif terms.guarantee == "none":
        lines.append("- **Waveform guarantee:** none — the guarantee holds in feature space only: the per-frame "
                     "normalization has no Lipschitz bound (it amplifies quiet frames without limit), so no "
                     "waveform radius follows.")
        lines.append("- **Waveform-equivalent SNR:** none (no waveform guarantee).")
    else:
        lines.append("- **Waveform guarantee:** not known for this stage.")
    accuracy = clean.get("accuracy")
    abstain = float(np.mean(r.predict == ABSTAIN)) if r.predict.size else float("nan")
    lines.append(f"- **Accuracy:** base classifier clean {fmt_float(accuracy, '.3f')}; smoothed (CERTIFY) "
                 f"{float(r.correct.mean()):.3f}; abstentions {abstain:.3f}")
    lines.append("")
    return lines
