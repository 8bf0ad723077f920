"""Reading one audio file: soundfile decoding, mono and sample-rate checks, errors that name the file.

Also defines the error and warning types the rest of :mod:`audiocert.data` raises about files.

* **Multi-channel files are refused**, never down-mixed: speaker corpora are mono, so a stereo file
  means the wrong file (or a broken conversion) and averaging channels would hide that.
* **Wrong sample rate**: resampled with ``torchaudio.functional.resample`` when ``resample=True``
  (a warning per file), refused with :class:`AudioFileError` when ``resample=False``.
* **Bad files are errors, not silently dropped**: unreadable/corrupt, empty, multi-channel, NaN/inf
  samples -> :class:`AudioFileError` naming the file and what to do.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

__all__ = ["AudioDataWarning", "AudioFileError", "PathLike", "load_audio"]

PathLike = str | os.PathLike

_REFETCH_HINT = (
    "re-extract it from the LibriSpeech archive (or regenerate the synthetic corpus with "
    "`audiocert corpus`), or delete it from the corpus"
)


class AudioFileError(ValueError):
    """A specific audio file cannot be used. The message names the file and says what to do.

    ``path`` holds the offending file (the first one, when a scan reports several). The constructor
    accepts a single message argument so the exception survives re-raising from DataLoader workers.
    """

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)


class AudioDataWarning(UserWarning):
    """Recoverable data issue (resampling, skipped short utterances, ignored cache, clipping)."""


def _file_error(path: PathLike, problem: str, fix: str) -> AudioFileError:
    return AudioFileError(f"{path}: {problem}. To fix: {fix}.", path)


# Resolved paths already warned about: one warning per file per process, however often it is loaded.
_resample_warned: set[str] = set()
_clip_warned: set[str] = set()


def _resampled_length(num_frames: int, orig_sr: int, target_sr: int) -> int:
    """Length after ``torchaudio.functional.resample`` (which returns ceil(n * target / orig))."""
    if orig_sr == target_sr:
        return num_frames
    return -(-num_frames * target_sr // orig_sr)


def _warn_once(warned: set[str], path: Path, message: str) -> None:
    """One AudioDataWarning per file and kind, however often the file is read (every epoch reads it again)."""
    key = str(path.resolve())
    if key not in warned:
        warned.add(key)
        warnings.warn(message, AudioDataWarning, stacklevel=3)


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
        _warn_once(_clip_warned, p, f"{p}: samples exceed [-1, 1] (peak {peak:.3f}); clipping them")
        tensor = tensor.clamp_(-1.0, 1.0)
    if file_sr != sample_rate:
        if not resample:
            raise _file_error(
                p,
                f"sample rate is {file_sr} Hz but {sample_rate} Hz is required (dataset.resample=false)",
                f"resample the corpus to {sample_rate} Hz (e.g. `sox in.flac -r {sample_rate} out.flac`) "
                "or set dataset.resample=true",
            )
        _warn_once(_resample_warned, p,
                   f"{p}: sample rate {file_sr} Hz != {sample_rate} Hz; resampling with torchaudio")
        import torchaudio.functional as taf  # lazy: only needed for off-rate files

        tensor = taf.resample(tensor, orig_freq=int(file_sr), new_freq=sample_rate).clamp_(-1.0, 1.0)
    return tensor.to(torch.float32).contiguous()
