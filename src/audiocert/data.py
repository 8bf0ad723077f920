"""Dataset layer: LibriSpeech-layout corpora -> fixed-length speaker-labelled crops.

Used both for the real LibriSpeech ``train-clean-360`` (921 speakers, ~100k FLAC files) and for the
synthetic corpus that ``audiocert corpus`` writes in the same layout::

    <root>/SPEAKERS.TXT            (optional; ';' comments, rows ID | SEX | SUBSET | MINUTES | NAME)
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    <root>/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (not used: speaker ID needs no text)

``root`` is the ``LibriSpeech`` directory itself.

Pipeline (see :func:`build_datasets`)::

    scan_librispeech  -> Manifest         (header-only scan, cached as JSON)
    split_utterances  -> train / test     (per speaker, seeded, utterance-disjoint)
    CropDataset       -> (waveform[crop_samples] float32, label int)

Decisions (each is repeated where it is implemented):

* **Multi-channel files are refused**, never down-mixed: speaker corpora are mono, so a stereo file
  means the wrong file (or a broken conversion) and averaging channels would hide that.
* **Wrong sample rate**: resampled with ``torchaudio.functional.resample`` when ``resample=True``
  (a warning per file, plus one summary warning at scan time), refused with :class:`AudioFileError`
  when ``resample=False``.
* **Utterances shorter than a crop are skipped**, not padded: padding would add artificial silence
  that the frontend would see (and that a certifier would then certify). One warning gives the count
  and an example path.
* **Bad files are errors, not silently dropped**: unreadable/corrupt, empty, multi-channel, NaN/inf
  samples -> :class:`AudioFileError` naming the file and what to do.
* Labels are the index of the speaker in the manifest's sorted list of integer speaker IDs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from audiocert.provenance import atomic_write_text, stable_hash

__all__ = [
    "AudioDataWarning",
    "AudioFileError",
    "CropDataset",
    "DataBundle",
    "DatasetLayoutError",
    "DatasetNotFoundError",
    "Manifest",
    "SpeakerInfo",
    "Utterance",
    "build_datasets",
    "default_cache_dir",
    "load_audio",
    "read_speakers_txt",
    "scan_librispeech",
    "split_utterances",
]

PathLike = str | os.PathLike

CACHE_VERSION = 1
_FLAC_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")
# libsndfile reports SF_COUNT_MAX frames when a FLAC header does not record its length.
_UNKNOWN_LENGTH = 2**62
_MAX_LISTED = 10  # how many offending files / speakers an error message lists
_REFETCH_HINT = (
    "re-extract it from the LibriSpeech archive (or regenerate the synthetic corpus with "
    "`audiocert corpus`), or delete it from the corpus"
)


# --------------------------------------------------------------------------------------------------
# Errors and warnings
# --------------------------------------------------------------------------------------------------


class AudioFileError(ValueError):
    """A specific audio file cannot be used. The message names the file and says what to do.

    ``path`` holds the offending file (the first one, when a scan reports several). The constructor
    accepts a single message argument so the exception survives re-raising from DataLoader workers.
    """

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class DatasetNotFoundError(FileNotFoundError):
    """The corpus root, the subset directory, or a requested speaker is not on disk."""


class DatasetLayoutError(ValueError):
    """A file is where the LibriSpeech layout says it cannot be (e.g. speaker ID of name != dir)."""


class AudioDataWarning(UserWarning):
    """Recoverable data issue (resampling, skipped short utterances, ignored cache, clipping)."""


def _file_error(path: PathLike, problem: str, fix: str) -> AudioFileError:
    return AudioFileError(f"{path}: {problem}. To fix: {fix}.", path)


# --------------------------------------------------------------------------------------------------
# Audio loading
# --------------------------------------------------------------------------------------------------

_resample_warned: set[str] = set()
_clip_warned: set[str] = set()


def _resampled_length(num_frames: int, orig_sr: int, target_sr: int) -> int:
    """Length after ``torchaudio.functional.resample`` (which returns ceil(n * target / orig))."""
    if orig_sr == target_sr:
        return num_frames
    return -(-num_frames * target_sr // orig_sr)


def load_audio(path: PathLike, sample_rate: int = 16000, resample: bool = True) -> torch.Tensor:
    """Read a mono audio file into a float32 1-D tensor with values in [-1, 1].

    Reads with ``soundfile`` (any format it can read: FLAC, WAV, ...; ``torchaudio.load`` is not used
    because it needs FFmpeg/torchcodec). Every problem raises :class:`AudioFileError` naming the file:

    * missing file, 0-byte file, unreadable/corrupt data (the soundfile error is chained);
    * 0 frames;
    * more than one channel: **refused**, not down-mixed (speaker corpora are mono; a stereo file is
      the wrong file or a broken conversion);
    * NaN or inf samples;
    * sample rate != ``sample_rate``: resampled with ``torchaudio.functional.resample`` when
      ``resample`` is true (an :class:`AudioDataWarning` naming the file, once per file per
      process), otherwise refused.

    Samples of floating-point files outside [-1, 1] are clipped (with a warning once per file);
    resampling ringing is clipped silently.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    p = Path(path)
    if not p.exists():
        raise _file_error(
            p,
            "audio file does not exist",
            "check dataset.root; if the corpus was moved or edited, run again so the manifest is rebuilt, "
            "otherwise " + _REFETCH_HINT,
        )
    if not p.is_file():
        raise _file_error(p, "is not a regular file", "remove it from the corpus")
    if p.stat().st_size == 0:
        raise _file_error(p, "file is empty (0 bytes)", _REFETCH_HINT)
    try:
        data, file_sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError/RuntimeError/TypeError on bad data
        raise _file_error(p, f"unreadable or corrupt audio file (soundfile: {exc})", _REFETCH_HINT) from exc
    num_frames, channels = data.shape
    if channels != 1:
        raise _file_error(
            p,
            f"has {channels} channels; speaker corpora are mono and multi-channel audio is refused "
            "rather than down-mixed",
            "convert it to mono (e.g. `sox in.flac -c 1 out.flac`, choosing the right channel) "
            "or remove it from the corpus",
        )
    if num_frames == 0:
        raise _file_error(p, "contains no audio (0 frames)", _REFETCH_HINT)
    wav = np.ascontiguousarray(data[:, 0])
    finite = np.isfinite(wav)
    if not finite.all():
        bad = int(wav.size - np.count_nonzero(finite))
        raise _file_error(
            p,
            f"contains {bad} NaN or inf sample(s) out of {wav.size}",
            "regenerate or re-encode the file from a clean source, or remove it from the corpus",
        )
    tensor = torch.from_numpy(wav)
    peak = float(np.abs(wav).max())
    if peak > 1.0:
        key = str(p.resolve())
        if key not in _clip_warned:
            _clip_warned.add(key)
            warnings.warn(
                f"{p}: samples exceed [-1, 1] (peak {peak:.3f}); clipping them",
                AudioDataWarning,
                stacklevel=2,
            )
        tensor = tensor.clamp_(-1.0, 1.0)
    if file_sr != sample_rate:
        if not resample:
            raise _file_error(
                p,
                f"sample rate is {file_sr} Hz but {sample_rate} Hz is required (dataset.resample=false)",
                f"resample the corpus to {sample_rate} Hz (e.g. `sox in.flac -r {sample_rate} out.flac`) "
                "or set dataset.resample=true",
            )
        key = str(p.resolve())
        if key not in _resample_warned:
            _resample_warned.add(key)
            warnings.warn(
                f"{p}: sample rate {file_sr} Hz != {sample_rate} Hz; resampling with torchaudio",
                AudioDataWarning,
                stacklevel=2,
            )
        import torchaudio.functional as taf  # lazy: only needed for off-rate files

        tensor = taf.resample(tensor, orig_freq=int(file_sr), new_freq=sample_rate).clamp_(-1.0, 1.0)
    return tensor.to(torch.float32).contiguous()


