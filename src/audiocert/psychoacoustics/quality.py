"""Objective quality of perturbed against clean speech: wideband PESQ and STOI, one score per utterance."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from audiocert.psychoacoustics.grid import SAMPLE_RATE, Array
from audiocert.psychoacoustics.inputs import _as_batch


@dataclass(frozen=True)
class QualityScores:
    """Objective quality of perturbed vs clean speech, one score per utterance (shape (...) of the batch).

    pesq: wideband PESQ (ITU-T P.862.2 MOS-LQO, 1.04 to 4.64; the ``pesq`` package, mode "wb"); nan where PESQ
        refuses the input (no utterance detected, shorter than 1/4 s), with the reason in ``pesq_errors``.
    stoi: STOI (Taal et al. 2011, 0 to 1; ``pystoi``, not extended); nan where it cannot be computed (too few speech
        frames after its silence removal, or a silent clean signal), with the reason in ``stoi_errors``.
    pesq_errors, stoi_errors: per utterance in flattened batch order, None where the score was computed.
    """

    pesq: np.ndarray
    stoi: np.ndarray
    pesq_errors: tuple[str | None, ...]
    stoi_errors: tuple[str | None, ...]


def _message(error: Exception) -> str:
    text = error.args[0] if error.args else ""
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _pesq_one(clean: np.ndarray, perturbed: np.ndarray) -> tuple[float, str | None]:
    from pesq import PesqError, pesq

    if not np.any(clean):
        return math.nan, "the clean signal is silent"
    try:
        return float(pesq(SAMPLE_RATE, clean, perturbed, "wb")), None
    except PesqError as error:
        return math.nan, _message(error)


def _stoi_one(clean: np.ndarray, perturbed: np.ndarray) -> tuple[float, str | None]:
    from pystoi import stoi

    if not np.any(clean):
        return math.nan, "the clean signal is silent"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(clean, perturbed, SAMPLE_RATE, extended=False))
    refusals = [str(w.message) for w in caught if "Not enough STFT frames" in str(w.message)]
    return (math.nan, refusals[0]) if refusals else (value, None)


def quality_scores(clean: Array, perturbed: Array, sample_rate: int = SAMPLE_RATE) -> QualityScores:
    """Wideband PESQ and STOI of ``perturbed`` against ``clean`` (both (..., n), 16 kHz), one per utterance.

    A refusal (no utterance detected, too short, silent clean signal) gives nan and its reason, not an exception.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: wideband PESQ needs {SAMPLE_RATE} Hz audio; resample first "
                         f"(e.g. dataset.resample=true)")
    x, lead, _ = _as_batch(clean, "clean", min_samples=1)
    y, lead_y, _ = _as_batch(perturbed, "perturbed", min_samples=1)
    if x.shape != y.shape or lead != lead_y:
        raise ValueError(f"clean has shape {(*lead, x.shape[-1])} and perturbed {(*lead_y, y.shape[-1])}; "
                         f"they must match")
    xs, ys = x.cpu().numpy(), y.cpu().numpy()
    pesqs = [_pesq_one(a, b) for a, b in zip(xs, ys, strict=True)]
    stois = [_stoi_one(a, b) for a, b in zip(xs, ys, strict=True)]
    return QualityScores(pesq=np.array([v for v, _ in pesqs]).reshape(lead),
                         stoi=np.array([v for v, _ in stois]).reshape(lead),
                         pesq_errors=tuple(e for _, e in pesqs), stoi_errors=tuple(e for _, e in stois))
