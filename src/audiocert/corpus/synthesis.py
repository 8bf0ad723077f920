"""Voice synthesis: the rendering of one utterance of a synthetic speaker (:func:`synthesize_utterance`).

The voice model is a source-filter synthesizer, in the spirit of the Klatt cascade synthesizer:

* Source: a Rosenberg glottal pulse train (its derivative, i.e. with lip radiation) driven by an f0 contour
  (per-speaker mean pitch and pitch range; per-utterance register; phrase declination, pitch accents on
  stressed syllables, a final fall or rise; vibrato, slow flutter, per-period jitter and shimmer), plus
  aspiration noise mixed into the voiced parts (breathiness), frication noise and stop bursts.
* Filter: five cascaded formant resonators whose targets come from one vowel/consonant table shared by all
  speakers, scaled by the speaker's vocal-tract length (``formant_scale``) and per-formant idiosyncrasies;
  the targets are smoothed in time, which gives formant transitions (coarticulation) and consonant loci.
  Nasals add an antiresonance, the speaker's spectral tilt shapes the glottal source, fricatives are
  band-shaped noise at phone-specific bands. The time-varying filters are applied frame-wise in the STFT
  domain (weighted overlap-add), which keeps synthesis vectorized and fast.
* Content: random pseudo-words from the same phone inventory for every speaker (CV/CCV/CVC syllables,
  lexical stress, pauses), at the speaker's speaking rate; then a little room reverberation, background
  noise and a random peak level. Content and channel never identify the speaker; the voice does.

Speakers come in "pitch twins": every second speaker of each sex gets a mean pitch within a few Hz of an
earlier same-sex speaker but a clearly different vocal-tract length, so from three speakers on, pitch alone
never separates them all. Everything is drawn from ``numpy.random.default_rng`` seeded through
``SeedSequence`` with the corpus seed and the speaker (and utterance) index, so every utterance is
reproducible on its own.

The parts live in their own modules (voices, phones, tracks, source, filtering; see :mod:`audiocert.corpus`);
this one renders an utterance from them.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from audiocert.corpus.filtering import _Stft
from audiocert.corpus.phones import _Plan, _plan_utterance
from audiocert.corpus.source import _f0_contour, _glottal_source
from audiocert.corpus.tracks import _fill_tracks
from audiocert.corpus.voices import _TAG_UTTERANCE, Voice, voice_parameters

__all__ = ["Voice", "synthesize_utterance", "voice_parameters"]

_REF_BANDWIDTHS = np.array([60.0, 90.0, 140.0, 200.0, 260.0])


def synthesize_utterance(voice: Voice, seed: int, utterance_index: int, sample_rate: int = 16000,
                         min_seconds: float = 2.0, max_seconds: float = 5.0) -> tuple[np.ndarray, str]:
    """Synthesize one utterance of ``voice``; returns (float32 waveform in [-1, 1], transcript).

    Deterministic in (seed, voice.index, utterance_index) and independent of every other utterance.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_UTTERANCE, voice.index, utterance_index]))
    plan = _plan_utterance(rng, voice, sample_rate, min_seconds, max_seconds)
    transcript = " ".join(plan.words)
    return _render(plan, voice, rng, sample_rate), transcript


def _transcript_only(voice: Voice, seed: int, utterance_index: int, sample_rate: int, min_seconds: float,
                     max_seconds: float) -> str:
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_UTTERANCE, voice.index, utterance_index]))
    return " ".join(_plan_utterance(rng, voice, sample_rate, min_seconds, max_seconds).words)


