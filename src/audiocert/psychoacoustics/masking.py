"""The global masking threshold theta of clean utterances (Qin et al. 2019): maskers, pruning, spreading."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from audiocert.psychoacoustics.grid import (
    N_FFT,
    NUM_BINS,
    REFERENCE_DB,
    SAMPLE_RATE,
    WINDOW_GAIN,
    Array,
    frequency_grid,
)
from audiocert.psychoacoustics.inputs import _as_batch, _per_item, check_sample_rate
from audiocert.psychoacoustics.spectrum import _anchor, _raw_db, _stft

PRUNE_BARK = 0.5                     # of two maskers closer than this, the smaller is dropped
_ROW_CHUNK_ELEMENTS = 1 << 22        # memory bound of the (rows, maskers, bins) individual-threshold tensor


@dataclass(frozen=True)
class MaskingThreshold:
    """The global masking threshold of a batch of clean utterances, on the 96-dB scale.

    theta_db:    (..., frames, 1025) global masking threshold theta, dB on the 96-dB scale of the utterance.
    psd_db:      (..., frames, 1025) the clean PSD P on the same scale (max 96 dB unless ``reference_db`` was given).
    psd_max_db:  (...) p_max, the raw PSD level (10 log10 |g X / N|^2, waveform full scale 1) that is mapped to
                 96 dB: the clean utterance's maximum, or the ``reference_db`` given. -inf for digital silence.
    masker_db:   (..., frames, 1025) P_TM of the tonal maskers that were kept, -inf at every other bin.
    frequencies, bark, ath_db: (1025,) the bins' frequencies (Hz), Bark values and threshold in quiet (dB).
    num_samples: the utterances' length; sample_rate: 16000.
    Everything float64, on the input's device.
    """

    theta_db: torch.Tensor
    psd_db: torch.Tensor
    psd_max_db: torch.Tensor
    masker_db: torch.Tensor
    frequencies: torch.Tensor
    bark: torch.Tensor
    ath_db: torch.Tensor
    num_samples: int
    sample_rate: int = SAMPLE_RATE

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.psd_max_db.shape)

    def __getitem__(self, index: int | slice | tuple) -> MaskingThreshold:
        """The threshold of some utterances of the batch (``index`` applies to the batch dimensions)."""
        if not self.batch_shape:
            raise IndexError("this threshold is of a single utterance")
        return MaskingThreshold(
            theta_db=self.theta_db[index], psd_db=self.psd_db[index], psd_max_db=self.psd_max_db[index],
            masker_db=self.masker_db[index], frequencies=self.frequencies, bark=self.bark, ath_db=self.ath_db,
            num_samples=self.num_samples, sample_rate=self.sample_rate)

    @property
    def num_maskers(self) -> torch.Tensor:
        """(..., frames) number of maskers kept per frame."""
        return torch.isfinite(self.masker_db).sum(-1)

    def allowed_magnitude(self, margin_db: float = 0.0) -> torch.Tensor:
        """(B, frames, 1025) |X| at which a perturbation's PSD equals theta - margin: (N/g) 10^((theta - margin - 96
        + p_max) / 20); 0 over digital silence (p_max = -inf)."""
        theta = self.theta_db.reshape(-1, *self.theta_db.shape[-2:])
        p_max = self.psd_max_db.reshape(-1)[:, None, None]
        return (N_FFT / WINDOW_GAIN) * torch.pow(10.0, (theta - margin_db - REFERENCE_DB + p_max) / 20.0)


def _compress(mask: torch.Tensor, count_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bins of the True entries of each row, ascending, first ``count_max`` columns; and which columns are real."""
    bins = torch.arange(mask.shape[-1], device=mask.device)
    key = torch.where(mask, bins, bins + mask.shape[-1])
    order = key.argsort(dim=-1)[:, :count_max]
    valid = torch.arange(count_max, device=mask.device)[None, :] < mask.sum(-1, keepdim=True)
    return order, valid