# --------------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------------


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
    def _to_json(self, key: str) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "key": key,
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
        subset_dir = Path(root) / subset
        utts = []
        for spk, chap, utt_id, frames, sr in d["utterances"]:
            spk, chap, frames, sr, utt_id = int(spk), int(chap), int(frames), int(sr), str(utt_id)
            path = subset_dir / str(spk) / str(chap) / f"{utt_id}.flac"
            utts.append(Utterance(spk, chap, utt_id, str(path), frames, sr))
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


def _walk(subset_dir: Path, speaker_dirs: Mapping[int, Path]) -> tuple[list[_FileEntry], dict[str, int]]:
    """List FLAC files of the given speaker dirs (stat only, no audio I/O) and fingerprint them.

    The fingerprint (file count, total size, newest mtime of files *and* directories; a directory's
    mtime changes when an entry is added, removed or renamed) invalidates the manifest cache.
    Hidden files (e.g. macOS ``._*`` files) and non-numeric directories are ignored.
    """
    files: list[_FileEntry] = []
    newest = 0
    total_size = 0
    for spk in sorted(speaker_dirs):
        spk_dir = speaker_dirs[spk]
        newest = max(newest, spk_dir.stat().st_mtime_ns)
        chapters = _numeric_subdirs(spk_dir)
        for chap in sorted(chapters):
            chap_dir = chapters[chap]
            newest = max(newest, chap_dir.stat().st_mtime_ns)
            with os.scandir(chap_dir) as it:
                entries = sorted(
                    (e for e in it if e.name.endswith(".flac") and not e.name.startswith(".")),
                    key=lambda e: e.name,
                )
            for e in entries:
                m = _FLAC_NAME.match(e.name)
                if m is None or int(m.group(1)) != spk or int(m.group(2)) != chap:
                    raise DatasetLayoutError(
                        f"{e.path}: file name does not match the LibriSpeech layout "
                        f"<speaker>-<chapter>-<utt>.flac for speaker {spk}, chapter {chap} "
                        "(a misplaced file would get the wrong speaker label). To fix: move or rename it, "
                        "or delete it from the corpus."
                    )
                st = e.stat()
                newest = max(newest, st.st_mtime_ns)
                total_size += st.st_size
                files.append(_FileEntry(spk, chap, e.name[: -len(".flac")], e.path, st.st_size))
    fingerprint = {"count": len(files), "size": total_size, "newest_mtime_ns": newest}
    return files, fingerprint


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
    from tqdm import tqdm

    # soundfile's C calls release the GIL, so threads help a lot on network filesystems.
    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1))) as pool:
        return list(
            tqdm(
                pool.map(_header, files, chunksize=64),
                total=len(files),
                desc=f"scanning {subset}",
                unit="file",
                leave=False,
                disable=len(files) < 5000,
            )
        )


