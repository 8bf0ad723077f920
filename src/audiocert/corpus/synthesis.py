"""Voice synthesis: the synthetic speakers' voice parameters and the rendering of one utterance.

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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft
from scipy import ndimage, signal

__all__ = ["Voice", "synthesize_utterance", "voice_parameters"]

# SeedSequence stream tags, so corpus-, speaker- and utterance-level streams never collide.
_TAG_CORPUS, _TAG_VOICE, _TAG_UTTERANCE = 0, 1, 2

_FEMALE_NAMES = (
    "Ada", "Beatrice", "Clara", "Dorothy", "Edith", "Florence", "Grace", "Harriet", "Irene", "Josephine",
    "Katherine", "Louisa", "Margaret", "Nora", "Olive", "Pauline", "Rosalind", "Sylvia", "Theodora", "Vera",
)
_MALE_NAMES = (
    "Albert", "Bernard", "Cecil", "Douglas", "Edmund", "Frederick", "Gilbert", "Harold", "Ivor", "Jasper",
    "Kenneth", "Leonard", "Montague", "Nigel", "Oswald", "Percival", "Rupert", "Stanley", "Tobias", "Walter",
)
_SURNAMES = (
    "Ashdown", "Blackwood", "Carrow", "Dunmore", "Ellery", "Fairbrook", "Greaves", "Holloway", "Ingram",
    "Jessop", "Kettering", "Lindqvist", "Marlowe", "Northcote", "Oakhurst", "Penrose", "Quarles",
    "Ravensdale", "Southgate", "Thornbury", "Underhill", "Vance", "Whitlock", "Yardley",
)


# --------------------------------------------------------------------------------------------- voices
@dataclass(frozen=True)
class Voice:
    """The parameters of one synthetic speaker (see ``voice_parameters``)."""

    index: int  #: position of the speaker in the corpus (0-based)
    speaker_id: int  #: LibriSpeech-style speaker ID (directory name)
    sex: str  #: "F" or "M"
    name: str  #: reader name written to SPEAKERS.TXT
    f0_hz: float  #: mean (median over voiced speech) fundamental frequency
    pitch_range_st: float  #: size of intonation movements (accents, declination), semitones
    jitter: float  #: relative std of period-to-period f0 perturbation
    shimmer: float  #: relative std of period-to-period amplitude perturbation
    vibrato_rate_hz: float  #: rate of the slow sinusoidal f0 modulation
    vibrato_depth: float  #: relative depth of that modulation
    formant_scale: float  #: all formants are multiplied by this: 1 / relative vocal-tract length
    formant_offsets: tuple[float, ...]  #: per-formant (F1..F5) idiosyncratic factors, ~1
    bandwidth_scale: float  #: multiplies all formant bandwidths
    open_quotient: float  #: glottal open quotient (higher: softer, breathier source)
    spectral_tilt_db: float  #: extra source slope, dB per octave (negative: darker voice)
    breathiness: float  #: aspiration noise level mixed into voiced speech, relative to the voice
    speaking_rate: float  #: phones per second relative to the reference durations
    pitch_twin_of: int | None  #: index of the earlier speaker whose pitch this one copies, if any

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _corpus_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _TAG_CORPUS]))


def _speaker_ids(rng: np.random.Generator, num_speakers: int) -> list[int]:
    # LibriSpeech speaker IDs are 2-4 digit integers; keep them distinct and sorted by speaker index.
    pool = 9990 if num_speakers <= 9000 else 10 * num_speakers + 10
    ids = rng.choice(pool, size=num_speakers, replace=False) + 10
    return sorted(int(i) for i in ids)


def voice_parameters(seed: int, num_speakers: int) -> list[Voice]:
    """The voices of the corpus generated with ``seed`` and ``num_speakers`` (deterministic).

    Sexes are balanced (shuffled). Within each sex, every second speaker is the "pitch twin" of the
    previous one: mean f0 within 8 Hz of it but a vocal-tract length differing by 8-14 %, so mean pitch alone
    cannot tell all speakers apart. Female f0 160-255 Hz, male 85-165 Hz (the ranges overlap).
    """
    seed = _check_int("seed", seed, 0)
    num_speakers = _check_int("num_speakers", num_speakers, 2)
    crng = _corpus_rng(seed)
    ids = _speaker_ids(crng, num_speakers)
    sexes = np.array(["F", "M"] * ((num_speakers + 1) // 2))[:num_speakers]
    crng.shuffle(sexes)
    first_names = {"F": list(_FEMALE_NAMES), "M": list(_MALE_NAMES)}

    voices: list[Voice] = []
    used_names: set[str] = set()
    last_free_of_sex: dict[str, int | None] = {"F": None, "M": None}
    for i in range(num_speakers):
        sex = str(sexes[i])
        rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_VOICE, i]))
        female = sex == "F"
        f0 = rng.uniform(160.0, 255.0) if female else rng.uniform(85.0, 165.0)
        scale = rng.uniform(0.99, 1.18) if female else rng.uniform(0.82, 1.01)
        twin = last_free_of_sex[sex]
        if twin is not None:
            # Same pitch (within 8 Hz), clearly different vocal tract.
            ref = voices[twin]
            f0 = float(np.clip(ref.f0_hz + rng.uniform(-8.0, 8.0), 85.0, 255.0))
            delta = rng.uniform(0.08, 0.14)
            up = ref.formant_scale + delta <= 1.2 and (ref.formant_scale - delta < 0.8 or rng.random() < 0.5)
            scale = ref.formant_scale + delta if up else ref.formant_scale - delta
            last_free_of_sex[sex] = None
        else:
            last_free_of_sex[sex] = i
        breathiness = rng.uniform(0.02, 0.3)
        open_quotient = float(np.clip(rng.uniform(0.45, 0.7) + 0.3 * breathiness, 0.4, 0.85))
        name_pool = first_names[sex]
        for _ in range(100):  # distinct names while there are enough
            first, last = int(rng.integers(len(name_pool))), int(rng.integers(len(_SURNAMES)))
            name = f"{name_pool[first]} {_SURNAMES[last]}"
            if name not in used_names:
                break
        used_names.add(name)
        voices.append(
            Voice(
                index=i,
                speaker_id=ids[i],
                sex=sex,
                name=name,
                f0_hz=float(f0),
                pitch_range_st=float(rng.uniform(1.5, 5.0)),
                jitter=float(rng.uniform(0.004, 0.015)),
                shimmer=float(rng.uniform(0.03, 0.12)),
                vibrato_rate_hz=float(rng.uniform(4.0, 6.5)),
                vibrato_depth=float(rng.uniform(0.0, 0.012)),
                formant_scale=float(scale),
                formant_offsets=tuple(float(x) for x in rng.uniform(0.95, 1.05, size=5)),
                bandwidth_scale=float(rng.uniform(0.8, 1.4)),
                open_quotient=open_quotient,
                spectral_tilt_db=float(rng.uniform(-4.0, 1.5) - 4.0 * breathiness),
                breathiness=float(breathiness),
                speaking_rate=float(rng.uniform(0.8, 1.25)),
                pitch_twin_of=twin,
            )
        )
    return voices


# --------------------------------------------------------------------------------------- phone inventory
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
_REF_BANDWIDTHS = np.array([60.0, 90.0, 140.0, 200.0, 260.0])


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


# ------------------------------------------------------------------------------------------- synthesis
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


def _fill_tracks(plan: _Plan, voice: Voice, rng: np.random.Generator, ctrl_rate: int) -> _Tracks:
    n_ctrl = int(math.ceil(plan.num_samples * ctrl_rate / plan.sample_rate)) + 1
    tr = _Tracks(n_ctrl)
    fs = voice.formant_scale
    t = plan.lead
    phrase_start = int(round(t * ctrl_rate))
    phones = plan.phones

    def idx(x: float) -> int:
        return min(int(round(x * ctrl_rate)), n_ctrl)

    def close_phrase(start: int, end: int) -> None:
        if end - start > 1:
            tr.phrase[start:end] = np.linspace(0.5, -0.5, end - start) * rng.uniform(0.4, 1.0)

    for k, ph in enumerate(phones):
        a, b = idx(t), idx(t + ph.duration)
        t += ph.duration
        if b <= a:
            continue
        n = b - a
        if ph.name == "pau":
            close_phrase(phrase_start, a)
            phrase_start = b
            continue
        tr.speech[a:b] = True
        if ph.name in _VOWELS:
            tr.formants[a:b] = _VOWELS[ph.name][1]
            tr.voicing[a:b] = (1.0 if ph.stressed else 0.75) * _window(n)
            if ph.accent > 0:
                centre = (a + b) // 2
                width = max(0.06 * ctrl_rate, n / 2)
                tt = np.arange(n_ctrl) - centre
                tr.accent += ph.accent * np.exp(-0.5 * (tt / width) ** 2)
            continue
        spec = _CONSONANTS[ph.name]
        kind = spec["kind"]
        if kind == "h":
            nxt = next((p for p in phones[k + 1:] if p.name in _VOWELS), None)
            tr.formants[a:b] = _VOWELS[nxt.name][1] if nxt is not None else _NEUTRAL
            tr.aspiration[a:b] = 0.45 * _window(n, 0.5)
            continue
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
        else:  # stop: closure (voice bar if voiced), burst, aspiration
            c = idx(t - ph.duration + ph.closure)
            bu = idx(t - ph.duration + ph.closure + ph.burst)
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
    close_phrase(phrase_start, idx(t))
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
    return tr


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


class _Stft:
    """Weighted overlap-add filtering with a time-varying frequency response."""

    def __init__(self, sample_rate: int):
        self.n_win = 1 << int(math.ceil(math.log2(0.032 * sample_rate)))
        self.hop = self.n_win // 4
        self.n_fft = 2 * self.n_win  # zero padding: the filters' tails do not wrap around
        self.window = signal.get_window("hann", self.n_win)
        self.freqs = np.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)

    def num_frames(self, n: int) -> int:
        return n // self.hop + 2

    def analyze(self, x: np.ndarray) -> np.ndarray:
        half = self.n_win // 2
        frames_n = self.num_frames(x.size)
        xp = np.pad(x, (half, frames_n * self.hop + self.n_win))
        frames = np.lib.stride_tricks.sliding_window_view(xp, self.n_win)[:: self.hop][:frames_n]
        return sfft.rfft((frames * self.window).astype(np.float32), n=self.n_fft, axis=1)

    def synthesize(self, spec: np.ndarray, n: int) -> np.ndarray:
        frames = sfft.irfft(spec, n=self.n_fft, axis=1).astype(np.float64)
        t = frames.shape[0]
        per = self.n_fft // self.hop
        blocks = np.zeros((t + per, self.hop))
        for j in range(per):
            blocks[j:j + t] += frames[:, j * self.hop:(j + 1) * self.hop]
        out = blocks.reshape(-1) / (self.window.sum() / self.hop)
        half = self.n_win // 2
        return out[half:half + n]

    def resonators(self, freqs: np.ndarray, bws: np.ndarray, sample_rate: int) -> np.ndarray:
        """Cascade of Klatt digital resonators (unity gain at DC); freqs, bws: (frames, K).

        The K second-order denominators are multiplied into one polynomial per frame, whose frequency
        response is a single zero-padded FFT.
        """
        freqs = np.minimum(freqs, 0.47 * sample_rate)
        r = np.exp(-np.pi * bws / sample_rate)
        c = -(r * r)
        b = 2.0 * r * np.cos(2.0 * np.pi * freqs / sample_rate)
        gain = np.prod(1.0 - b - c, axis=1)
        frames, k_count = freqs.shape
        poly = np.zeros((frames, 2 * k_count + 1))
        poly[:, 0] = 1.0
        for k in range(k_count):  # poly *= (1 - b z^-1 - c z^-2)
            nxt = poly.copy()
            nxt[:, 1:] -= b[:, k:k + 1] * poly[:, :-1]
            nxt[:, 2:] -= c[:, k:k + 1] * poly[:, :-2]
            poly = nxt
        return (gain[:, None] / np.fft.rfft(poly, n=self.n_fft, axis=1)).astype(np.complex64)


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