def _render(plan: _Plan, voice: Voice, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    ctrl_rate = 1000
    n = plan.num_samples
    tr = _fill_tracks(plan, voice, rng, ctrl_rate)
    n_ctrl = tr.voicing.size
    t_ctrl = np.arange(n_ctrl) / ctrl_rate
    t_smp = np.arange(n) / sample_rate

    f0 = np.interp(t_smp, t_ctrl, _f0_contour(plan, voice, tr, rng, ctrl_rate))
    glottal, open_phase = _glottal_source(f0, voice, rng, sample_rate)
    voicing = np.interp(t_smp, t_ctrl, tr.voicing)
    voiced_src = glottal * voicing
    # Aspiration: breathiness (pitch-synchronous, during the open phase) plus /h/ and stop aspiration.
    noise_a = rng.standard_normal(n)
    breath = voice.breathiness * voicing * (0.4 + 0.6 * open_phase) * 9.0
    asp_src = noise_a * (breath + np.interp(t_smp, t_ctrl, tr.aspiration) * 4.0)
    fric_src = rng.standard_normal(n) * np.interp(t_smp, t_ctrl, tr.frication)

    stft = _Stft(sample_rate)
    n_frames = stft.num_frames(n)
    t_frames = np.arange(n_frames) * stft.hop / sample_rate

    def at_frames(track: np.ndarray) -> np.ndarray:
        if track.ndim == 1:
            return np.interp(t_frames, t_ctrl, track)
        return np.stack([np.interp(t_frames, t_ctrl, track[:, k]) for k in range(track.shape[1])], axis=1)

    formants = at_frames(tr.formants)
    bandwidths = np.broadcast_to(_REF_BANDWIDTHS * voice.bandwidth_scale, formants.shape).copy()
    bandwidths[:, 0] *= 1.0 + 0.5 * np.clip((formants[:, 0] - 400.0) / 400.0, 0.0, 1.0)  # open vowels
    nasal = at_frames(tr.nasal)[:, None]
    bandwidths[:, 0] += 60.0 * nasal[:, 0]
    h_vt = stft.resonators(formants, bandwidths, sample_rate)
    f = stft.freqs[None, :]
    rows = np.flatnonzero(nasal[:, 0] > 1e-3)  # nasal antiresonance, only where it matters
    if rows.size:
        zero = at_frames(tr.nasal_zero)[rows, None]
        h_vt[rows] *= 1.0 - 0.85 * nasal[rows] * np.exp(-0.5 * ((f - zero) / (0.15 * zero)) ** 2)
    tilt = ((np.maximum(stft.freqs, 300.0) / 300.0) ** (voice.spectral_tilt_db / 6.02)).astype(np.float32)
    asp_shape = np.sqrt(np.clip(stft.freqs / 1500.0, 0.15, 2.0)).astype(np.float32)

    spec = stft.analyze(voiced_src) * (h_vt * tilt)
    spec += stft.analyze(asp_src) * (h_vt * asp_shape)
    fric_spec = stft.analyze(fric_src)
    rows = np.flatnonzero(np.any(fric_spec.real != 0.0, axis=1))  # frames that hold frication noise
    if rows.size:
        centre, width = at_frames(tr.fric_centre)[rows, None], at_frames(tr.fric_width)[rows, None]
        dist = ((f - centre) / width) ** 2
        h_fric = (0.6 * np.exp(-0.5 * dist) + 0.018 * np.exp(-dist / 18.0)).astype(np.float32)
        spec[rows] += fric_spec[rows] * (6.0 * h_fric)
    speech = stft.synthesize(spec, n)

    # A little room: a short exponentially decaying noise tail mixed under the direct sound.
    rt60 = rng.uniform(0.12, 0.35)
    ir_len = int(0.5 * rt60 * sample_rate)
    ir = rng.standard_normal(ir_len) * np.exp(-6.9 * np.arange(ir_len) / (rt60 * sample_rate))
    ir *= rng.uniform(0.1, 0.3) / max(float(np.sqrt(np.sum(ir * ir))), 1e-12)
    ir[0] = 1.0
    wet = signal.fftconvolve(speech, ir)[:n]
    # Background noise (pinkish), 30-50 dB below the speech.
    rms = float(np.sqrt(np.mean(wet * wet))) or 1.0
    bg = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(n))
    bg *= rms * 10.0 ** (-rng.uniform(30.0, 50.0) / 20.0) / max(float(bg.std()), 1e-12)
    out = wet + bg
    out *= rng.uniform(0.3, 0.7) / max(float(np.max(np.abs(out))), 1e-12)
    return out.astype(np.float32)
