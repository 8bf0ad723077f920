"""The corpus writer: the synthetic corpus on disk in the LibriSpeech layout (:func:`generate_corpus`).

This is audiocert's embedded default data set: it lets every pipeline (training, certification, the tests)
run with no download. ``generate_corpus(root)`` writes::

    <root>/LibriSpeech/SPEAKERS.TXT
    <root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
    <root>/LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt:04d>.flac   (mono, PCM_16)
    <root>/LibriSpeech/.audiocert-corpus.json                                          (written last)

so any LibriSpeech reader reads it unchanged. The voices come from :mod:`audiocert.corpus.voices`, the audio
from :mod:`audiocert.corpus.synthesis`.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from audiocert.corpus.synthesis import _transcript_only, synthesize_utterance
from audiocert.corpus.voices import _TAG_CORPUS, Voice, _check_int, voice_parameters
from audiocert.progress import progress as progress_bar  # `progress` is generate_corpus's flag
from audiocert.provenance import atomic_write_bytes

__all__ = ["CORPUS_VERSION", "MARKER_NAME", "PARTIAL_MARKER_NAME", "CorpusMismatchError", "generate_corpus"]

#: Bumped whenever the generated audio or layout changes; part of the marker file.
CORPUS_VERSION = "audiocert-synthetic-librispeech/1"
#: Written last into ``<root>/LibriSpeech``; its presence means the corpus is complete.
MARKER_NAME = ".audiocert-corpus.json"
#: Written first; lets an interrupted generation resume with the same parameters.
PARTIAL_MARKER_NAME = ".audiocert-corpus.partial.json"


class CorpusMismatchError(FileExistsError):
    """``root`` already holds a corpus (or other data) that was not generated with these parameters."""


def _flac_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _chapters(seed: int, voices: Sequence[Voice], utterances_per_speaker: int) -> list[list[tuple[int, int]]]:
    """Per speaker: (chapter_id, utterances in that chapter) for 1-3 chapters; chapter IDs distinct."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _TAG_CORPUS, 1]))
    counts = [min(int(rng.integers(1, 4)), utterances_per_speaker) for _ in voices]
    ids = rng.choice(np.arange(100, 200000), size=sum(counts), replace=False)
    out: list[list[tuple[int, int]]] = []
    pos = 0
    for c in counts:
        cuts = np.sort(rng.choice(np.arange(1, utterances_per_speaker), size=c - 1, replace=False))
        sizes = np.diff(np.concatenate([[0], cuts, [utterances_per_speaker]]))
        out.append([(int(ids[pos + j]), int(sizes[j])) for j in range(c)])
        pos += c
    return out


