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

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from audiocert.data.audio import PathLike
from audiocert.data.cache_trust import _walk
from audiocert.data.headers import _post_scan_checks, _scan
from audiocert.data.layout import DatasetLayoutError, DatasetNotFoundError, _speaker_dirs, _speakers_in_scope
from audiocert.data.manifest import Manifest, SpeakerInfo, Utterance, read_speakers_txt
from audiocert.data.manifest_cache import _cache_key_and_path, _read_cache, _write_cache, default_cache_dir

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
    _check_scan_numbers(min_samples, sample_rate)
    root_p = Path(root).expanduser().resolve()
    subset_dir, available = _speaker_dirs(root_p, subset)
    requested, in_scope = _speakers_in_scope(speakers, available, subset_dir)
    speakers_txt = root_p / "SPEAKERS.TXT"
    key, cache_path = _cache_key_and_path(root_p, subset, requested, min_samples, sample_rate, cache_dir)
    # The cache and post-scan helpers warn with stacklevel=3: they must be called from here, not deeper.
    manifest = _read_cache(cache_path, key, subset_dir, in_scope) if cache_path is not None else None
    if manifest is None:
        files, trust = _walk(subset_dir, {s: available[s] for s in in_scope})
        manifest = _scan(root_p, subset, in_scope, files, speakers_txt, min_samples, sample_rate)
        if cache_path is not None:
            _write_cache(cache_path, manifest, key, trust)
    _post_scan_checks(manifest, resample)
    return manifest


def _check_scan_numbers(min_samples: int, sample_rate: int) -> None:
    """ValueError unless min_samples is an integer >= 0 and sample_rate an integer > 0."""
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 0:
        raise ValueError(f"min_samples must be a non-negative integer, got {min_samples!r}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
