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

Modules, each one job (a module imports only those above it; none imports this package's ``__init__``)::

    grid           constants, the frequency grid (Bark, threshold in quiet), analysis frames
    inputs         checks and conversions of inputs (sample rate, waveform batches, per-utterance values)
    spectrum       the STFT, its inverse and the 96-dB PSD scale
    masking        the global masking threshold (MaskingThreshold, masking_threshold, threshold_from_psd)
    audibility     a perturbation's PSD on the clean scale and its excess over theta (audibility, excess_db)
    budget_bound   the linear-programme upper bound on the largest imperceptible norm
    budget         the imperceptible budget (ImperceptibleBudget, imperceptible_budget)
    perturbations  perturbations of an exact norm (random_perturbation, shaped_perturbation)
    resynthesis    magnitude spectrogram -> waveform (magspec_to_waveform)
    quality        wideband PESQ and STOI (QualityScores, quality_scores)
"""

from audiocert.psychoacoustics.audibility import Audibility, audibility, excess_db, perturbation_psd_db
from audiocert.psychoacoustics.budget import (
    FADE,
    GRIFFIN_LIM_STEPS,
    MOMENTUM,
    ImperceptibleBudget,
    imperceptible_budget,
)
from audiocert.psychoacoustics.budget_bound import _frame_weights as _frame_weights  # tested directly
from audiocert.psychoacoustics.grid import (
    ATH_FLOOR_BARK,
    HOP,
    N_FFT,
    NUM_BINS,
    REFERENCE_DB,
    SAMPLE_RATE,
    WINDOW_GAIN,
    Array,
    absolute_threshold_db,
    bark,
    frequency_grid,
    num_frames,
)
from audiocert.psychoacoustics.inputs import check_sample_rate
from audiocert.psychoacoustics.masking import PRUNE_BARK, MaskingThreshold, masking_threshold, threshold_from_psd
from audiocert.psychoacoustics.perturbations import random_perturbation, shaped_perturbation
from audiocert.psychoacoustics.quality import QualityScores, quality_scores
from audiocert.psychoacoustics.resynthesis import _deemphasize as _deemphasize  # tested directly
from audiocert.psychoacoustics.resynthesis import magspec_to_waveform

__all__ = [
    "ATH_FLOOR_BARK",
    "FADE",
    "GRIFFIN_LIM_STEPS",
    "HOP",
    "MOMENTUM",
    "NUM_BINS",
    "N_FFT",
    "PRUNE_BARK",
    "REFERENCE_DB",
    "SAMPLE_RATE",
    "WINDOW_GAIN",
    "Array",
    "Audibility",
    "ImperceptibleBudget",
    "MaskingThreshold",
    "QualityScores",
    "absolute_threshold_db",
    "audibility",
    "bark",
    "check_sample_rate",
    "excess_db",
    "frequency_grid",
    "imperceptible_budget",
    "magspec_to_waveform",
    "masking_threshold",
    "num_frames",
    "perturbation_psd_db",
    "quality_scores",
    "random_perturbation",
    "shaped_perturbation",
    "threshold_from_psd",
]