def _prune_within_bark(candidates: torch.Tensor, power_db: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Qin's 0.5-Bark scan over each row's candidate maskers (rows = utterance x frame); returns the kept mask.

    In increasing frequency a current masker c meets the next candidate j: if z_j - z_c < 0.5 the smaller is dropped
    (a tie drops j) and the larger becomes c; else c stays kept and j becomes c. Sequential by nature, so it runs in
    numpy on the CPU (small arrays, no kernel launches), vectorised over rows, looping over masker rank only.
    """
    rows = candidates.shape[0]
    counts = candidates.sum(-1)
    count_max = int(counts.max()) if rows else 0
    if count_max <= 1:
        return candidates.clone()
    order, valid = _compress(candidates, count_max)
    zc = z[order].cpu().numpy()
    pc = power_db.gather(1, order).cpu().numpy()
    real = valid.cpu().numpy()
    keep = real.copy()
    index = np.arange(rows)
    cur = np.zeros(rows, dtype=np.int64)
    cur_z, cur_p = zc[:, 0].copy(), pc[:, 0].copy()
    for j in range(1, count_max):  # masker rank, vectorised over all rows
        zj, pj = zc[:, j], pc[:, j]
        close = real[:, j] & (zj - cur_z < PRUNE_BARK)
        j_wins = close & (pj > cur_p)
        keep[:, j] &= ~(close & ~j_wins)
        keep[index, cur] &= ~j_wins
        move = real[:, j] & (j_wins | ~close)
        cur = np.where(move, j, cur)
        cur_z = np.where(move, zj, cur_z)
        cur_p = np.where(move, pj, cur_p)
    kept = torch.zeros_like(candidates)
    kept.scatter_(1, order, torch.from_numpy(keep).to(candidates.device))
    return kept


def _global_threshold(masker_db: torch.Tensor, z: torch.Tensor, ath_db: torch.Tensor) -> torch.Tensor:
    """theta = 10 log10(10^(ATH/10) + sum_m 10^(T_m/10)) for (rows, 1025) maskers (-inf where none).

    Below a masker (dz <= 0) the spreading term factorises, 10^((P_m + Delta_m + 27 (z_k - z_m)) / 10) =
    10^(2.7 z_k) 10^((P_m + Delta_m) / 10 - 2.7 z_m), so the lower slopes of all maskers are one reverse cumulative
    sum over bins; above a masker the slope depends on P_m, so those terms are summed densely over (maskers, bins).
    """
    quiet = torch.pow(10.0, ath_db / 10.0)
    kept = torch.isfinite(masker_db)
    count_max = int(kept.sum(-1).max()) if kept.numel() else 0
    if count_max == 0:
        return ath_db.expand(masker_db.shape).clone()
    level = masker_db + (-6.025 - 0.275 * z)                                   # P_m + Delta(z_m) at masker bins
    below = torch.pow(10.0, level / 10.0 - 2.7 * z)                            # 0 where no masker (-inf)
    lower = torch.pow(10.0, 2.7 * z) * below.flip(-1).cumsum(-1).flip(-1)      # sum over maskers at bins >= k
    order, valid = _compress(kept, count_max)
    bins = torch.arange(z.numel(), device=z.device)
    to_nepers = math.log(10.0) / 10.0                                          # 10^(x/10) = exp(x ln10 / 10)
    chunk = max(1, _ROW_CHUNK_ELEMENTS // (count_max * z.numel()))
    upper = []
    for start in range(0, masker_db.shape[0], chunk):  # bounds memory: (rows, maskers, bins) per chunk
        o, v = order[start:start + chunk], valid[start:start + chunk]
        zm = z[o]                                                              # (r, M)
        pm = torch.where(v, masker_db[start:start + chunk].gather(1, o), -math.inf)
        slope = -27.0 + 0.37 * (pm - 40.0).clamp_min(0.0)
        offset = torch.where(v, level[start:start + chunk].gather(1, o) - slope * zm, -math.inf)
        # T_m(k) = offset_m + slope_m z_k above the masker (k > bin_m), in nepers, as one batched outer product
        exponent = torch.baddbmm((offset * to_nepers)[..., None], (slope * to_nepers)[..., None],
                                 z.expand(o.shape[0], 1, z.numel()))
        exponent.masked_fill_(bins <= o[..., None], -math.inf)
        upper.append(exponent.exp_().sum(1))
    return 10.0 * torch.log10(quiet + lower + torch.cat(upper))


def threshold_from_psd(psd_db: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Global masking threshold of PSD frames already on the 96-dB scale: (..., 1025) -> (theta_db, masker_db).

    The masker steps of the package docstring: strict local maxima of interior bins, power-summed with both
    neighbours (P_TM), dropped below the threshold in quiet, then pruned within 0.5 Bark; individual thresholds with
    the -6.025 - 0.275 z offset and the two-slope spreading function; power sum with the threshold in quiet.
    """
    shape = psd_db.shape
    if shape[-1] != NUM_BINS:
        raise ValueError(f"psd_db has {shape[-1]} bins in its last dimension; expected {NUM_BINS}")
    p = psd_db.reshape(-1, NUM_BINS).to(torch.float64)
    if bool(torch.isnan(p).any()) or bool((p == math.inf).any()):
        raise ValueError("psd_db has nan or +inf values (exact zeros of the PSD are -inf dB, which is fine)")
    _, z, ath = frequency_grid(p.device)
    centre, below, above = p[:, 1:-1], p[:, :-2], p[:, 2:]
    local_max = torch.zeros_like(p, dtype=torch.bool)
    local_max[:, 1:-1] = (centre > below) & (centre > above)
    lin = torch.pow(10.0, p / 10.0)
    p_tm = torch.full_like(p, -math.inf)
    p_tm[:, 1:-1] = 10.0 * torch.log10(lin[:, :-2] + lin[:, 1:-1] + lin[:, 2:])
    candidates = local_max & (p_tm >= ath)
    kept = _prune_within_bark(candidates, p_tm, z)
    masker_db = torch.where(kept, p_tm, torch.full_like(p_tm, -math.inf))
    theta = _global_threshold(masker_db, z, ath)
    return theta.reshape(shape), masker_db.reshape(shape)


def masking_threshold(waveform: Array, sample_rate: int = SAMPLE_RATE,
                      reference_db: float | Array | None = None) -> MaskingThreshold:
    """The global masking threshold theta of each clean utterance of ``waveform`` (..., n), n >= 2048.

    ``reference_db`` (None: each utterance's own maximum, as Qin) anchors a given raw PSD level at 96 dB instead,
    e.g. to compare utterances of different levels on one scale (a number, or one per utterance).
    """
    check_sample_rate(sample_rate)
    x, lead, _ = _as_batch(waveform)
    raw = _raw_db(_stft(x))
    if reference_db is None:
        psd_max = raw.amax(dim=(-2, -1))
    else:
        psd_max = _per_item(reference_db, lead, x.device, "reference_db")
        if not bool(torch.isfinite(psd_max).all()):
            raise ValueError(f"reference_db={reference_db} must be finite")
    psd = _anchor(raw, psd_max)
    theta, masker = threshold_from_psd(psd)
    freqs, z, ath = frequency_grid(x.device)
    frames = raw.shape[-2]
    return MaskingThreshold(
        theta_db=theta.reshape(*lead, frames, NUM_BINS), psd_db=psd.reshape(*lead, frames, NUM_BINS),
        psd_max_db=psd_max.reshape(lead), masker_db=masker.reshape(*lead, frames, NUM_BINS), frequencies=freqs,
        bark=z, ath_db=ath, num_samples=x.shape[-1])
