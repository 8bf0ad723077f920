"""The voice source of one utterance: the f0 contour (intonation, flutter, vibrato) and the glottal pulse train."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from audiocert.corpus.phones import _Plan
from audiocert.corpus.tracks import _Tracks
from audiocert.corpus.voices import Voice


def _f0_contour(plan: _Plan, voice: Voice, tr: _Tracks, rng: np.random.Generator,
                ctrl_rate: int) -> np.ndarray:
    """f0 in Hz at the control rate."""
    n = tr.voicing.size
    t = np.arange(n) / ctrl_rate
    semitones = voice.pitch_range_st * (tr.accent + 0.8 * tr.phrase)
    # Final fall (statement) or rise (question) over the last 250 ms of speech.
    speech_idx = np.flatnonzero(tr.speech)
    if speech_idx.size:
        end = speech_idx[-1]
        ramp_len = int(0.25 * ctrl_rate)
        start = max(end - ramp_len, 0)
        ramp = np.zeros(n)
        ramp[start:end + 1] = np.linspace(0.0, 1.0, end + 1 - start)
        ramp[end + 1:] = 1.0
        semitones = semitones + plan.final_st * ramp
    # Slow flutter (smoothed noise) and vibrato.
    flutter = ndimage.gaussian_filter1d(rng.standard_normal(n), 0.08 * ctrl_rate, mode="wrap")
    flutter *= 0.35 / max(float(flutter.std()), 1e-9)
    semitones = semitones + flutter
    voiced = tr.voicing > 0.3
    if voiced.any():
        semitones = semitones - np.median(semitones[voiced])
    semitones = semitones + plan.register_st
    vibrato_phase = rng.uniform(0, 2 * np.pi)
    vibrato = 1.0 + voice.vibrato_depth * np.sin(2 * np.pi * voice.vibrato_rate_hz * t + vibrato_phase)
    return np.clip(voice.f0_hz * 2.0 ** (semitones / 12.0) * vibrato, 55.0, 500.0)


def _glottal_source(f0: np.ndarray, voice: Voice, rng: np.random.Generator, sample_rate: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal-flow derivative driven by ``f0`` (per sample), with jitter and shimmer.

    Returns (source, open_phase) where open_phase is 1 while the glottis is open (for aspiration).
    """
    phase0 = np.cumsum(f0) / sample_rate
    n_periods = int(phase0[-1]) + 2
    jit = 1.0 + voice.jitter * rng.standard_normal(n_periods)
    f0j = f0 * jit[phase0.astype(np.int64)]
    phase = np.cumsum(f0j) / sample_rate + rng.random()
    period = phase.astype(np.int64)
    frac = phase - period
    shimmer = np.clip(1.0 + voice.shimmer * rng.standard_normal(period[-1] + 1), 0.3, None)
    oq = voice.open_quotient
    tp, tn = 0.62 * oq, 0.38 * oq
    opening = frac < tp
    closing = (frac >= tp) & (frac < tp + tn)
    d = np.zeros_like(frac)
    d[opening] = (np.pi / (2 * tp)) * np.sin(np.pi * frac[opening] / tp)
    d[closing] = -(np.pi / (2 * tn)) * np.sin(np.pi * (frac[closing] - tp) / (2 * tn))
    d *= shimmer[period] * (f0j / 100.0)
    return d, (opening | closing).astype(np.float64)
