"""The control tracks of one utterance at a 1 kHz control rate: formant targets, source amplitudes, intonation.

Each phone of the plan writes its targets (vowels, approximants, nasals, fricatives, stops with closure, burst and
aspiration); pauses close intonation phrases (declination); then the tracks are smoothed (coarticulation) and the
formants scaled by the speaker's vocal tract.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from audiocert.corpus.phones import _CONSONANTS, _NEUTRAL, _VOWELS, _Phone, _Plan
from audiocert.corpus.voices import Voice


class _Tracks:
    """Control tracks at a 1 kHz control rate."""

    def __init__(self, n: int):
        self.formants = np.tile(np.array(_NEUTRAL), (n, 1))
        self.voicing = np.zeros(n)  # voiced source amplitude
        self.aspiration = np.zeros(n)  # aspiration noise amplitude (through the vocal tract)
        self.frication = np.zeros(n)  # frication noise amplitude (through the frication band)
        self.fric_centre = np.full(n, 4000.0)
        self.fric_width = np.full(n, 1500.0)
        self.nasal = np.zeros(n)
        self.nasal_zero = np.full(n, 1500.0)
        self.accent = np.zeros(n)  # semitone offsets from pitch accents (in pitch-range units)
        self.phrase = np.zeros(n)  # declination, in pitch-range units
        self.speech = np.zeros(n, dtype=bool)


def _window(n: int, power: float = 0.35) -> np.ndarray:
    if n <= 2:
        return np.ones(max(n, 0))
    return np.sin(np.linspace(0.0, np.pi, n)) ** power


def _fill_nearest(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` where ``known``, elsewhere the value at the nearest known position."""
    pos = np.flatnonzero(known)
    if pos.size == 0:
        return values
    i = np.arange(values.size)
    right = np.minimum(np.searchsorted(pos, i), pos.size - 1)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(pos[left] - i) <= np.abs(pos[right] - i), pos[left], pos[right])
    return values[nearest]



def _control_index(x: float, ctrl_rate: int, n_ctrl: int) -> int:
    """The control-rate index of time ``x`` (seconds), at most ``n_ctrl``."""
    return min(int(round(x * ctrl_rate)), n_ctrl)


def _close_phrase(tr: _Tracks, rng: np.random.Generator, start: int, end: int) -> None:
    """Declination over the phrase [start, end), of a random height (one draw, only for phrases of > 1 step)."""
    if end - start > 1:
        tr.phrase[start:end] = np.linspace(0.5, -0.5, end - start) * rng.uniform(0.4, 1.0)


def _fill_tracks(plan: _Plan, voice: Voice, rng: np.random.Generator, ctrl_rate: int) -> _Tracks:
    """The control tracks of ``plan`` for ``voice``; ``rng`` draws only the phrases' declination heights, in order."""
    n_ctrl = int(math.ceil(plan.num_samples * ctrl_rate / plan.sample_rate)) + 1
    tr = _Tracks(n_ctrl)
    t = plan.lead
    phrase_start = int(round(t * ctrl_rate))
    for k, ph in enumerate(plan.phones):
        a, b = _control_index(t, ctrl_rate, n_ctrl), _control_index(t + ph.duration, ctrl_rate, n_ctrl)
        t += ph.duration
        if b <= a:
            continue
        if ph.name == "pau":
            _close_phrase(tr, rng, phrase_start, a)
            phrase_start = b
            continue
        tr.speech[a:b] = True
        if ph.name in _VOWELS:
            _fill_vowel(tr, ph, a, b, ctrl_rate)
        else:
            _fill_consonant(tr, plan.phones, k, a, b, t, voice.formant_scale, ctrl_rate)
    _close_phrase(tr, rng, phrase_start, _control_index(t, ctrl_rate, n_ctrl))
    _smooth_tracks(tr, voice, ctrl_rate)
    return tr


def _fill_vowel(tr: _Tracks, ph: _Phone, a: int, b: int, ctrl_rate: int) -> None:
    """A vowel over [a, b): its formant targets, voicing, and its pitch accent (a Gaussian bump) if it has one."""
    n = b - a
    tr.formants[a:b] = _VOWELS[ph.name][1]
    tr.voicing[a:b] = (1.0 if ph.stressed else 0.75) * _window(n)
    if ph.accent > 0:
        centre = (a + b) // 2
        width = max(0.06 * ctrl_rate, n / 2)
        tt = np.arange(tr.voicing.size) - centre
        tr.accent += ph.accent * np.exp(-0.5 * (tt / width) ** 2)


