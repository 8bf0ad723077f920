"""Scanning a LibriSpeech-layout corpus into a :class:`Manifest`, with SPEAKERS.TXT and a JSON scan cache.

Layout (``root`` is the ``LibriSpeech`` directory itself)::

    <root>/SPEAKERS.TXT            (optional; ';' comments, rows ID | SEX | SUBSET | MINUTES | NAME)
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (not used: speaker ID needs no text)

The scan reads file headers only (no decoding). **Utterances shorter than a crop are skipped**, not
padded: padding would add artificial silence that the frontend would see (and that a certifier would
then certify). One warning gives the count and an example path. Files at another sample rate get one
summary warning (they are resampled when loaded) or, with ``resample=False``, an :class:`AudioFileError`.

**The scan cache is trusted by what it records, not by statting every file.** A full scan (a miss) records,
besides every utterance's header, the mtime of each in-scope speaker and chapter directory, a digest of each
directory's entries (chapter names; FLAC names with size and mtime), and the size and mtime of
:data:`SAMPLED_FILES` = 32 files spread evenly over the sorted list of N files (positions round(i (N - 1) / 31),
i = 0 ... 31: the first and the last included). A later scan uses the cache when, with the same parameters and
SPEAKERS.TXT (size, mtime):

1. the subset directory lists the same in-scope speakers (one directory listing);
2. every speaker and chapter directory has its recorded mtime (one ``stat`` each: a directory's mtime changes
   when an entry is added, removed or renamed in it, so this catches added/removed/renamed files and chapters,
   and files replaced through a rename, as ``mv`` and ``rsync`` replace them);
3. a directory whose recorded mtime is at most :data:`RACY_WINDOW_NS` (10 s) before the full scan began
   listing (or later) is listed again and its entries compared with the recorded digest: a change made in the
   same timestamp tick (coarse kernel clocks, 1-2 s granularity of some file systems) would leave its mtime as
   recorded (git's "racy" entries; a file server whose clock lags this host's by more than the window is not
   covered);
4. each sampled file has its recorded size and mtime (catches a corpus re-encoded or truncated in place).

For LibriSpeech train-clean-360 (921 speakers, ~104,000 files) that is a few thousand directory stats and 32 file
stats instead of a stat of every file. What a trusted cache can miss: a file that is not sampled, edited in place
(same name, its directory untouched). That does not reach a certificate unnoticed: ``make_plan`` fingerprints
every certified input by the SHA-256 of its samples, and every shard checks that digest before counting, so a
changed test file stops the shard with an error naming it; a training run would read the file as it is now.
Delete the cache file (``Manifest.cache_path``) to force a full scan.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf

from audiocert.data.audio import _REFETCH_HINT, AudioDataWarning, AudioFileError, PathLike, _resampled_length
from audiocert.progress import progress
from audiocert.provenance import atomic_write_text, stable_hash

__all__ = [
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "Manifest",
    "SpeakerInfo",
    "Utterance",
    "default_cache_dir",
    "read_speakers_txt",
    "scan_librispeech",
]

CACHE_VERSION = 2  # 2: the cache records directory mtimes, entry digests and sampled files (no full stat on a hit)
SAMPLED_FILES = 32  # files whose size and mtime a cache hit checks, evenly spread over the sorted file list
RACY_WINDOW_NS = 10 * 10**9  # directories changed this close to their listing are listed again on a hit
_FLAC_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")
# libsndfile reports SF_COUNT_MAX frames when a FLAC header does not record its length.
_UNKNOWN_LENGTH = 2**62
_MAX_LISTED = 10  # how many offending files / speakers an error message lists

log = logging.getLogger(__name__)


class DatasetNotFoundError(FileNotFoundError):
    """The corpus root, the subset directory, or a requested speaker is not on disk."""


class DatasetLayoutError(ValueError):
    """A file is where the LibriSpeech layout says it cannot be (e.g. speaker ID of name != dir)."""


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


def _missing_root_message(root: Path, subset: str) -> str:
    return (
        f"LibriSpeech root directory not found: {root}\n"
        f"dataset.root must be the `LibriSpeech` directory itself (the one that contains SPEAKERS.TXT and "
        f"{subset}/).\n"
        "  * Real corpus: download train-clean-360.tar.gz from https://www.openslr.org/12 (OpenSLR resource "
        "12), extract it (`tar xzf train-clean-360.tar.gz` creates LibriSpeech/train-clean-360/), and set "
        "dataset.root=/path/to/LibriSpeech.\n"
        "  * Synthetic corpus: generate it with `audiocert corpus` and point dataset.root at the LibriSpeech "
        "directory it writes."
    )


def _list_for_message(items: Sequence[Any], limit: int = 50) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    return shown + (f", ... ({len(items)} in total)" if len(items) > limit else "")


def _numeric_subdirs(directory: Path) -> dict[int, Path]:
    """Subdirectories whose names are all digits (speaker / chapter dirs); others are ignored."""
    out: dict[int, Path] = {}
    with os.scandir(directory) as it:
        for entry in it:
            if entry.name.isdigit() and entry.is_dir():
                out[int(entry.name)] = Path(entry.path)
    return out


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


def default_cache_dir(root: PathLike) -> Path | None:
    """``<root>/../.audiocert-cache`` if writable, else ``$XDG_CACHE_HOME/audiocert`` (``~/.cache``),
    else None (no caching)."""
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for candidate in (Path(root).resolve().parent / ".audiocert-cache", Path(xdg) / "audiocert"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


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


def _flac_entries(chap_dir: str) -> list[os.DirEntry]:
    """The FLAC entries of a chapter directory, sorted by name (hidden files, e.g. macOS ``._*``, ignored)."""
    with os.scandir(chap_dir) as it:
        return sorted(
            (e for e in it if e.name.endswith(".flac") and not e.name.startswith(".")), key=lambda e: e.name
        )


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
    mtime, digest of its FLAC names, sizes and mtimes) and the sampled files (see the module docstring).
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
    """'' when the corpus still looks as the cache recorded it (see the module docstring), else what changed.

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


