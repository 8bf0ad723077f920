"""A perturbation's PSD on the clean utterance's scale, and how far it rises above the masking threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from audiocert.psychoacoustics.grid import Array
from audiocert.psychoacoustics.inputs import _as_batch, _per_item
from audiocert.psychoacoustics.masking import MaskingThreshold
from audiocert.psychoacoustics.spectrum import _anchor, _raw_db, _stft


def perturbation_psd_db(delta: Array, psd_max_db: Array) -> torch.Tensor:
    """PSD_delta = 96 - p_max + p_delta (..., frames, 1025): a perturbation's PSD on the clean utterance's scale.

    ``psd_max_db`` is the clean utterances' ``MaskingThreshold.psd_max_db``; it broadcasts against the batch shape of
    ``delta``, so several perturbations of each utterance can be measured at once (delta (draws, B, n), p_max (B,)).
    """
    d, lead, _ = _as_batch(delta, "delta")
    p_max = _per_item(psd_max_db, lead, d.device, "psd_max_db")
    psd = _anchor(_raw_db(_stft(d)), p_max)
    return psd.reshape(*lead, *psd.shape[-2:])


@dataclass(frozen=True)
class Audibility:
    """How far a perturbation rises above the clean utterance's masking threshold.

    excess_db:      (...) max over time-frequency bins of PSD_delta - theta; <= 0 means inaudible under the model.
    fraction_above: (...) fraction of the bins with PSD_delta > theta.
    """

    excess_db: torch.Tensor
    fraction_above: torch.Tensor

    @property
    def audible(self) -> torch.Tensor:
        return self.excess_db > 0


def _check_match(delta_samples: int, threshold: MaskingThreshold) -> None:
    if delta_samples != threshold.num_samples:
        raise ValueError(f"the perturbation has {delta_samples} samples but the threshold was computed for "
                         f"{threshold.num_samples}")


def excess_db(delta: Array, threshold: MaskingThreshold) -> torch.Tensor:
    """(..., frames, 1025) PSD_delta - theta of each bin (> 0: audible there)."""
    d = torch.as_tensor(delta)
    _check_match(d.shape[-1], threshold)
    return perturbation_psd_db(d, threshold.psd_max_db) - threshold.theta_db


def audibility(delta: Array, threshold: MaskingThreshold) -> Audibility:
    """Max excess over the threshold (dB) and the fraction of bins above it, per perturbation of ``delta`` (..., n).

    ``delta``'s batch shape broadcasts against the threshold's (e.g. (draws, B, n) against a threshold of B utterances).
    """
    excess = excess_db(delta, threshold)
    return Audibility(excess_db=excess.amax(dim=(-2, -1)),
                      fraction_above=(excess > 0).to(torch.float64).mean(dim=(-2, -1)))