def _fill_consonant(tr: _Tracks, phones: list[_Phone], k: int, a: int, b: int, t: float, fs: float,
                    ctrl_rate: int) -> None:
    """Consonant ``phones[k]`` over [a, b) (``t``: its end time, ``fs``: the speaker's formant scale)."""
    ph = phones[k]
    n = b - a
    spec = _CONSONANTS[ph.name]
    kind = spec["kind"]
    if kind == "h":
        nxt = next((p for p in phones[k + 1:] if p.name in _VOWELS), None)
        tr.formants[a:b] = _VOWELS[nxt.name][1] if nxt is not None else _NEUTRAL
        tr.aspiration[a:b] = 0.45 * _window(n, 0.5)
        return
    tr.formants[a:b] = spec["formants"]
    if kind == "approx":
        tr.voicing[a:b] = 0.6
    elif kind == "nasal":
        tr.voicing[a:b] = 0.4
        tr.nasal[a:b] = 1.0
        tr.nasal_zero[a:b] = spec["zero"] * fs
    elif kind == "fric":
        tr.frication[a:b] = spec["gain"] * _window(n, 0.6)
        tr.fric_centre[a:b] = spec["band"][0] * fs ** 0.5
        tr.fric_width[a:b] = spec["band"][1]
        tr.voicing[a:b] = spec["voiced"]
    else:
        _fill_stop(tr, phones, k, a, b, t, fs, ctrl_rate)


def _fill_stop(tr: _Tracks, phones: list[_Phone], k: int, a: int, b: int, t: float, fs: float,
               ctrl_rate: int) -> None:
    """Stop ``phones[k]`` over [a, b): closure (voice bar if voiced), burst, aspiration."""
    ph = phones[k]
    spec = _CONSONANTS[ph.name]
    n_ctrl = tr.voicing.size
    c = _control_index(t - ph.duration + ph.closure, ctrl_rate, n_ctrl)
    bu = _control_index(t - ph.duration + ph.closure + ph.burst, ctrl_rate, n_ctrl)
    if spec["voiced"]:
        tr.voicing[a:c] = 0.08
        tr.voicing[bu:b] = 0.5
    if bu > c:
        tr.frication[c:bu] = (0.9 if spec["voiced"] else 1.3) * np.exp(-np.linspace(0, 2.5, bu - c))
        tr.fric_centre[c:bu] = spec["band"][0] * fs ** 0.5
        tr.fric_width[c:bu] = spec["band"][1]
    if b > bu and not spec["voiced"]:
        tr.aspiration[bu:b] = 0.35 * np.exp(-np.linspace(0, 1.5, b - bu))
        nxt = phones[k + 1] if k + 1 < len(phones) else None
        if nxt is not None and nxt.name in _VOWELS:
            tr.formants[bu:b] = _VOWELS[nxt.name][1]


def _smooth_tracks(tr: _Tracks, voice: Voice, ctrl_rate: int) -> None:
    """Fill the frication band between fricatives, smooth the tracks, scale the formants to the speaker."""
    fs = voice.formant_scale
    # Outside fricatives and bursts the frication band is that of the nearest one (for the STFT frames that
    # straddle a fricative's edge).
    has_band = tr.frication > 0
    tr.fric_centre = _fill_nearest(tr.fric_centre, has_band)
    tr.fric_width = _fill_nearest(tr.fric_width, has_band)
    # Coarticulation: formant targets are smoothed (transitions ~ +-25 ms), amplitudes less so.
    smooth = 0.018 * ctrl_rate
    tr.formants = ndimage.gaussian_filter1d(tr.formants, smooth, axis=0, mode="nearest")
    tr.voicing = ndimage.gaussian_filter1d(tr.voicing, 0.006 * ctrl_rate, mode="constant")
    tr.aspiration = ndimage.gaussian_filter1d(tr.aspiration, 0.004 * ctrl_rate, mode="constant")
    tr.frication = ndimage.gaussian_filter1d(tr.frication, 0.0015 * ctrl_rate, mode="constant")
    tr.nasal = ndimage.gaussian_filter1d(tr.nasal, 0.01 * ctrl_rate, mode="constant")
    tr.nasal_zero = ndimage.gaussian_filter1d(tr.nasal_zero, 0.01 * ctrl_rate, mode="nearest")
    tr.phrase = ndimage.gaussian_filter1d(tr.phrase, 0.03 * ctrl_rate, mode="nearest")
    # Speaker-specific vocal tract: length scaling and per-formant idiosyncrasies.
    tr.formants = tr.formants * (fs * np.asarray(voice.formant_offsets))