def _read_cache(path: Path, key: str) -> Manifest | None:
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("version") != CACHE_VERSION or d.get("key") != key:
            return None  # stale: the corpus or the scan parameters changed
        manifest = Manifest._from_json(d)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        warnings.warn(
            f"ignoring corrupt manifest cache {path} ({exc}); rescanning", AudioDataWarning, stacklevel=3
        )
        return None
    manifest.cache_path = str(path)
    manifest.from_cache = True
    return manifest


def _write_cache(path: Path, manifest: Manifest, key: str) -> None:
    """Atomic write: temp file in the same directory, then os.replace. Failures only warn."""
    try:
        atomic_write_text(path, json.dumps(manifest._to_json(key), separators=(",", ":")))
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
      (abs root, subset, speakers, min_samples, sample_rate); it stores a key that also hashes the
      fingerprint of the scanned directories (file count, total size, newest mtime) and SPEAKERS.TXT,
      so adding/removing/editing a file triggers a rescan. A cache hit still lists directories and
      stats files (cheap) but opens no audio. Written atomically; a corrupt cache is ignored
      (with a warning) and rebuilt.
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

    files, fingerprint = _walk(subset_dir, {s: available[s] for s in in_scope})
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
    key = stable_hash({**params, "fingerprint": fingerprint, "speakers_txt": spk_txt_stat}, length=64)
    cache_path: Path | None = None
    if cache_dir is not False:
        cdir = default_cache_dir(root_p) if cache_dir is None else Path(cache_dir).expanduser()
        if cdir is not None:
            cache_path = cdir / f"manifest-{subset}-{stable_hash(params)}.json"

    manifest = _read_cache(cache_path, key) if cache_path is not None else None
    if manifest is None:
        manifest = _scan(root_p, subset, in_scope, files, speakers_txt, min_samples, sample_rate)
        if cache_path is not None:
            _write_cache(cache_path, manifest, key)
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