def _header(entry: _FileEntry) -> tuple[_FileEntry, int, int, str | None]:
    """(entry, frames, samplerate, problem) from the file header only (no decoding)."""
    if entry.size == 0:
        return entry, 0, 0, "file is empty (0 bytes)"
    try:
        info = sf.info(entry.path)
    except Exception as exc:  # corrupt / not audio
        return entry, 0, 0, f"unreadable or corrupt audio file (soundfile: {exc})"
    if info.channels != 1:
        return (
            entry,
            0,
            0,
            (
                f"has {info.channels} channels; speaker corpora are mono and multi-channel audio is refused "
                "(convert it to mono, e.g. `sox in.flac -c 1 out.flac`)"
            ),
        )
    if info.frames <= 0:
        return entry, 0, 0, "contains no audio (0 frames)"
    if info.frames >= _UNKNOWN_LENGTH:
        return entry, 0, 0, "header does not record the number of samples (truncated or streamed FLAC)"
    return entry, int(info.frames), int(info.samplerate), None


def _scan_headers(files: list[_FileEntry], subset: str) -> list[tuple[_FileEntry, int, int, str | None]]:
    if len(files) < 256:
        return [_header(f) for f in files]
    # soundfile's C calls release the GIL, so threads help a lot on network filesystems.
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        return list(
            progress(
                pool.map(_header, files, chunksize=64),
                total=len(files),
                desc=f"scanning {subset}",
                unit="file",
                leave=False,
                disable=len(files) < 5000,
            )
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: building ~100k small lists and Utterances would otherwise trigger
    full collections over every object of a process that imported torch (0.2 s of a 0.3 s cache hit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_cache(path: Path, key: str, subset_dir: Path, in_scope: Sequence[int]) -> Manifest | None:
    """The cached manifest when its parameters match and the corpus still looks as it recorded, else None."""
    if not path.is_file():
        return None
    try:
        with _gc_paused():
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
            if d.get("version") != CACHE_VERSION or d.get("key") != key:
                return None  # stale: the scan parameters or SPEAKERS.TXT changed
            if why := _stale_reason(subset_dir, in_scope, d["trust"]):
                log.info("manifest cache %s is stale (%s): rescanning", path, why)
                return None
            manifest = Manifest._from_json(d)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        warnings.warn(
            f"ignoring corrupt manifest cache {path} ({exc}); rescanning", AudioDataWarning, stacklevel=3
        )
        return None
    manifest.cache_path = str(path)
    manifest.from_cache = True
    return manifest


def _write_cache(path: Path, manifest: Manifest, key: str, trust: Mapping[str, Any]) -> None:
    """Atomic write: temp file in the same directory, then os.replace. Failures only warn."""
    try:
        atomic_write_text(path, json.dumps(manifest._to_json(key, trust), separators=(",", ":")))
        manifest.cache_path = str(path)
    except OSError as exc:
        warnings.warn(
            f"could not write manifest cache {path} ({exc}); the next run will rescan",
            AudioDataWarning,
            stacklevel=3,
        )


def scan_librispeech(
    root: PathLike,
    subset: str,
    speakers: Iterable[int] | None = None,
    cache_dir: PathLike | None | Literal[False] = None,
    min_samples: int = 0,
    *,
    sample_rate: int = 16000,
    resample: bool = True,
) -> Manifest:
    """Scan ``<root>/<subset>`` into a :class:`Manifest` (header-only; cached).

    * ``root`` is the ``LibriSpeech`` directory. Missing root -> :class:`DatasetNotFoundError`
      (a ``FileNotFoundError``) saying how to obtain LibriSpeech or generate the synthetic corpus;
      missing subset / requested speaker -> the same error type, listing what is there.
    * ``speakers``: integer IDs to keep, or None for every speaker directory of the subset.
    * Uses ``soundfile.info`` (header only, no decoding), so a ~100k-file scan is fast. Header-level
      bad files (unreadable, 0 bytes/frames, multi-channel, unknown length) -> :class:`AudioFileError`
      listing every bad file found (the first one in ``.path``). A file whose name does not match
      its speaker/chapter directories -> :class:`DatasetLayoutError`.
    * ``min_samples``: utterances shorter than this *after resampling to* ``sample_rate`` are
      **skipped, not padded** (padding would add artificial silence that the frontend would see);
      one :class:`AudioDataWarning` gives the count and an example path (re-emitted on cache hits).
    * Files not at ``sample_rate``: one summary warning when ``resample`` (they are resampled at
      load time), else :class:`AudioFileError`.
    * SPEAKERS.TXT, when present, fills ``Manifest.speaker_info`` (sex, name, ...).
    * Cache: JSON in ``cache_dir`` (None -> :func:`default_cache_dir`; False -> no cache), one file per
      (abs root, subset, speakers, min_samples, sample_rate); its key also hashes SPEAKERS.TXT's size and
      mtime. A hit is trusted by what the cache recorded, without statting every file: the speaker list,
      each speaker and chapter directory's mtime (so an added, removed or renamed file, chapter or speaker
      triggers a rescan), directories changed just before they were listed listed again, and the size and
      mtime of :data:`SAMPLED_FILES` sampled files (see the module docstring for what it can miss). A hit
      opens no audio. Written atomically; a corrupt cache is ignored (with a warning) and rebuilt.
    """
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise ValueError(f"min_samples must be a non-negative integer, got {min_samples!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    root_p = Path(root).expanduser().resolve()
    if not root_p.is_dir():
        raise DatasetNotFoundError(_missing_root_message(root_p, subset))
    subset_dir = root_p / subset
    if not subset_dir.is_dir():
        present = sorted(p.name for p in root_p.iterdir() if p.is_dir() and not p.name.startswith("."))
        hint = ""
        if (root_p / "LibriSpeech").is_dir():
            hint = f" It looks like dataset.root should be {root_p / 'LibriSpeech'}."
        elif root_p.name == subset:
            hint = f" dataset.root points at the subset itself; it should be {root_p.parent}."
        raise DatasetNotFoundError(
            f"subset directory not found: {subset_dir}. Directories in {root_p}: "
            f"{_list_for_message(present) or '(none)'}.{hint} Set dataset.subset to one of them, or "
            "download/extract the subset (https://www.openslr.org/12) or generate it with `audiocert corpus`."
        )
    available = _numeric_subdirs(subset_dir)
    if not available:
        raise DatasetNotFoundError(
            f"no speaker directories (numeric names) in {subset_dir}; the layout must be "
            "<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac"
        )
    if speakers is None:
        requested: list[int] | None = None
        in_scope = sorted(available)
    else:
        given = list(speakers)
        requested = []
        for s in given:
            if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
                raise ValueError(f"speaker IDs must be integers, got {s!r} in {given!r}")
            requested.append(int(s))
        if not requested:
            raise ValueError("speakers is an empty list; use None for every speaker in the subset")
        if len(set(requested)) != len(requested):
            raise ValueError(f"speakers contains duplicates: {requested}")
        missing = sorted(set(requested) - set(available))
        if missing:
            raise DatasetNotFoundError(
                f"speaker(s) {missing} not found in {subset_dir}. Speakers present "
                f"({len(available)}): {_list_for_message(sorted(available))}."
            )
        in_scope = sorted(requested)

    speakers_txt = root_p / "SPEAKERS.TXT"
    spk_txt_stat = None
    if speakers_txt.is_file():
        st = speakers_txt.stat()
        spk_txt_stat = [st.st_size, st.st_mtime_ns]

    params = {
        "version": CACHE_VERSION,
        "root": str(root_p),
        "subset": subset,
        "speakers": requested,
        "min_samples": min_samples,
        "sample_rate": sample_rate,
    }
    key = stable_hash({**params, "speakers_txt": spk_txt_stat}, length=64)
    cache_path: Path | None = None
    if cache_dir is not False:
        cdir = default_cache_dir(root_p) if cache_dir is None else Path(cache_dir).expanduser()
        if cdir is not None:
            cache_path = cdir / f"manifest-{subset}-{stable_hash(params)}.json"

    manifest = _read_cache(cache_path, key, subset_dir, in_scope) if cache_path is not None else None
    if manifest is None:
        files, trust = _walk(subset_dir, {s: available[s] for s in in_scope})
        manifest = _scan(root_p, subset, in_scope, files, speakers_txt, min_samples, sample_rate)
        if cache_path is not None:
            _write_cache(cache_path, manifest, key, trust)
    _post_scan_checks(manifest, resample)
    return manifest


def _scan(
    root_p: Path,
    subset: str,
    in_scope: list[int],
    files: list[_FileEntry],
    speakers_txt: Path,
    min_samples: int,
    sample_rate: int,
) -> Manifest:
    results = _scan_headers(files, subset)
    bad = [(e.path, problem) for e, _, _, problem in results if problem is not None]
    if bad:
        listed = "\n".join(f"  {p}: {why}" for p, why in bad[:_MAX_LISTED])
        more = f"\n  ... and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
        raise AudioFileError(
            f"{len(bad)} unusable audio file(s) in {root_p / subset}:\n{listed}{more}\n"
            f"To fix: {_REFETCH_HINT}.",
            bad[0][0],
        )
    utts: list[Utterance] = []
    skipped: list[str] = []
    for e, frames, sr, _ in results:
        if _resampled_length(frames, sr, sample_rate) < min_samples:
            skipped.append(e.path)
            continue
        utts.append(Utterance(e.speaker, e.chapter, e.utt_id, e.path, frames, sr))
    utts.sort(key=lambda u: (u.speaker, u.chapter, u.utt_id))
    info: dict[int, SpeakerInfo] = {}
    if speakers_txt.is_file():
        all_info = read_speakers_txt(speakers_txt)
        info = {s: all_info[s] for s in in_scope if s in all_info}
    return Manifest(
        root=str(root_p),
        subset=subset,
        speakers=list(in_scope),
        utterances=utts,
        speaker_info=info,
        sample_rate=sample_rate,
        min_samples=min_samples,
        num_skipped_short=len(skipped),
        skipped_short_example=skipped[0] if skipped else None,
    )


def _post_scan_checks(manifest: Manifest, resample: bool) -> None:
    """Checks that depend on arguments not in the cache key (so they run on cache hits too)."""
    if manifest.num_skipped_short:
        sr = manifest.sample_rate
        warnings.warn(
            f"skipped {manifest.num_skipped_short} utterance(s) shorter than {manifest.min_samples} samples "
            f"({manifest.min_samples / sr:.2f} s at {sr} Hz), e.g. {manifest.skipped_short_example}. "
            "They are skipped rather than padded because padding would add artificial silence "
            "that the frontend would see.",
            AudioDataWarning,
            stacklevel=3,
        )
    off_rate = [u for u in manifest.utterances if u.sample_rate != manifest.sample_rate]
    if not off_rate:
        return
    rates = sorted({u.sample_rate for u in off_rate})
    if not resample:
        listed = "\n".join(f"  {u.path}: {u.sample_rate} Hz" for u in off_rate[:_MAX_LISTED])
        raise AudioFileError(
            f"{len(off_rate)} file(s) are not at {manifest.sample_rate} Hz and dataset.resample=false:\n"
            f"{listed}\nTo fix: resample the corpus to {manifest.sample_rate} Hz "
            "or set dataset.resample=true.",
            off_rate[0].path,
        )
    warnings.warn(
        f"{len(off_rate)} file(s) are at {rates} Hz instead of {manifest.sample_rate} Hz and will be "
        f"resampled with torchaudio when loaded, e.g. {off_rate[0].path}",
        AudioDataWarning,
        stacklevel=3,
    )

