"""The psychoacoustic masking model of Qin et al. (2019), batched in torch, and what it says about perturbations.

What is imperceptible to a listener is what stays under the *global masking threshold* theta of the clean utterance
x in every time-frequency bin (Qin, Carlini, Cottrell, Goodfellow & Raffel 2019, "Imperceptible, robust and targeted
adversarial examples for automatic speech recognition", following Lin & Abdulla 2015 / MPEG-1 model 1)::

    STFT        X(t, k): n_fft N = 2048, hop 512, periodic Hann window w, 16 kHz; bins f_k = k 16000 / 2048
    PSD         p(t, k) = 10 log10 |g X(t, k) / N|^2,  g = sqrt(8/3)            (raw dB, per utterance)
    96 dB       P(t, k) = 96 - p_max + p(t, k),  p_max = max over t, k of p    (``psd_max_db``)
    Bark        z(f) = 13 atan(0.00076 f) + 3.5 atan((f / 7500)^2)
    quiet       ATH(f) = 3.64 (f/1k)^-0.8 - 6.5 exp(-0.6 (f/1k - 3.3)^2) + 1e-3 (f/1k)^4 - 12  dB
    maskers     k with P(t, k-1) < P(t, k) > P(t, k+1) (interior bins), of power
                P_TM(t, k) = 10 log10(10^(P(k-1)/10) + 10^(P(k)/10) + 10^(P(k+1)/10));
                dropped when P_TM < ATH(f_k); then, scanning up in frequency, of two within 0.5 Bark the smaller
    individual  T_m(t, k) = P_TM(m) + Delta(z_m) + SF(z_k - z_m),  Delta(z) = -6.025 - 0.275 z,
                SF(dz) = 27 dz (dz <= 0),  (-27 + 0.37 max(P_TM(m) - 40, 0)) dz (dz > 0)     [dB, dB/Bark]
    global      theta(t, k) = 10 log10(10^(ATH(f_k)/10) + sum_m 10^(T_m(t, k)/10))

A perturbation delta is measured on the clean utterance's scale: PSD_delta(t, k) = 96 - p_max(x) + p_delta(t, k), with
p_max the *clean* maximum, so PSD_delta and theta compare bin by bin (:func:`perturbation_psd_db`). It is inaudible
(under this model) when PSD_delta <= theta everywhere (:func:`audibility`).

Choices where the references differ (Qin et al.'s code, cleverhans ``adversarial_asr``; ART's
``PsychoacousticMasker``), each tested in ``tests/test_psychoacoustics.py``:

* **Window scale.** One gain g = sqrt(8/3) on the Hann-windowed spectrum's *amplitude*, for the clean signal and the
  perturbation alike (3/8 is the Hann window's mean square, so g^2 = 8/3 makes the PSD of white noise the same with
  and without the window; ART uses this too). Since both PSDs are anchored at the clean maximum, any gain that is the
  same on both sides cancels: P and PSD_delta do not depend on g at all, and the PSD of delta = x is exactly P
  (tested). Qin's code multiplies the perturbation's amplitude by 8/3 instead of sqrt(8/3), which states every
  perturbation 10 log10(8/3) = 4.26 dB louder than the clean signal measured the same way; budgets under that
  convention are sqrt(3/8) = 0.61 times ours.
* **Analysis frames.** Zero padding by N/2 at both ends (``torch.stft(center=True, pad_mode="constant")``), 1 + n // 512
  frames, where Qin and ART use ``center=False``. Without padding the first and last samples sit under the Hann
  window's vanishing edges (w[0] = 0) and the samples after the last full frame are not analysed at all, so a
  perturbation placed there has no PSD and an "imperceptible" budget would be unbounded. With the padding every sample
  lies in some frame with window weight >= 1/2.
* **Threshold in quiet below 1 Bark** (f < 101.3 Hz, bins 0-12). The formula climbs without bound towards 0 Hz
  (164.5 dB at 7.8 Hz, 61.3 dB at 23.4 Hz), and an L2 budget would be dominated by inaudible infrasound. Qin sets ATH
  to -inf there (no floor at all: frames without maskers then admit no perturbation, and round-off-level local
  maxima below 101 Hz pass as maskers); ART uses the formula from 20 Hz up. We hold ATH at its 1-Bark value,
  10.71 dB, below 1 Bark: finite everywhere, and never above the formula (tested: a float32 tone has no round-off
  maskers).
* **Masker pruning.** Bark positions of the maskers' bins are compared (Qin). ART's code indexes the Bark table by
  the masker's *rank* instead of its bin, so it compares the Bark values of bins 0, 1, 2, ... and prunes maskers that
  lie far apart (e.g. tones at 500 Hz and 4 kHz: ART keeps one, we keep both; tested). The threshold-in-quiet test
  comes first, on every masker (the issue's order, and ART's); Qin's code tests only maskers that have a neighbour
  within 0.5 Bark, so an isolated masker under the threshold in quiet survives there (tested: it does not here). The
  0.5-Bark rule is Qin's scan: in increasing frequency, a current masker c meets the next one j; if z_j - z_c < 0.5
  the smaller is dropped (a tie keeps c) and the larger becomes c; otherwise c is kept and j becomes c. Survivors are
  therefore at least 0.5 Bark apart. The scan is sequential; it runs vectorised over utterances and frames, with a
  Python loop over masker rank only.
* **Silence.** An all-zero utterance has no level to anchor the 96-dB scale: its P is -inf, it has no maskers and
  theta is the threshold in quiet; any nonzero perturbation of it is audible (PSD_delta = +inf) and its budget is 0.

The imperceptible budget of a point (:func:`imperceptible_budget`) is the largest waveform L2 norm of a perturbation
whose PSD stays at or below theta - margin in every bin. It is built, then measured (never assumed). A(t, k) is the
STFT magnitude at which PSD_delta = theta - margin. Start from random phases with magnitude A; Griffin-Lim steps
towards |D| = A; then over-relaxed clipping steps with momentum (bins above A pulled down, as in the fast Griffin-Lim
algorithm), keeping the iterate with the largest norm after scaling by its worst bin; then frames whose worst bin
stands out are attenuated locally (fading over 512 samples), so one bad frame does not scale down the whole
utterance; then one exact scale makes the measured max excess -margin. Its norm is a lower bound on the largest
imperceptible norm. A linear programme over per-frame Parseval identities gives an upper bound (``upper_bound``), so
the largest imperceptible norm lies between the two, and ``tightness`` = budget / upper_bound (about 0.5 on speech)
says how much the construction may leave on the table. See :class:`ImperceptibleBudget`.

The rest serves comparisons of certificates with imperceptibility: perturbations of an exact L2 norm
(:func:`random_perturbation`, :func:`shaped_perturbation`), the resynthesis of a perturbed Deep Speaker magnitude
spectrogram to a waveform (:func:`magspec_to_waveform`), and objective quality scores (:func:`quality_scores`,
wideband PESQ and STOI).

Shapes: waveforms (..., n) with any leading batch dimensions, numpy or torch, float; time-frequency maps
(..., frames, 1025); per-utterance numbers (...). Computation is in float64 on the input's device.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from audiocert.frontend import DeepSpeakerFrontend

SAMPLE_RATE = 16000
N_FFT = 2048
HOP = 512
NUM_BINS = N_FFT // 2 + 1
REFERENCE_DB = 96.0                  # the clean maximum is mapped to 96 dB
WINDOW_GAIN = math.sqrt(8.0 / 3.0)   # amplitude gain on the Hann-windowed spectrum (see the module docstring)
PRUNE_BARK = 0.5                     # of two maskers closer than this, the smaller is dropped
GRIFFIN_LIM_STEPS = 16               # budget construction: Griffin-Lim steps before the clipping steps
MOMENTUM = 0.9                       # budget construction: momentum of the clipping steps
FADE = 512                           # budget construction: samples over which a frame's attenuation fades out
ATH_FLOOR_BARK = 1.0                 # below this, ATH is held at its value here
_ROW_CHUNK_ELEMENTS = 1 << 22        # memory bound of the (rows, maskers, bins) individual-threshold tensor

Array = torch.Tensor | np.ndarray


# --- checks and conversions --------------------------------------------------------------------------------------
def check_sample_rate(sample_rate: int) -> None:
    """The model is defined at 16 kHz (its frequency grid and Bark mapping); anything else must be resampled."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"sample_rate={sample_rate}: the psychoacoustic model is defined at {SAMPLE_RATE} Hz; "
                         f"resample the audio to {SAMPLE_RATE} Hz first (e.g. dataset.resample=true)")


