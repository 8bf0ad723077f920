"""The scan's result: :class:`Manifest` of :class:`Utterance` files (and its JSON form), SPEAKERS.TXT rows."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audiocert.data.audio import PathLike, _resampled_length

CACHE_VERSION = 2  # 2: the cache records directory mtimes, entry digests and sampled files (no full stat on a hit)


@dataclass(frozen=True)
class Utterance:
    """One utterance file. ``num_frames``/``sample_rate`` are the file's own (before resampling)."""

    speaker: int
    chapter: int
    utt_id: str  # "<speaker>-<chapter>-<utt>", the file name without ".flac"
    path: str  # absolute path
    num_frames: int
    sample_rate: int

    def num_samples(self, sample_rate: int) -> int:
        """Number of samples once loaded at ``sample_rate`` (accounts for resampling)."""
        return _resampled_length(self.num_frames, self.sample_rate, sample_rate)


@dataclass(frozen=True)
class SpeakerInfo:
    """A row of SPEAKERS.TXT (``minutes`` is None when the column does not parse)."""

    speaker: int
    sex: str
    subset: str
    minutes: float | None
    name: str


@dataclass
class Manifest:
    """Result of :func:`scan_librispeech`.

    ``speakers`` is the sorted list of integer speaker IDs in scope (every speaker directory of the
    subset, or the requested ones); labels elsewhere are indices into it. A speaker whose utterances
    were all skipped stays in ``speakers`` (so labels do not shift silently) and
    :func:`split_utterances` reports it. ``utterances`` is sorted by (speaker, chapter, utt_id).
    """

    root: str
    subset: str
    speakers: list[int]
    utterances: list[Utterance]
    speaker_info: dict[int, SpeakerInfo] = field(default_factory=dict)
    sample_rate: int = 16000
    min_samples: int = 0
    num_skipped_short: int = 0
    skipped_short_example: str | None = None
    cache_path: str | None = field(default=None, compare=False)
    from_cache: bool = field(default=False, compare=False)

    @property
    def subset_dir(self) -> Path:
        return Path(self.root) / self.subset

    def utterances_by_speaker(self) -> dict[int, list[Utterance]]:
        """Speaker ID -> its utterances (every speaker in ``speakers`` present, possibly empty)."""
        out: dict[int, list[Utterance]] = {s: [] for s in self.speakers}
        for u in self.utterances:
            out.setdefault(u.speaker, []).append(u)
        return out

    # JSON (paths are derived from the layout, so they are not stored) ----------------------------
    def _to_json(self, key: str, trust: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "key": key,
            "trust": trust,
            "root": self.root,
            "subset": self.subset,
            "speakers": self.speakers,
            "sample_rate": self.sample_rate,
            "min_samples": self.min_samples,
            "num_skipped_short": self.num_skipped_short,
            "skipped_short_example": self.skipped_short_example,
            "speaker_info": [
                [i.speaker, i.sex, i.subset, i.minutes, i.name] for i in self.speaker_info.values()
            ],
            "utterances": [
                [u.speaker, u.chapter, u.utt_id, u.num_frames, u.sample_rate] for u in self.utterances
            ],
        }

    @classmethod
    def _from_json(cls, d: Mapping[str, Any]) -> Manifest:
        root, subset = str(d["root"]), str(d["subset"])
        # Paths by string joins, not pathlib (36k Path objects took 0.6 s); str(Path) normalises the prefix the
        # way a fresh scan's paths are.
        prefix = str(Path(root) / subset) + os.sep
        utts = []
        for spk, chap, utt_id, frames, sr in d["utterances"]:
            spk, chap, frames, sr, utt_id = int(spk), int(chap), int(frames), int(sr), str(utt_id)
            path = f"{prefix}{spk}{os.sep}{chap}{os.sep}{utt_id}.flac"
            utts.append(Utterance(spk, chap, utt_id, path, frames, sr))
        info = {}
        for spk, sex, sub, minutes, name in d["speaker_info"]:
            info[int(spk)] = SpeakerInfo(
                int(spk), str(sex), str(sub), None if minutes is None else float(minutes), str(name)
            )
        return cls(
            root=root,
            subset=subset,
            speakers=[int(s) for s in d["speakers"]],
            utterances=utts,
            speaker_info=info,
            sample_rate=int(d["sample_rate"]),
            min_samples=int(d["min_samples"]),
            num_skipped_short=int(d["num_skipped_short"]),
            skipped_short_example=d["skipped_short_example"],
        )


def read_speakers_txt(path: PathLike) -> dict[int, SpeakerInfo]:
    """Parse SPEAKERS.TXT (``;`` comment lines; rows ``ID | SEX | SUBSET | MINUTES | NAME``).

    Malformed rows are ignored (the file is metadata only; labels never depend on it).
    """
    info: dict[int, SpeakerInfo] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            parts = [p.strip() for p in line.split("|", 4)]
            if len(parts) < 5 or not parts[0].isdigit():
                continue
            try:
                minutes: float | None = float(parts[3])
            except ValueError:
                minutes = None
            spk = int(parts[0])
            info[spk] = SpeakerInfo(spk, parts[1], parts[2], minutes, parts[4])
    return info