# --------------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------------


def _derive_seed(*parts: Any) -> int:
    """Deterministic 63-bit seed from any parts (independent of PYTHONHASHSEED)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _utt_sort_key(u: Utterance) -> tuple[int, int, str]:
    return (u.speaker, u.chapter, u.utt_id)


def split_utterances(
    manifest: Manifest, test_fraction: float, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Per-speaker, utterance-disjoint train/test split.

    For each speaker, its utterances are sorted by (chapter, utt_id) (so the result does not depend on
    filesystem order) and shuffled with a RNG seeded from (``seed``, speaker ID), so adding or removing
    a speaker does not change the other speakers' splits. ``round(n * test_fraction)`` utterances go to
    test, clamped so that every speaker has >= 1 test and >= 1 train utterance. A speaker with fewer
    than 2 usable utterances raises ``ValueError`` naming it. Returns ``(train, test)``, each sorted by
    (speaker, chapter, utt_id). Chapters are not kept disjoint (only utterances are).
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"dataset.test_fraction must be in (0, 1), got {test_fraction!r}")
    train: list[Utterance] = []
    test: list[Utterance] = []
    for spk, utts in sorted(manifest.utterances_by_speaker().items()):
        utts = sorted(utts, key=_utt_sort_key)
        n = len(utts)
        if n < 2:
            raise ValueError(
                f"speaker {spk} has {n} usable utterance(s) in {manifest.subset_dir / str(spk)} "
                f"(utterances shorter than {manifest.min_samples} samples are skipped); the "
                "utterance-disjoint train/test split needs at least 2. Remove the speaker from "
                "dataset.speakers, lower dataset.crop_samples, or add utterances."
            )
        n_test = min(max(1, math.floor(n * float(test_fraction) + 0.5)), n - 1)
        order = list(range(n))
        random.Random(_derive_seed("split", seed, spk)).shuffle(order)
        test_idx = set(order[:n_test])
        for i, u in enumerate(utts):
            (test if i in test_idx else train).append(u)
    return train, test


# --------------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------------


class CropDataset(Dataset):
    """Fixed-length crops ``(waveform float32 [crop_samples], label int)`` from a list of utterances.

    Order (both modes): **speaker-major**. ``len == num_classes * crops_per_speaker`` and index ``i``
    belongs to speaker ``speakers[i // crops_per_speaker]`` with label ``i // crops_per_speaker``
    (label = index of the speaker in the sorted speaker list).

    * ``mode="train"``: for each speaker, ``crops_per_speaker`` crops per epoch, each from a random
      utterance of that speaker (uniform over its utterances) at a random offset. The plan for the
      whole epoch is drawn from a ``torch.Generator`` seeded from (``seed``, epoch) by
      :meth:`set_epoch` (epoch 0 at construction), so items are reproducible for a given epoch and do
      not depend on access order or worker count. Call ``set_epoch(e)`` before iterating epoch ``e``;
      this works with DataLoader ``num_workers=0`` and with non-persistent workers (workers get a fresh
      copy per epoch), not with ``persistent_workers=True``. Shuffle with the DataLoader.
    * ``mode="test"``: fixed at construction from ``seed``: speaker ``s``'s ``k``-th crop uses its
      utterances in a seeded permutation, cycled (so all test utterances are covered as evenly as
      possible), at a seeded random offset. :meth:`set_epoch` does not change test crops.

    Every utterance must be at least ``crop_samples`` long at ``sample_rate`` (scan with
    ``min_samples=crop_samples``); shorter ones raise :class:`AudioFileError` at construction
    (crops are never padded). Decoded audio is cached in memory in an LRU dict keyed by path
    (``max_cached_files``; None = unbounded, 0 = no caching; ~1 MB per 15 s utterance, per worker).
    Returned waveforms are copies, so in-place augmentation cannot corrupt the cache.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        speakers: Sequence[int],
        crop_samples: int,
        crops_per_speaker: int,
        mode: Literal["train", "test"] = "train",
        *,
        seed: int = 0,
        sample_rate: int = 16000,
        resample: bool = True,
        max_cached_files: int | None = 2048,
    ) -> None:
        if mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
        for name, value in (
            ("crop_samples", crop_samples),
            ("crops_per_speaker", crops_per_speaker),
            ("sample_rate", sample_rate),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if max_cached_files is not None and (not isinstance(max_cached_files, int) or max_cached_files < 0):
            raise ValueError(
                f"max_cached_files must be None or a non-negative integer, got {max_cached_files!r}"
            )
        self.mode = mode
        self.seed = int(seed)
        self.crop_samples = crop_samples
        self.crops_per_speaker = crops_per_speaker
        self.sample_rate = sample_rate
        self.resample = resample
        self.max_cached_files = max_cached_files
        self.speakers: list[int] = sorted(int(s) for s in speakers)
        if len(set(self.speakers)) != len(self.speakers) or not self.speakers:
            raise ValueError(f"speakers must be a non-empty list of distinct IDs, got {list(speakers)!r}")
        label_of = {s: i for i, s in enumerate(self.speakers)}
        unknown = sorted({u.speaker for u in utterances} - set(label_of))
        if unknown:
            raise ValueError(f"utterances of speaker(s) {unknown} not in the speaker list {self.speakers}")
        self.utterances: list[Utterance] = sorted(utterances, key=_utt_sort_key)
        self._by_label: list[list[int]] = [[] for _ in self.speakers]
        lengths = []
        for idx, u in enumerate(self.utterances):
            self._by_label[label_of[u.speaker]].append(idx)
            if u.sample_rate != sample_rate and not resample:
                raise _file_error(
                    u.path,
                    f"sample rate is {u.sample_rate} Hz but {sample_rate} Hz is required "
                    "(dataset.resample=false)",
                    "resample the corpus or set dataset.resample=true",
                )
            n = u.num_samples(sample_rate)
            if n < crop_samples:
                raise _file_error(
                    u.path,
                    f"{n} samples is shorter than a crop ({crop_samples}); crops are never padded",
                    "scan with min_samples=crop_samples so short utterances are skipped",
                )
            lengths.append(n)
        empty = [self.speakers[i] for i, idxs in enumerate(self._by_label) if not idxs]
        if empty:
            raise ValueError(f"{mode} set has no utterances for speaker(s) {empty}")
        self._lengths = torch.tensor(lengths, dtype=torch.int64)
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.epoch = 0
        self._plan_utt, self._plan_offset = self._make_plan(0)

    @property
    def num_classes(self) -> int:
        return len(self.speakers)

    def __len__(self) -> int:
        return self.num_classes * self.crops_per_speaker

    def set_epoch(self, epoch: int) -> None:
        """Redraw the train crops for ``epoch`` (deterministic given seed and epoch); no-op for test."""
        epoch = int(epoch)
        if self.mode == "train" and epoch != self.epoch:
            self._plan_utt, self._plan_offset = self._make_plan(epoch)
        self.epoch = epoch

    def _make_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        cps = self.crops_per_speaker
        stream = ("train-crops", self.seed, epoch) if self.mode == "train" else ("test-crops", self.seed)
        g = torch.Generator().manual_seed(_derive_seed(*stream))
        plan_utt = torch.empty(len(self), dtype=torch.int64)
        plan_off = torch.empty(len(self), dtype=torch.int64)
        for label, idxs in enumerate(self._by_label):
            idxs_t = torch.tensor(idxs, dtype=torch.int64)
            if self.mode == "train":
                choice = torch.randint(len(idxs), (cps,), generator=g)
            else:
                choice = torch.randperm(len(idxs), generator=g)[torch.arange(cps) % len(idxs)]
            utt = idxs_t[choice]
            max_off = self._lengths[utt] - self.crop_samples
            u = torch.rand(cps, generator=g, dtype=torch.float64)
            off = torch.minimum((u * (max_off + 1).to(torch.float64)).to(torch.int64), max_off)
            plan_utt[label * cps : (label + 1) * cps] = utt
            plan_off[label * cps : (label + 1) * cps] = off
        return plan_utt, plan_off

    def _index(self, i: int) -> int:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {self.mode} CropDataset of length {n}")
        return i

    def _load(self, path: str) -> torch.Tensor:
        wav = self._cache.get(path)
        if wav is not None:
            self._cache.move_to_end(path)
            return wav
        wav = load_audio(path, self.sample_rate, self.resample)
        if self.max_cached_files is None or self.max_cached_files > 0:
            self._cache[path] = wav
            if self.max_cached_files is not None:
                while len(self._cache) > self.max_cached_files:
                    self._cache.popitem(last=False)
        return wav

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        i = self._index(i)
        utt = self.utterances[int(self._plan_utt[i])]
        wav = self._load(utt.path)
        if wav.numel() < self.crop_samples:
            raise _file_error(
                utt.path,
                f"decodes to {wav.numel()} samples but its header promised "
                f"{utt.num_samples(self.sample_rate)} (crop is {self.crop_samples})",
                _REFETCH_HINT,
            )
        off = min(int(self._plan_offset[i]), wav.numel() - self.crop_samples)
        return wav[off : off + self.crop_samples].clone(), i // self.crops_per_speaker

    def describe(self, i: int) -> dict[str, Any]:
        """Provenance of item ``i``: path, offset (samples at ``sample_rate``), speaker, label, ..."""
        i = self._index(i)
        utt = self.utterances[int(self._plan_utt[i])]
        label = i // self.crops_per_speaker
        return {
            "index": i,
            "mode": self.mode,
            "epoch": self.epoch if self.mode == "train" else None,
            "path": utt.path,
            "utt_id": utt.utt_id,
            "offset": int(self._plan_offset[i]),
            "crop_samples": self.crop_samples,
            "sample_rate": self.sample_rate,
            "speaker": self.speakers[label],
            "label": label,
        }

    def __repr__(self) -> str:
        return (
            f"CropDataset(mode={self.mode!r}, speakers={self.num_classes}, "
            f"utterances={len(self.utterances)}, "
            f"crops_per_speaker={self.crops_per_speaker}, crop_samples={self.crop_samples}, seed={self.seed})"
        )


# --------------------------------------------------------------------------------------------------
# Config -> datasets
# --------------------------------------------------------------------------------------------------


@dataclass
class DataBundle:
    """What :func:`build_datasets` returns. ``speakers[label]`` is the speaker ID of a label."""

    train: CropDataset
    test: CropDataset
    speakers: list[int]
    manifest: Manifest
    train_utterances: list[Utterance] = field(default_factory=list)
    test_utterances: list[Utterance] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.speakers)


