"""The phone inventory shared by all speakers and the content of one utterance (phones, durations, words).

Formant targets of vowels and consonants (a reference adult male; every speaker scales them), pseudo-words of
CV/CCV/CVC syllables with lexical stress and pauses, drawn at the speaker's speaking rate (:func:`_plan_utterance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audiocert.corpus.voices import Voice

# Reference (adult male) formant targets F1..F5 in Hz; every speaker scales them by its formant_scale.
_NEUTRAL = (500.0, 1500.0, 2500.0, 3500.0, 4500.0)
_VOWELS: dict[str, tuple[str, tuple[float, ...]]] = {
    "iy": ("EE", (270, 2290, 3010, 3500, 4400)),
    "ih": ("I", (390, 1990, 2550, 3500, 4400)),
    "eh": ("E", (530, 1840, 2480, 3500, 4400)),
    "ae": ("A", (660, 1720, 2410, 3450, 4400)),
    "ah": ("U", (620, 1220, 2550, 3450, 4400)),
    "aa": ("O", (730, 1090, 2440, 3400, 4400)),
    "ao": ("AW", (570, 840, 2410, 3400, 4300)),
    "uh": ("OU", (440, 1020, 2240, 3400, 4300)),
    "uw": ("OO", (300, 870, 2240, 3350, 4300)),
    "er": ("ER", (490, 1350, 1690, 3200, 4300)),
}
# kind: "approx" (voiced, formant targets), "nasal" (voiced, murmur + antiresonance at `zero`),
# "fric" (noise band centre/width, relative gain, voicing), "stop" (burst band, voiced?), "h" (aspiration).
_CONSONANTS: dict[str, dict[str, Any]] = {
    "l": {"g": "L", "kind": "approx", "formants": (360, 1300, 2700, 3400, 4400)},
    "r": {"g": "R", "kind": "approx", "formants": (310, 1060, 1380, 3200, 4300)},
    "w": {"g": "W", "kind": "approx", "formants": (290, 610, 2150, 3300, 4300)},
    "y": {"g": "Y", "kind": "approx", "formants": (260, 2070, 3020, 3500, 4400)},
    "m": {"g": "M", "kind": "nasal", "formants": (280, 1000, 2200, 3300, 4300), "zero": 1000.0},
    "n": {"g": "N", "kind": "nasal", "formants": (280, 1500, 2500, 3300, 4300), "zero": 1700.0},
    "ng": {"g": "NG", "kind": "nasal", "formants": (280, 1850, 2300, 3300, 4300), "zero": 3000.0},
    "s": {"g": "S", "kind": "fric", "band": (5800.0, 1200.0), "gain": 1.0, "voiced": 0.0,
          "formants": (300, 1700, 2700, 3500, 4400)},
    "z": {"g": "Z", "kind": "fric", "band": (5600.0, 1200.0), "gain": 0.55, "voiced": 0.4,
          "formants": (300, 1700, 2700, 3500, 4400)},
    "sh": {"g": "SH", "kind": "fric", "band": (3000.0, 700.0), "gain": 1.3, "voiced": 0.0,
           "formants": (300, 1900, 2500, 3400, 4400)},
    "f": {"g": "F", "kind": "fric", "band": (4500.0, 2600.0), "gain": 0.3, "voiced": 0.0,
          "formants": (300, 1000, 2300, 3400, 4400)},
    "v": {"g": "V", "kind": "fric", "band": (4300.0, 2600.0), "gain": 0.22, "voiced": 0.45,
          "formants": (300, 1000, 2300, 3400, 4400)},
    "th": {"g": "TH", "kind": "fric", "band": (5200.0, 2600.0), "gain": 0.2, "voiced": 0.0,
           "formants": (300, 1400, 2600, 3400, 4400)},
    "h": {"g": "H", "kind": "h"},
    "p": {"g": "P", "kind": "stop", "band": (900.0, 1000.0), "voiced": False,
          "formants": (300, 900, 2200, 3400, 4400)},
    "b": {"g": "B", "kind": "stop", "band": (800.0, 900.0), "voiced": True,
          "formants": (300, 900, 2200, 3400, 4400)},
    "t": {"g": "T", "kind": "stop", "band": (4200.0, 1400.0), "voiced": False,
          "formants": (300, 1800, 2700, 3500, 4400)},
    "d": {"g": "D", "kind": "stop", "band": (3900.0, 1400.0), "voiced": True,
          "formants": (300, 1800, 2700, 3500, 4400)},
    "k": {"g": "K", "kind": "stop", "band": (2200.0, 600.0), "voiced": False,
          "formants": (300, 2000, 2300, 3400, 4400)},
    "g": {"g": "G", "kind": "stop", "band": (2100.0, 600.0), "voiced": True,
          "formants": (300, 2000, 2300, 3400, 4400)},
}
_ONSETS = ("p", "t", "k", "b", "d", "g", "s", "sh", "f", "th", "v", "z", "h", "m", "n", "l", "r", "w", "y")
_CODAS = ("p", "t", "k", "b", "d", "g", "s", "sh", "f", "v", "z", "m", "n", "ng", "l", "r")
_CLUSTERS = (("p", "l"), ("p", "r"), ("b", "l"), ("b", "r"), ("t", "r"), ("d", "r"), ("k", "l"), ("k", "r"),
             ("g", "r"), ("f", "l"), ("f", "r"), ("s", "t"), ("s", "p"), ("s", "k"), ("s", "l"), ("s", "n"))
_VOWEL_NAMES = tuple(_VOWELS)


@dataclass
class _Phone:
    name: str
    duration: float  # seconds (for stops: closure + burst + aspiration)
    stressed: bool = False
    accent: float = 0.0  # pitch accent height in units of the speaker's pitch range (0: none)
    closure: float = 0.0
    burst: float = 0.0
    aspiration: float = 0.0


@dataclass
class _Plan:
    sample_rate: int
    num_samples: int
    lead: float  # seconds of silence before speech
    phones: list[_Phone]  # "pau" entries are pauses
    words: list[str]
    register_st: float  # per-utterance pitch register offset
    final_st: float  # pitch movement over the last 250 ms, semitones (> 0: question rise, < 0: fall)


def _syllable(rng: np.random.Generator) -> list[str]:
    phones: list[str] = []
    u = rng.random()
    if u < 0.1:
        phones.extend(_CLUSTERS[int(rng.integers(len(_CLUSTERS)))])
    elif u < 0.85:
        phones.append(_ONSETS[int(rng.integers(len(_ONSETS)))])
    phones.append(_VOWEL_NAMES[int(rng.integers(len(_VOWEL_NAMES)))])
    if rng.random() < 0.4:
        phones.append(_CODAS[int(rng.integers(len(_CODAS)))])
    return phones


def _phone_durations(rng: np.random.Generator, name: str, stressed: bool, coda: bool) -> _Phone:
    if name in _VOWELS:
        d = rng.uniform(0.07, 0.13) * (1.35 if stressed else 1.0)
        return _Phone(name, d, stressed=stressed)
    kind = _CONSONANTS[name]["kind"]
    if kind == "approx":
        return _Phone(name, rng.uniform(0.04, 0.075))
    if kind == "nasal":
        return _Phone(name, rng.uniform(0.05, 0.09))
    if kind == "h":
        return _Phone(name, rng.uniform(0.04, 0.08))
    if kind == "fric":
        voiced = _CONSONANTS[name]["voiced"] > 0
        return _Phone(name, rng.uniform(0.06, 0.1) if voiced else rng.uniform(0.08, 0.14))
    voiced = _CONSONANTS[name]["voiced"]
    closure = rng.uniform(0.035, 0.065) if voiced else rng.uniform(0.04, 0.08)
    burst = rng.uniform(0.008, 0.015)
    if voiced:
        aspiration = rng.uniform(0.0, 0.01)
    else:
        aspiration = rng.uniform(0.01, 0.025) if coda else rng.uniform(0.03, 0.07)
    return _Phone(name, closure + burst + aspiration, closure=closure, burst=burst, aspiration=aspiration)


def _plan_utterance(rng: np.random.Generator, voice: Voice, sample_rate: int, min_seconds: float,
                    max_seconds: float) -> _Plan:
    """Draw the content of one utterance (phones, durations, words). Uses only ``rng``."""
    total = rng.uniform(min_seconds, max_seconds)
    num_samples = int(round(total * sample_rate))
    lead = min(rng.uniform(0.05, 0.25), 0.1 * total)
    trail = min(rng.uniform(0.1, 0.3), 0.1 * total)
    rate = voice.speaking_rate * rng.uniform(0.92, 1.08)
    budget = total - lead - trail
    phones: list[_Phone] = []
    words: list[str] = []
    used = 0.0
    while True:
        n_syl = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
        stress = int(rng.integers(n_syl))
        word_phones: list[_Phone] = []
        spelling = ""
        for s in range(n_syl):
            syl = _syllable(rng)
            vowel_pos = next(j for j, p in enumerate(syl) if p in _VOWELS)
            for j, p in enumerate(syl):
                ph = _phone_durations(rng, p, stressed=(s == stress), coda=j > vowel_pos)
                ph.duration /= rate
                ph.closure /= rate
                ph.burst /= rate
                ph.aspiration /= rate
                if p in _VOWELS and s == stress and rng.random() < 0.65:
                    ph.accent = rng.uniform(0.4, 1.0)
                word_phones.append(ph)
                spelling += _VOWELS[p][0] if p in _VOWELS else _CONSONANTS[p]["g"]
        pause = _Phone("pau", rng.uniform(0.12, 0.35) / rate ** 0.5) if rng.random() < 0.2 else None
        word_len = sum(p.duration for p in word_phones)
        if used + word_len > budget and words:
            break
        if used + word_len > budget:  # a very short utterance: keep the first word, truncated
            phones.extend(word_phones)
            words.append(spelling)
            break
        phones.extend(word_phones)
        words.append(spelling)
        used += word_len
        if pause is not None and used + pause.duration < budget:
            phones.append(pause)
            used += pause.duration
    # Phrase-final lengthening of the last vowel, where it fits.
    last_vowel = next((ph for ph in reversed(phones) if ph.name in _VOWELS), None)
    if last_vowel is not None and used + 0.3 * last_vowel.duration <= budget:
        last_vowel.duration *= 1.3
    final_rise = bool(rng.random() < 0.2)
    final_st = rng.uniform(2.0, 5.0) if final_rise else -rng.uniform(1.0, 3.0)
    register = float(rng.uniform(-1.0, 1.0))
    return _Plan(sample_rate, num_samples, lead, phones, words, register, final_st)