def _check_finite_number(name: str, value: float, low: float, high: float) -> float:
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name}={value} must be finite and in [{low}, {high}]")
    return value


def _as_batch(waveform: Array, name: str = "waveform", min_samples: int = N_FFT
              ) -> tuple[torch.Tensor, tuple[int, ...], torch.dtype]:
    """(..., n) float array -> (B, n) float64 tensor on its device, the leading shape, and the input's dtype."""
    x = torch.as_tensor(waveform)
    if not (x.is_floating_point()):
        raise ValueError(f"{name} must be a float array (samples in [-1, 1]), got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError(f"{name} must have shape (..., samples), got a scalar")
    if x.shape[-1] < min_samples:
        raise ValueError(f"{name} has {x.shape[-1]} samples, fewer than one analysis frame ({min_samples} samples "
                         f"= {min_samples / SAMPLE_RATE * 1000:.0f} ms at {SAMPLE_RATE} Hz); use longer crops")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has non-finite samples (nan or inf)")
    lead = tuple(x.shape[:-1])
    return x.reshape(-1, x.shape[-1]).to(torch.float64), lead, x.dtype


def _per_item(value: float | Array, lead: tuple[int, ...], device: torch.device, name: str) -> torch.Tensor:
    """A number, or one per utterance (broadcasting against the batch shape ``lead``), as a (B,) float64 tensor."""
    v = torch.as_tensor(value, dtype=torch.float64, device=device)
    try:
        return torch.broadcast_to(v, lead).reshape(-1)
    except RuntimeError:
        raise ValueError(f"{name} has shape {tuple(v.shape)}; expected a number or one per utterance of a batch of "
                         f"shape {lead}") from None


# --- the frequency grid ------------------------------------------------------------------------------------------
def bark(frequency_hz: Array) -> torch.Tensor:
    """Critical-band rate z(f) = 13 atan(0.00076 f) + 3.5 atan((f / 7500)^2), in Bark."""
    f = torch.as_tensor(frequency_hz, dtype=torch.float64)
    return 13.0 * torch.atan(0.00076 * f) + 3.5 * torch.atan((f / 7500.0) ** 2)


def _terhardt_db(frequency_hz: torch.Tensor) -> torch.Tensor:
    khz = frequency_hz / 1000.0
    return 3.64 * khz ** -0.8 - 6.5 * torch.exp(-0.6 * (khz - 3.3) ** 2) + 1e-3 * khz ** 4 - 12.0


def _bark_to_hz(z: float) -> float:
    """Inverse of :func:`bark` by bisection (z is increasing in f)."""
    low, high = 0.0, float(SAMPLE_RATE)
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if float(bark(mid)) < z else (low, mid)
    return 0.5 * (low + high)


def absolute_threshold_db(frequency_hz: Array) -> torch.Tensor:
    """Threshold in quiet ATH(f) in dB (the formula of the module docstring), held at its 1-Bark value below 1 Bark."""
    f = torch.as_tensor(frequency_hz, dtype=torch.float64)
    return _terhardt_db(f.clamp_min(_bark_to_hz(ATH_FLOOR_BARK)))


@lru_cache(maxsize=8)
def _grid_cpu() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    freqs = torch.arange(NUM_BINS, dtype=torch.float64) * SAMPLE_RATE / N_FFT
    return freqs, bark(freqs), absolute_threshold_db(freqs)


def frequency_grid(device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(frequencies in Hz, Bark, threshold in quiet in dB) of the 1025 bins, float64."""
    return tuple(t.to(device) for t in _grid_cpu())  # type: ignore[return-value]


def num_frames(num_samples: int) -> int:
    """Analysis frames of an utterance of ``num_samples``: 1 + n // 512 (zero-padded by N/2 at both ends)."""
    return 1 + num_samples // HOP


# --- STFT and PSD ------------------------------------------------------------------------------------------------
def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float64, device=device)


def _stft(x: torch.Tensor) -> torch.Tensor:
    """(B, n) float64 -> (B, frames, 1025) complex128, zero-padded by N/2 at both ends."""
    spec = torch.stft(x, N_FFT, HOP, N_FFT, window=_window(x.device), center=True, pad_mode="constant",
                      return_complex=True)
    return spec.transpose(-1, -2)


def _istft(spec: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Least-squares inverse of :func:`_stft` (window-weighted overlap-add over the window-squared envelope)."""
    return torch.istft(spec.transpose(-1, -2), N_FFT, HOP, N_FFT, window=_window(spec.device), center=True,
                       length=num_samples)


def _raw_db(spec: torch.Tensor) -> torch.Tensor:
    """p = 10 log10 |g X / N|^2 (-inf for exact zeros)."""
    return 10.0 * torch.log10((WINDOW_GAIN / N_FFT) ** 2 * spec.abs().square())


def _anchor(raw_db: torch.Tensor, psd_max_db: torch.Tensor) -> torch.Tensor:
    """96 - p_max + p, with exact zeros staying -inf and anything over a silent anchor (p_max = -inf) at +inf."""
    anchored = REFERENCE_DB - psd_max_db[:, None, None] + raw_db
    return torch.where(raw_db == -math.inf, torch.full_like(raw_db, -math.inf), anchored)


# --- the masking threshold ---------------------------------------------------------------------------------------
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

    The masker steps of the module docstring: strict local maxima of interior bins, power-summed with both
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


# --- perturbations on the clean utterance's scale ----------------------------------------------------------------
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


# --- the imperceptible budget ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImperceptibleBudget:
    """The largest imperceptible perturbation found for each utterance, and how close it comes to the largest one.

    budget:         (...) its waveform L2 norm (full scale 1), measured on the returned ``perturbation``. Every
                    perturbation of at most this norm *in this direction* is inaudible; the largest imperceptible
                    norm over all directions is at least this.
    perturbation:   (..., n) the perturbation, in the waveform's dtype, with max excess exactly -margin_db.
    upper_bound:    (...) no perturbation with PSD_delta <= theta - margin everywhere has a larger L2 norm. Per
                    frame, Parseval gives sum_n w^2(n - 512 t + N/2) delta_n^2 <= E_t = (1/N) sum_k m_k A(t, k)^2
                    (m_k = 1 at k = 0 and N/2, else 2); any weights lambda_t >= 0 that cover every sample
                    (sum_t lambda_t w^2(n - 512 t + N/2) >= 1) turn these into ||delta||^2 <= sum_t lambda_t E_t,
                    and a small linear programme picks the lambda (see ``_upper_bound``).
    tightness:      (...) budget / upper_bound in (0, 1]: the largest imperceptible norm is at most budget /
                    tightness. (nan for digital silence, whose budget and bound are 0.)
    max_excess_db:  (...) measured max of PSD_delta - theta (= -margin_db up to round-off, never above it).
    median_slack_db: (...) median over bins of theta - PSD_delta: how far below the threshold a typical bin sits.
    within_3db:     (...) fraction of bins with PSD_delta >= theta - margin_db - 3 dB (the bins that are "used").
    margin_db:      the margin below the threshold that was asked for.
    """

    budget: torch.Tensor
    perturbation: torch.Tensor
    upper_bound: torch.Tensor
    tightness: torch.Tensor
    max_excess_db: torch.Tensor
    median_slack_db: torch.Tensor
    within_3db: torch.Tensor
    margin_db: float


def _random_phase(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Uniform phases (B, frames, bins), each utterance from its own CPU generator seeded with ``seed``: the same
    phases on every device, and an utterance's budget does not depend on the batch it is computed in."""
    phases = torch.empty(shape, dtype=torch.float64)
    for row in range(shape[0]):
        phases[row] = torch.rand(shape[1:], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (2.0 * math.pi * phases).to(device)


def _shape_to_threshold(allowed: torch.Tensor, num_samples: int, seed: int, iterations: int) -> torch.Tensor:
    """A waveform (B, n) whose |STFT| approaches ``allowed`` A (B, frames, 1025), not yet scaled to it.

    Random phase with magnitude A; Griffin-Lim steps D <- A e^(i angle STFT(delta)) (the first min(16, iterations/4)
    steps); then over-relaxed clipping steps with momentum (as in the fast Griffin-Lim algorithm): bins above A are
    pulled down by (A / |D|)^2, the rest kept, c_i = ISTFT(...), delta = c_i + 0.9 (c_i - c_(i-1)). Every iterate is
    a candidate: the one whose norm is largest once scaled by its worst bin, ||delta|| / max(|D| / A), is returned.
    """
    spec = torch.polar(allowed, _random_phase(tuple(allowed.shape), seed, allowed.device))
    delta = previous = best = _istft(spec, num_samples)
    best_score = torch.zeros(delta.shape[0], dtype=delta.dtype, device=delta.device)
    warmup = min(GRIFFIN_LIM_STEPS, iterations // 4)
    for step in range(iterations + 1):
        spec = _stft(delta)
        magnitude = spec.abs()
        score = delta.norm(dim=-1) / (magnitude / allowed).amax(dim=(-2, -1))  # nan over silence: never better
        better = score > best_score
        best = torch.where(better[:, None], delta, best)
        best_score = torch.where(better, score, best_score)
        if step == iterations:
            break
        if step < warmup:
            delta = previous = _istft(torch.polar(allowed, spec.angle()), num_samples)
        else:
            pull = torch.where(magnitude > allowed, (allowed / magnitude).square(), 1.0)
            clipped = _istft(spec * pull, num_samples)
            delta, previous = clipped + MOMENTUM * (clipped - previous), clipped
    return best


def _worst_ratio_db(delta: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """(B, frames) max over bins of 20 log10(|STFT(delta)| / A): each frame's worst bin."""
    return 20.0 * torch.log10(_stft(delta).abs() / allowed).amax(dim=-1)


def _even_out_frames(delta: torch.Tensor, allowed: torch.Tensor, passes: int = 2) -> torch.Tensor:
    """Attenuate the frames whose worst bin stands out, so that one bad frame does not scale down the whole utterance.

    A frame whose worst bin is c dB above the utterance's median frame-worst gets gain 10^(-c/20) on all samples it
    covers (so its spectrum scales exactly), fading to 1 over 512 samples on each side with a raised cosine; each
    sample takes the smallest gain of the frames acting on it. A pass is kept per utterance only if it improves the
    budget ||delta|| / max(|STFT(delta)| / A).
    """
    n = delta.shape[-1]
    fade = 0.5 * (1.0 - torch.cos(math.pi * torch.arange(1, FADE + 1, dtype=torch.float64, device=delta.device)
                                  / (FADE + 1)))                                    # rises from ~0 to ~1
    worst = _worst_ratio_db(delta, allowed)
    for _ in range(passes):
        cut = (worst - worst.median(dim=-1, keepdim=True).values).clamp_min(0.0)
        gain = torch.ones_like(delta)
        for t in torch.nonzero(cut.amax(0) > 0).flatten().tolist():   # the few frames that stand out
            profile = torch.zeros(n, dtype=torch.float64, device=delta.device)
            low, high = max(0, t * HOP - N_FFT // 2), min(n, t * HOP + N_FFT // 2)
            profile[low:high] = 1.0
            before, after = fade[FADE - min(FADE, low):], fade.flip(0)[:max(0, min(FADE, n - high))]
            profile[low - before.numel():low] = before
            profile[high:high + after.numel()] = after
            gain = torch.minimum(gain, 1.0 - (1.0 - torch.pow(10.0, -cut[:, t:t + 1] / 20.0)) * profile)
        candidate = delta * gain
        candidate_worst = _worst_ratio_db(candidate, allowed)
        better = (candidate.norm(dim=-1) * torch.pow(10.0, -candidate_worst.amax(-1) / 20.0)
                  > delta.norm(dim=-1) * torch.pow(10.0, -worst.amax(-1) / 20.0))
        delta = torch.where(better[:, None], candidate, delta)
        worst = torch.where(better[:, None], candidate_worst, worst)
    return delta


@lru_cache(maxsize=16)
def _frame_weights(num_samples: int) -> tuple[object, np.ndarray]:
    """The (frames, n) sparse matrix W[t, n] = w^2(n - 512 t + N/2) of the padded STFT, and the frames' columns."""
    from scipy import sparse

    w2 = np.hanning(N_FFT + 1)[:-1] ** 2  # periodic Hann, squared
    rows, cols, values = [], [], []
    for t in range(num_frames(num_samples)):  # once per length (cached)
        start = t * HOP - N_FFT // 2
        n = np.arange(max(0, start), min(num_samples, start + N_FFT))
        rows.append(np.full(n.size, t))
        cols.append(n)
        values.append(w2[n - start])
    matrix = sparse.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(num_frames(num_samples), num_samples))
    return matrix, np.asarray(matrix.sum(axis=0)).ravel()


def _upper_bound(allowed: torch.Tensor, num_samples: int) -> torch.Tensor:
    """An upper bound on ||delta|| over all delta with |STFT(delta)| <= A, per row of ``allowed`` (B, frames, 1025).

    Parseval per frame: sum_n W[t, n] delta_n^2 = (1/N) sum_k m_k |D(t, k)|^2 <= E_t := (1/N) sum_k m_k A(t, k)^2
    (m_k = 1 at k = 0 and N/2, else 2). For any lambda >= 0 with g = W^T lambda >= 1 at every sample,
    ||delta||^2 <= sum_n g_n delta_n^2 = sum_t lambda_t sum_n W[t, n] delta_n^2 <= sum_t lambda_t E_t. lambda is the
    dual linear programme's solution on every 4th sample, then divided by min_n g_n so that it holds at all samples.
    """
    from scipy.optimize import linprog

    weights = torch.full((NUM_BINS,), 2.0, dtype=torch.float64, device=allowed.device)
    weights[0] = weights[-1] = 1.0
    energy = ((allowed.square() * weights).sum(-1) / N_FFT).cpu().numpy()       # (B, frames)
    matrix, envelope = _frame_weights(num_samples)
    sampled = matrix[:, ::4].T.tocsr()
    bounds = []
    for e in energy:
        lam = np.full(e.shape, 1.0 / envelope.min())   # uniform lambda: the plain Parseval bound
        if e.any():  # solved on e / max(e), so that a gain on the signal leaves the programme unchanged
            solution = linprog(e / e.max(), A_ub=-sampled, b_ub=-np.ones(sampled.shape[0]), bounds=(0, None),
                               method="highs")
            if solution.status == 0:
                lam = solution.x
        lam = lam / (matrix.T @ lam).min()
        bounds.append(math.sqrt(max(min(float(lam @ e), float(e.sum()) / envelope.min()), 0.0)))
    return torch.tensor(bounds, dtype=torch.float64, device=allowed.device)


def _scale_to_margin(delta: torch.Tensor, threshold: MaskingThreshold, margin_db: float, dtype: torch.dtype
                     ) -> torch.Tensor:
    """Scale each row so that its measured max excess is -margin, measured after casting to ``dtype``.

    The first pass is exact in float64; if the cast's round-off lifts a row above -margin, that row is scaled down
    again with a little room (a few units of ``dtype``'s round-off), until every row measures at or below -margin.
    """
    theta = threshold.theta_db.reshape(-1, *threshold.theta_db.shape[-2:])
    p_max = threshold.psd_max_db.reshape(-1)
    room = 1.0 - 8.0 * torch.finfo(dtype).eps
    measured = delta
    for attempt in range(8):
        excess = (_anchor(_raw_db(_stft(measured)), p_max) - theta).amax(dim=(-2, -1))
        if attempt and bool((excess <= -margin_db).all()):
            return measured.to(dtype)
        gain = torch.pow(10.0, (-margin_db - excess) / 20.0)
        gain = torch.where(torch.isfinite(excess), gain, 0.0)  # over digital silence nothing is imperceptible
        if attempt:
            gain = torch.where(excess <= -margin_db, 1.0, gain * room)  # only rows the cast lifted
        measured = (measured * gain[:, None]).to(dtype).to(torch.float64)
    raise RuntimeError("could not scale the perturbation to the margin within float round-off")  # pragma: no cover


def imperceptible_budget(waveform: Array, margin_db: float = 0.0, seed: int = 0, iterations: int = 64,
                         threshold: MaskingThreshold | None = None, sample_rate: int = SAMPLE_RATE
                         ) -> ImperceptibleBudget:
    """The imperceptible budget of each clean utterance of ``waveform`` (..., n): see :class:`ImperceptibleBudget`.

    margin_db: the perturbation's PSD stays at or below theta - margin_db in every bin (0: at the threshold).
    seed: the random phases, drawn per utterance from a CPU generator: the result does not depend on the device
        (beyond round-off) nor on the other utterances of the batch.
    iterations: projection steps (the first min(16, iterations / 4) Griffin-Lim, the rest clipping with momentum);
        0 scales the random-phase start directly. More steps, a larger budget (64: tightness about 0.5 on speech).
    threshold: a :func:`masking_threshold` of the same waveform, to reuse it.
    Deterministic given the seed.
    """
    check_sample_rate(sample_rate)
    margin_db = _check_finite_number("margin_db", margin_db, 0.0, 100.0)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations <= 10_000:
        raise ValueError(f"iterations={iterations!r} must be an integer in [0, 10000]")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2^63)")
    x, lead, dtype = _as_batch(waveform)
    if threshold is None:
        threshold = masking_threshold(x, sample_rate)
    elif math.prod(threshold.batch_shape) != x.shape[0]:
        raise ValueError(f"threshold is for a batch of shape {threshold.batch_shape}, the waveform's is {lead}")
    _check_match(x.shape[-1], threshold)
    allowed = threshold.allowed_magnitude(margin_db)
    delta = _shape_to_threshold(allowed, x.shape[-1], seed, iterations)
    delta = _even_out_frames(delta, allowed)
    delta = _scale_to_margin(delta, threshold, margin_db, dtype)

    measured = delta.to(torch.float64)
    slack = threshold.theta_db.reshape(allowed.shape) - _anchor(_raw_db(_stft(measured)),
                                                               threshold.psd_max_db.reshape(-1))
    budget = measured.norm(dim=-1)
    upper = _upper_bound(allowed, x.shape[-1])
    finite_slack = torch.where(torch.isfinite(slack), slack, torch.finfo(torch.float64).max)

    def shaped(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(lead)

    return ImperceptibleBudget(
        budget=shaped(budget), perturbation=delta.reshape(*lead, x.shape[-1]), upper_bound=shaped(upper),
        tightness=shaped(budget / upper), max_excess_db=shaped(-slack.amin(dim=(-2, -1))),
        median_slack_db=shaped(finite_slack.flatten(1).median(dim=-1).values),
        within_3db=shaped((slack <= margin_db + 3.0).to(torch.float64).mean(dim=(-2, -1))), margin_db=margin_db)


# --- perturbations of an exact norm ------------------------------------------------------------------------------
def _norms(norm: float | Array, lead: tuple[int, ...], device: torch.device) -> torch.Tensor:
    r = _per_item(norm, lead, device, "norm")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
        raise ValueError(f"norm={norm} must be finite and >= 0")
    return r


def random_perturbation(shape: tuple[int, ...], norm: float | Array, event_dims: int = 1,
                        generator: torch.Generator | None = None, seed: int | None = None,
                        dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
                        ) -> torch.Tensor:
    """Perturbations of ``shape`` in uniformly random directions, each of L2 norm ``norm`` (a number or one per item).

    The norm is taken over the last ``event_dims`` dimensions (1 for waveforms (..., n); 2 for a magnitude
    spectrogram (..., frames, 257)). Directions are normalised i.i.d. Gaussians in float64, drawn from ``generator``
    on its device, or from a CPU generator seeded with ``seed`` (the same draws whatever ``device`` they are moved
    to). The norm is exact in float64; a float32 result is within float32 round-off (relative 1e-7) of it.
    """
    if not 1 <= event_dims <= len(shape):
        raise ValueError(f"event_dims={event_dims} must be in [1, {len(shape)}] for shape {shape}")
    if generator is None:
        if seed is None:
            raise ValueError("give a generator or a seed: perturbations must be reproducible")
        generator = torch.Generator().manual_seed(seed)
    lead = tuple(shape[:len(shape) - event_dims])
    direction = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    direction = direction.to(device).reshape(math.prod(lead), -1)
    r = _norms(norm, lead, direction.device)
    out = direction * (r / direction.norm(dim=-1))[:, None]
    return out.reshape(shape).to(dtype)


def shaped_perturbation(waveform: Array, norm: float | Array, seed: int = 0, iterations: int = 64,
                        budget: ImperceptibleBudget | None = None, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The masking-shaped perturbation of each utterance, scaled to waveform L2 norm ``norm`` (..., n).

    Its direction is that of :func:`imperceptible_budget` (the threshold's shape: the least audible direction for its
    norm that the construction finds); at norm r its max excess over theta is -margin + 20 log10(r / budget) dB, so
    it is inaudible exactly while r <= budget. Pass ``budget`` to reuse a computed one. The norm is exact in float64,
    within float32 round-off after the cast to the waveform's dtype.
    """
    x, lead, dtype = _as_batch(waveform)
    if budget is None:
        budget = imperceptible_budget(x, seed=seed, iterations=iterations, sample_rate=sample_rate)
    base = budget.perturbation.reshape(-1, x.shape[-1]).to(torch.float64)
    if base.shape != x.shape:
        raise ValueError(f"budget is for perturbations of shape {tuple(base.shape)}, the waveform's is "
                         f"{tuple(x.shape)}")
    length = base.norm(dim=-1)
    if bool((length == 0).any()):
        raise ValueError("an utterance has budget 0 (digital silence): it has no imperceptible direction")
    r = _norms(norm, lead, x.device)
    return (base * (r / length)[:, None]).reshape(*lead, x.shape[-1]).to(dtype)


# --- magnitude-spectrogram resynthesis ---------------------------------------------------------------------------
def _deemphasize(y: torch.Tensor, coefficient: float, block: int = 256) -> torch.Tensor:
    """Invert pre-emphasis: x[t] = y[t] + p x[t-1], x[-1] = 0, for (B, n) float64, in blocks (no loop over samples).

    Within a block x = L y with L[j, i] = p^(j - i) (i <= j); the blocks' last samples obey
    x_b = sum_{c <= b} p^(block (b - c)) local_c, and each block adds p^(j + 1) times the previous block's last.
    """
    batch, n = y.shape
    blocks = -(-n // block)
    padded = torch.nn.functional.pad(y, (0, blocks * block - n)).reshape(batch, blocks, block)
    j = torch.arange(block, dtype=torch.float64, device=y.device)
    lags = j[:, None] - j[None, :]
    within = torch.where(lags >= 0, coefficient ** lags.clamp_min(0), 0.0)           # (block, block)
    local = padded @ within.T                                                          # (B, blocks, block)
    b = torch.arange(blocks, dtype=torch.float64, device=y.device)
    block_lags = b[:, None] - b[None, :]
    across = torch.where(block_lags >= 0, coefficient ** (block * block_lags.clamp_min(0)), 0.0)
    last = local[..., -1] @ across.T                                                   # x at each block's end
    previous = torch.nn.functional.pad(last[:, :-1], (1, 0))                           # x before each block
    x = local + previous[..., None] * coefficient ** (j + 1)
    return x.reshape(batch, -1)[:, :n]


def magspec_to_waveform(magspec: Array, clean_waveform: Array, frontend: DeepSpeakerFrontend) -> torch.Tensor:
    """Resynthesise a (perturbed) Deep Speaker magnitude spectrogram (..., frames, 257) to a waveform (..., n).

    With the clean utterance's phase phi (pre-emphasis 0.97, rectangular 400-sample frames every 160, zero-padded
    last frame, rfft(512)): Y = |M| e^(i phi); each frame is the first 400 samples of irfft(Y, 512) (the
    least-squares inverse of zero-padding + DFT); overlapping frames are averaged per sample (the least-squares
    inverse of the framing); then pre-emphasis is inverted, x[t] = y[t] + 0.97 x[t-1]. In float64 throughout: the
    inverse pre-emphasis amplifies errors by up to 1 / (1 - 0.97) = 33. The result's magspec equals M only when M is
    a consistent magnitude spectrogram (e.g. the clean one); otherwise it is the least-squares compromise.
    Returned in the clean waveform's dtype, on its device.
    """
    x, lead, dtype = _as_batch(clean_waveform, "clean_waveform", min_samples=1)
    m = torch.as_tensor(magspec).to(device=x.device, dtype=torch.float64)
    frames_clean = frontend.frame(frontend.preemphasize(x))                            # (B, F, L)
    spectrum = torch.fft.rfft(frames_clean, n=frontend.nfft)
    expected = (*lead, *spectrum.shape[-2:])
    if tuple(m.shape) != expected:
        raise ValueError(f"magspec has shape {tuple(m.shape)}; the clean waveform's is {expected}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError("magspec has non-finite values")
    magnitude = spectrum.abs()
    phase = torch.where(magnitude > 0, spectrum / magnitude.clamp_min(1e-300), 1.0 + 0j)
    frames = torch.fft.irfft(m.reshape(spectrum.shape) * phase, n=frontend.nfft)[..., :frontend.frame_length]
    length = (frames.shape[-2] - 1) * frontend.hop_length + frontend.frame_length   # the zero-padded signal
    fold = torch.nn.functional.fold
    kernel, stride = (1, frontend.frame_length), (1, frontend.hop_length)
    summed = fold(frames.transpose(-1, -2), (1, length), kernel, stride=stride)       # (B, 1, 1, length)
    covers = fold(torch.ones_like(frames[:1]).transpose(-1, -2), (1, length), kernel, stride=stride)
    y = (summed / covers).reshape(x.shape[0], length)[:, :x.shape[-1]]
    return _deemphasize(y, frontend.preemphasis).reshape(*lead, x.shape[-1]).to(dtype)


# --- objective quality -------------------------------------------------------------------------------------------
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