_MISSING = object()


def _cfg_get(cfg: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    try:
        present = key in cfg
        value = cfg[key] if present else default
    except Exception as exc:  # e.g. OmegaConf MissingMandatoryValue / interpolation errors
        raise ValueError(f"dataset.{key}: {exc}") from exc
    if value is _MISSING:
        raise ValueError(f"dataset.{key} is required but missing from the dataset config")
    return value


def _cfg_int(cfg: Mapping[str, Any], key: str, default: Any = _MISSING, minimum: int = 1) -> int:
    value = _cfg_get(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"dataset.{key} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def build_datasets(cfg: Mapping[str, Any], cache_dir: PathLike | None | Literal[False] = None) -> DataBundle:
    """Scan + split + train/test :class:`CropDataset` from a dataset config (DictConfig or Mapping).

    Keys: ``root`` (the LibriSpeech dir; required), ``subset`` (default train-clean-360), ``speakers``
    (list of int IDs or null = all), ``num_classes`` (required; must equal the number of speakers
    found), ``sample_rate`` (16000), ``crop_samples`` (required), ``test_fraction`` (0.2),
    ``train_crops_per_speaker`` (300), ``test_crops_per_speaker`` (50), ``split_seed`` (0; also seeds
    the crops), ``resample`` (true). Impossible values raise ``ValueError`` naming ``dataset.<field>``
    and the value. Utterances shorter than ``crop_samples`` are skipped (see
    :func:`scan_librispeech`). ``cache_dir`` is passed to :func:`scan_librispeech`.
    """
    root = _cfg_get(cfg, "root")
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise ValueError(f"dataset.root must be a path to the LibriSpeech directory, got {root!r}")
    subset = _cfg_get(cfg, "subset", "train-clean-360")
    if not isinstance(subset, str) or not subset or "/" in subset:
        raise ValueError(
            f"dataset.subset must be a subset directory name like 'train-clean-360', got {subset!r}"
        )
    raw_speakers = _cfg_get(cfg, "speakers", None)
    speakers: list[int] | None = None
    if raw_speakers is not None:
        if isinstance(raw_speakers, (str, bytes)) or not isinstance(raw_speakers, Iterable):
            raise ValueError(
                f"dataset.speakers must be a list of integer speaker IDs or null, got {raw_speakers!r}"
            )
        speakers = list(raw_speakers)
        if not speakers or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in speakers):
            raise ValueError(
                f"dataset.speakers must be a non-empty list of integer speaker IDs or null, got {speakers!r}"
            )
        if len(set(speakers)) != len(speakers):
            raise ValueError(f"dataset.speakers contains duplicates: {speakers!r}")
        speakers = [int(s) for s in speakers]
    num_classes = _cfg_int(cfg, "num_classes", minimum=2)
    sample_rate = _cfg_int(cfg, "sample_rate", 16000)
    crop_samples = _cfg_int(cfg, "crop_samples")
    train_cps = _cfg_int(cfg, "train_crops_per_speaker", 300)
    test_cps = _cfg_int(cfg, "test_crops_per_speaker", 50)
    split_seed = _cfg_int(cfg, "split_seed", 0, minimum=0)
    test_fraction = _cfg_get(cfg, "test_fraction", 0.2)
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise ValueError(f"dataset.test_fraction must be in (0, 1) (exclusive), got {test_fraction!r}")
    resample = _cfg_get(cfg, "resample", True)
    if not isinstance(resample, bool):
        raise ValueError(f"dataset.resample must be true or false, got {resample!r}")
    if speakers is not None and len(speakers) != num_classes:
        raise ValueError(
            f"dataset.num_classes={num_classes} but dataset.speakers lists {len(speakers)} speakers; "
            "make them agree"
        )

    manifest = scan_librispeech(
        root,
        subset,
        speakers,
        cache_dir=cache_dir,
        min_samples=crop_samples,
        sample_rate=sample_rate,
        resample=resample,
    )
    if len(manifest.speakers) != num_classes:
        raise ValueError(
            f"dataset.num_classes={num_classes} but {len(manifest.speakers)} speakers were found in "
            f"{manifest.subset_dir} ({_list_for_message(manifest.speakers, 20)}). Set dataset.num_classes="
            f"{len(manifest.speakers)}, or list the wanted speakers in dataset.speakers."
        )
    train_utts, test_utts = split_utterances(manifest, float(test_fraction), split_seed)
    common = dict(crop_samples=crop_samples, seed=split_seed, sample_rate=sample_rate, resample=resample)
    train = CropDataset(train_utts, manifest.speakers, crops_per_speaker=train_cps, mode="train", **common)
    test = CropDataset(test_utts, manifest.speakers, crops_per_speaker=test_cps, mode="test", **common)
    return DataBundle(
        train=train,
        test=test,
        speakers=list(manifest.speakers),
        manifest=manifest,
        train_utterances=train_utts,
        test_utterances=test_utts,
    )
