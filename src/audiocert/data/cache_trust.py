"""What a trusted scan cache records and checks: directory mtimes, entry digests and sampled files.

The walk of a full scan lists the in-scope FLAC files and records the trust record; a later scan checks it
without statting every file (the rules, and what they can miss, are in :mod:`audiocert.data.scan`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiocert.data.layout import _FLAC_NAME, DatasetLayoutError, _flac_entries, _numeric_subdirs

SAMPLED_FILES = 32  # files whose size and mtime a cache hit checks, evenly spread over the sorted file list
RACY_WINDOW_NS = 10 * 10**9  # directories changed this close to their listing are listed again on a hit


@dataclass
class _FileEntry:
    speaker: int
    chapter: int
    utt_id: str
    path: str
    size: int
    mtime_ns: int = 0


def _short_digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _chapter_digest(entries: Sequence[tuple[str, int, int]]) -> str:
    """Digest of a chapter directory's FLAC entries as (name, size, mtime_ns)."""
    return _short_digest(f"{name}\t{size}\t{mtime}" for name, size, mtime in entries)


def _speaker_digest(chapter_names: Iterable[str]) -> str:
    return _short_digest(sorted(chapter_names))


def _sample_positions(count: int, k: int = SAMPLED_FILES) -> list[int]:
    """``min(k, count)`` positions evenly spread over ``range(count)``, first and last included."""
    if count <= k:
        return list(range(count))
    return sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})


def _walk(subset_dir: Path, speaker_dirs: Mapping[int, Path]) -> tuple[list[_FileEntry], dict[str, Any]]:
    """List FLAC files of the given speaker dirs (stat only, no audio I/O) and record what a cache hit checks.

    Returns the files (sorted by speaker, chapter, name) and the cache's trust record: the listing time, each
    speaker directory's (id, mtime, digest of its chapter names), each chapter directory's (speaker, chapter,
    mtime, digest of its FLAC names, sizes and mtimes) and the sampled files (see :mod:`audiocert.data.scan`).
    Hidden files (e.g. macOS ``._*`` files) and non-numeric directories are ignored.
    """
    started_ns = time.time_ns()
    files: list[_FileEntry] = []
    speakers: list[list[Any]] = []
    chapters_seen: list[list[Any]] = []
    for spk in sorted(speaker_dirs):
        spk_dir = speaker_dirs[spk]
        spk_mtime = spk_dir.stat().st_mtime_ns  # before listing: a change after it shows as a new mtime
        chapters = _numeric_subdirs(spk_dir)
        speakers.append([spk, spk_mtime, _speaker_digest(p.name for p in chapters.values())])
        for chap in sorted(chapters):
            chap_dir = chapters[chap]
            chap_mtime = chap_dir.stat().st_mtime_ns
            listed = []
            for e in _flac_entries(str(chap_dir)):
                m = _FLAC_NAME.match(e.name)
                if m is None or int(m.group(1)) != spk or int(m.group(2)) != chap:
                    raise DatasetLayoutError(
                        f"{e.path}: file name does not match the LibriSpeech layout "
                        f"<speaker>-<chapter>-<utt>.flac for speaker {spk}, chapter {chap} "
                        "(a misplaced file would get the wrong speaker label). To fix: move or rename it, "
                        "or delete it from the corpus."
                    )
                st = e.stat()
                listed.append((e.name, st.st_size, st.st_mtime_ns))
                files.append(_FileEntry(spk, chap, e.name[: -len(".flac")], e.path, st.st_size, st.st_mtime_ns))
            chapters_seen.append([spk, chap, chap_mtime, _chapter_digest(listed)])
    sample = [
        [files[i].speaker, files[i].chapter, files[i].utt_id, files[i].size, files[i].mtime_ns]
        for i in _sample_positions(len(files))
    ]
    trust = {"started_ns": started_ns, "speakers": speakers, "chapters": chapters_seen, "sample": sample}
    return files, trust


def _stale_reason(subset_dir: Path, in_scope: Sequence[int], trust: Mapping[str, Any]) -> str:
    """'' when the corpus still looks as the cache recorded it (see :mod:`audiocert.data.scan`), else what changed.

    One ``stat`` per speaker and chapter directory and per sampled file; directories that were racy when
    listed are listed again.
    """
    base = str(subset_dir)
    racy_after = int(trust["started_ns"]) - RACY_WINDOW_NS
    if [int(s) for s, _, _ in trust["speakers"]] != list(in_scope):
        return "the speaker directories changed"
    try:
        for spk, mtime, digest in trust["speakers"]:
            path = os.path.join(base, str(spk))
            if os.stat(path).st_mtime_ns != mtime:
                return f"{path} changed"
            if mtime >= racy_after:
                if _speaker_digest(p.name for p in _numeric_subdirs(Path(path)).values()) != digest:
                    return f"{path} changed (listed again)"
        for spk, chap, mtime, digest in trust["chapters"]:
            path = os.path.join(base, str(spk), str(chap))
            if os.stat(path).st_mtime_ns != mtime:
                return f"{path} changed"
            if mtime >= racy_after:
                entries = [(e.name, *_size_mtime(e.stat())) for e in _flac_entries(path)]
                if _chapter_digest(entries) != digest:
                    return f"{path} changed (listed again)"
        for spk, chap, utt_id, size, mtime in trust["sample"]:
            path = os.path.join(base, str(spk), str(chap), f"{utt_id}.flac")
            if _size_mtime(os.stat(path)) != (size, mtime):
                return f"{path} changed"
    except OSError as exc:  # a recorded directory or file is gone
        return f"{exc.filename} is gone"
    return ""


def _size_mtime(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns
