"""The synthetic speakers' voices: :class:`Voice` parameters drawn per speaker, with "pitch twins".

Sexes are balanced; within each sex every second speaker gets a mean pitch within a few Hz of an earlier
same-sex speaker but a clearly different vocal-tract length, so pitch alone never separates them all. Everything
is drawn from ``numpy.random.default_rng`` seeded through ``SeedSequence`` with the corpus seed and the speaker
index (the stream tags below keep corpus-, speaker- and utterance-level streams apart).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

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