def _validate(num_speakers: Any, utterances_per_speaker: Any, seed: Any, subset: Any, sample_rate: Any,
              min_seconds: Any, max_seconds: Any) -> None:
    _check_int("num_speakers", num_speakers, 2)
    _check_int("utterances_per_speaker", utterances_per_speaker, 2)
    _check_int("seed", seed, 0)
    _check_int("sample_rate", sample_rate, 8000)
    if not isinstance(subset, str) or not subset or subset in (".", "..") or any(
        c in subset for c in "/\\|" + os.sep
    ) or subset.strip() != subset:
        raise ValueError(f"subset must be a plain directory name such as 'train-clean-360', got {subset!r}")
    for name, value in (("min_seconds", min_seconds), ("max_seconds", max_seconds)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if min_seconds < 0.25:
        raise ValueError(f"min_seconds must be >= 0.25 (room for at least one word), got {min_seconds}")
    if min_seconds > max_seconds:
        raise ValueError(f"min_seconds ({min_seconds}) must be <= max_seconds ({max_seconds})")
    if max_seconds > 120:
        raise ValueError(f"max_seconds must be <= 120, got {max_seconds}")


def _speakers_txt(voices: Sequence[Voice], subset: str, minutes: Sequence[float]) -> str:
    lines = [
        "; Synthetic readers made by audiocert.corpus, not real people (LibriSpeech SPEAKERS.TXT format)",
        "; Fields: reader ID | gender (F/M) | subset | duration of the reader's audio in minutes | name",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
    ]
    for v, m in zip(voices, minutes, strict=True):
        lines.append(f"{v.speaker_id:<5}| {v.sex} | {subset:<16} | {m:5.2f} | {v.name}")
    return "\n".join(lines) + "\n"


def generate_corpus(root: str | Path, num_speakers: int = 10, utterances_per_speaker: int = 24, seed: int = 0,
                    subset: str = "train-clean-360", sample_rate: int = 16000,
                    min_seconds: float = 2.0, max_seconds: float = 5.0, progress: bool = True) -> Path:
    """Write a synthetic multi-speaker speech corpus under ``root`` in the LibriSpeech layout.

    Args:
        root: directory that receives ``LibriSpeech/`` (created if needed).
        num_speakers: number of speakers (>= 2), half female, half male.
        utterances_per_speaker: utterances per speaker (>= 2), spread over 1-3 chapters.
        seed: non-negative integer; the same seed gives bit-identical audio.
        subset: LibriSpeech subset directory name.
        sample_rate: sampling rate in Hz (>= 8000; LibriSpeech is 16000).
        min_seconds, max_seconds: range of utterance durations (uniform).
        progress: report progress over utterances (a bar in a terminal, plain lines in a log).

    Returns:
        ``<root>/LibriSpeech``.

    Every file is written atomically; the marker ``<root>/LibriSpeech/.audiocert-corpus.json`` is written
    last. Calling again with the same parameters returns at once without touching anything; an interrupted
    run is resumed. If ``root`` holds a corpus generated with other parameters, or a LibriSpeech directory
    not written by this function, ``CorpusMismatchError`` is raised and nothing is written.
    """
    _validate(num_speakers, utterances_per_speaker, seed, subset, sample_rate, min_seconds, max_seconds)
    params = {
        "num_speakers": int(num_speakers),
        "utterances_per_speaker": int(utterances_per_speaker),
        "seed": int(seed),
        "subset": subset,
        "sample_rate": int(sample_rate),
        "min_seconds": float(min_seconds),
        "max_seconds": float(max_seconds),
    }
    record = {"version": CORPUS_VERSION, "params": params}
    base = Path(root) / "LibriSpeech"
    marker, partial = base / MARKER_NAME, base / PARTIAL_MARKER_NAME
    if _already_complete(base, params, record):
        return base
    base.mkdir(parents=True, exist_ok=True)
    payload = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    atomic_write_bytes(partial, payload)

    voices = voice_parameters(seed, num_speakers)
    chapters = _chapters(seed, voices, utterances_per_speaker)
    total = num_speakers * utterances_per_speaker
    minutes: list[float] = []
    with progress_bar(total=total, desc="synthetic LibriSpeech", unit="utt", disable=not progress) as bar:
        for voice, chaps in zip(voices, chapters, strict=True):
            seconds = _write_speaker(base / subset, voice, chaps, seed, sample_rate, min_seconds, max_seconds, bar)
            minutes.append(seconds / 60.0)
    atomic_write_bytes(base / "SPEAKERS.TXT", _speakers_txt(voices, subset, minutes).encode())
    atomic_write_bytes(marker, payload)
    partial.unlink(missing_ok=True)
    return base


def _existing(path: Path) -> dict[str, Any] | None:
    """The JSON record of a marker file, or None when it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _already_complete(base: Path, params: dict[str, Any], record: dict[str, Any]) -> bool:
    """True when ``base`` holds the complete corpus of ``params``; False when it may be written (empty, absent,
    or an unfinished run of the same parameters); CorpusMismatchError when it holds anything else."""
    marker, partial = base / MARKER_NAME, base / PARTIAL_MARKER_NAME
    if marker.exists():
        found = _existing(marker)
        if found is not None and found.get("version") == CORPUS_VERSION and found.get("params") == params:
            return True
        raise CorpusMismatchError(
            f"{base} already holds a synthetic corpus generated with different parameters or by another "
            f"version ({found!r}); requested {record!r}. Pick another root or delete {base}."
        )
    if partial.exists():
        found = _existing(partial)
        if found is None or found.get("version") != CORPUS_VERSION or found.get("params") != params:
            raise CorpusMismatchError(
                f"{base} holds an unfinished synthetic corpus generated with different parameters "
                f"({found!r}); requested {record!r}. Pick another root or delete {base}."
            )
    elif base.exists() and any(base.iterdir()):
        raise CorpusMismatchError(
            f"{base} exists and was not written by audiocert.corpus (no {MARKER_NAME}); refusing to write "
            f"into it. Pick another root or delete {base}."
        )
    return False


def _write_speaker(subset_dir: Path, voice: Voice, chapters: Sequence[tuple[int, int]], seed: int,
                   sample_rate: int, min_seconds: float, max_seconds: float, bar: Any) -> float:
    """Write one speaker's chapters (FLAC files and transcripts) under ``subset_dir``; returns its seconds of audio.

    Utterances are numbered within the speaker (the seed stream), across its chapters; a FLAC file already there
    (a resumed run: files are complete, being atomic, and deterministic) is kept and only its transcript redrawn.
    """
    seconds = 0.0
    utt_index = 0  # index of the utterance within the speaker (the seed stream)
    for chapter_id, count in chapters:
        cdir = subset_dir / str(voice.speaker_id) / str(chapter_id)
        cdir.mkdir(parents=True, exist_ok=True)
        lines = []
        for u in range(count):
            stem = f"{voice.speaker_id}-{chapter_id}-{u:04d}"
            flac = cdir / f"{stem}.flac"
            if flac.exists():  # resumed run: files are complete (atomic) and deterministic
                text = _transcript_only(voice, seed, utt_index, sample_rate, min_seconds, max_seconds)
                seconds += sf.info(str(flac)).frames / sample_rate
            else:
                audio, text = synthesize_utterance(voice, seed, utt_index, sample_rate, min_seconds, max_seconds)
                atomic_write_bytes(flac, _flac_bytes(audio, sample_rate))
                seconds += audio.size / sample_rate
            lines.append(f"{stem} {text}")
            utt_index += 1
            bar.update(1)
        trans = cdir / f"{voice.speaker_id}-{chapter_id}.trans.txt"
        atomic_write_bytes(trans, ("\n".join(lines) + "\n").encode())
    return seconds
