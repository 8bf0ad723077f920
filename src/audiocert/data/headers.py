"""From file headers to a :class:`Manifest`: header reads (no decoding), bad and short files, off-rate files."""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from audiocert.data.audio import _REFETCH_HINT, AudioDataWarning, AudioFileError, _resampled_length
from audiocert.data.cache_trust import _FileEntry
from audiocert.data.manifest import Manifest, SpeakerInfo, Utterance, read_speakers_txt
from audiocert.progress import progress

# libsndfile reports SF_COUNT_MAX frames when a FLAC header does not record its length.
_UNKNOWN_LENGTH = 2**62
_MAX_LISTED = 10  # how many offending files / speakers an error message lists


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
