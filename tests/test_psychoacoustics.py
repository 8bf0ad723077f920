"""The psychoacoustic model (audiocert.psychoacoustics): masking threshold, budget, perturbations, resynthesis, quality.

Tolerances: the model computes in float64, so a threshold that is a closed form of the input (a pure tone, silence,
an independent re-derivation on the same float64 samples) agrees to round-off; 1e-6 dB leaves six orders of magnitude
of room above float64 round-off (about 1e-13 dB here) and would still catch any formula or selection error (the
smallest term of the model, the 0.275 z offset, moves theta by more than 1e-3 dB per 0.01 Bark). Masker selection is
a comparison of float64 values; a flip between two implementations would need two adjacent bins equal to 1e-15
relative, which the fixed test signals do not have.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
import torch
from scipy.optimize import brentq

from audiocert import psychoacoustics as pa
from audiocert.corpus import synthesize_utterance, voice_parameters
from audiocert.frontend import DeepSpeakerFrontend

N_FFT, HOP, SR = 2048, 512, 16000
CROP = 25_840  # the 160-frame Deep Speaker crop


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The model's tensors are small (tens of frames x 1025 bins): intra-op threads only contend on a loaded runner
    (measured 3-10x slower with 2 threads beside other jobs), so this module runs single-threaded, then restores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def speech(count: int, length: int, seed: int = 0) -> np.ndarray:
    """``count`` synthetic-corpus utterances, cropped to ``length`` samples after the first 0.25 s (float32)."""
    voices = voice_parameters(seed, count)
    crops = []
    for i, voice in enumerate(voices):
        audio, _ = synthesize_utterance(voice, seed, i)
        assert audio.size >= 4000 + length
        crops.append(audio[4000:4000 + length])
    return np.stack(crops)


@pytest.fixture(scope="module")
def utterances() -> np.ndarray:
    return speech(3, CROP)


def tone(frequency: float, amplitude: float = 1.0, n: int = 16_384, dtype=np.float64) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * frequency * np.arange(n) / SR)).astype(dtype)


def interior(threshold: pa.MaskingThreshold) -> slice:
    """Frames whose window lies inside the signal (the zero-padded edge frames see an abrupt onset)."""
    frames = threshold.theta_db.shape[-2]
    return slice(2, frames - 2)


def bark_hz(f):
    return 13 * np.arctan(0.00076 * f) + 3.5 * np.arctan((f / 7500) ** 2)


def terhardt(f):
    khz = f / 1000
    return 3.64 * khz ** -0.8 - 6.5 * np.exp(-0.6 * (khz - 3.3) ** 2) + 1e-3 * khz ** 4 - 12


# --- the threshold on closed forms ---------------------------------------------------------------------------------
def test_silence_has_the_threshold_in_quiet_and_nothing_is_imperceptible():
    th = pa.masking_threshold(np.zeros((2, 8192), dtype=np.float32))
    freqs = np.arange(1025) * SR / N_FFT
    ath = terhardt(np.maximum(freqs, brentq(lambda f: bark_hz(f) - 1, 1, 1000)))
    assert th.theta_db.shape == (2, 1 + 8192 // HOP, 1025)
    assert torch.equal(th.theta_db, th.ath_db.expand_as(th.theta_db))
    np.testing.assert_allclose(th.ath_db.numpy(), ath, rtol=0, atol=1e-9)
    assert bool((th.psd_max_db == -math.inf).all()) and bool((th.psd_db == -math.inf).all())
    assert int(th.num_maskers.sum()) == 0
    whisper = 1e-9 * np.random.default_rng(0).standard_normal((2, 8192))
    a = pa.audibility(whisper, th)  # any sound is infinitely louder than digital silence
    assert bool((a.excess_db == math.inf).all()) and bool((a.fraction_above == 1).all())
    b = pa.imperceptible_budget(np.zeros((2, 8192)), threshold=th, iterations=4)
    assert bool((b.budget == 0).all()) and bool((b.upper_bound == 0).all()) and bool(b.tightness.isnan().all())


def test_full_scale_1khz_tone_masks_as_computed_by_hand():
    th = pa.masking_threshold(tone(1000.0))  # bin 128 exactly: the Hann window leaves bins 127-129 only
    inside = interior(th)
    masker = th.masker_db[inside]
    assert bool(torch.isfinite(masker[:, 128]).all())
    assert int(torch.isfinite(masker).sum()) == masker.shape[0]  # the tone's bin only, every interior frame
    p_tm = 96 + 10 * math.log10(1 + 2 * 0.25)  # neighbours at -6.02 dB (Hann: 1/2 of the peak amplitude)
    np.testing.assert_allclose(masker[:, 128].numpy(), p_tm, atol=1e-9)
    freqs = np.arange(1025) * SR / N_FFT
    z = bark_hz(freqs)
    ath = terhardt(np.maximum(freqs, brentq(lambda f: bark_hz(f) - 1, 1, 1000)))
    z_m = bark_hz(1000.0)
    for distance in (-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 5.0, 10.0):
        k = int(np.argmin(np.abs(z - (z_m + distance))))
        dz = z[k] - z_m
        slope = 27.0 if dz <= 0 else -27.0 + 0.37 * (p_tm - 40)
        individual = p_tm - 6.025 - 0.275 * z_m + slope * dz
        by_hand = 10 * math.log10(10 ** (individual / 10) + 10 ** (ath[k] / 10))
        np.testing.assert_allclose(th.theta_db[inside, k].numpy(), by_hand, atol=1e-9, err_msg=f"dz={dz:.3f} Bark")


def test_threshold_is_monotone_in_the_tone_level():
    reference = float(pa.masking_threshold(tone(1000.0)).psd_max_db)  # one fixed 96-dB anchor for every level
    thetas = [pa.masking_threshold(tone(1000.0, 10 ** (-level / 20)), reference_db=reference).theta_db
              for level in (60, 40, 20, 10, 0)]
    for quieter, louder in zip(thetas, thetas[1:], strict=False):
        assert bool((louder >= quieter - 1e-9).all())
        assert bool((louder[2:-2, 128] > quieter[2:-2, 128] + 5).all())  # at the masker: about 1 dB per dB
    # anchored at its own maximum (Qin), the threshold does not depend on the level at all
    own = [pa.masking_threshold(tone(1000.0, a)).theta_db for a in (1e-3, 1.0)]
    torch.testing.assert_close(own[0], own[1], rtol=0, atol=1e-9)


def test_threshold_in_quiet_floor_leaves_no_round_off_maskers():
    # float32 samples carry round-off of about -150 dB: local maxima of the PSD everywhere, also below 1 Bark
    th = pa.masking_threshold(tone(1000.0, dtype=np.float32))
    inside = interior(th)
    psd = th.psd_db[inside]
    low = psd[:, 1:12]
    round_off_maxima = (low > psd[:, 0:11]) & (low > psd[:, 2:13])
    assert bool(round_off_maxima.any())  # with Qin's ATH = -inf below 1 Bark these pass the quiet test
    assert int(torch.isfinite(th.masker_db[inside]).sum()) == psd.shape[0]  # here: the tone's bin only
    assert bool(torch.isfinite(th.theta_db).all())


def test_ath_is_applied_to_every_masker_first():
    # a weak tone at 6 kHz, isolated (no other masker within 0.5 Bark), under the threshold in quiet there
    x = tone(500.0) + tone(6000.0, 10 ** (-110 / 20))
    th = pa.masking_threshold(x)
    inside = interior(th)
    psd = th.psd_db[inside]
    assert bool(((psd[:, 768] > psd[:, 767]) & (psd[:, 768] > psd[:, 769])).all())  # a local maximum
    assert float(th.ath_db[768]) > float(psd[:, 768].max()) + 1.77  # its P_TM (peak + 1.76 dB) is below ATH
    assert not bool(torch.isfinite(th.masker_db[inside, 768]).any())  # dropped (Qin's code keeps isolated ones)
    assert bool(torch.isfinite(th.masker_db[inside, 64]).all())


def test_pruning_compares_the_bark_positions_of_the_maskers():
    # 500 Hz and 4 kHz are 11.6 Bark apart: both stay. ART's code compares the Bark values of bins 0 and 1 (the
    # maskers' ranks), 0.1 Bark apart, and would drop the weaker one.
    th = pa.masking_threshold(tone(500.0, 0.5) + tone(4000.0, 0.05))
    kept = torch.isfinite(th.masker_db[interior(th)])
    assert bool(kept[:, 64].all()) and bool(kept[:, 512].all()) and int(kept.sum()) == 2 * kept.shape[0]


@pytest.mark.parametrize(("a", "b", "winner"), [(1.0, 0.3, 128), (0.3, 1.0, 133)])
def test_of_two_maskers_within_half_a_bark_the_smaller_is_dropped(a, b, winner):
    assert bark_hz(133 * SR / N_FFT) - bark_hz(128 * SR / N_FFT) < 0.5
    th = pa.masking_threshold(tone(1000.0, a) + tone(133 * SR / N_FFT, b))
    kept = torch.isfinite(th.masker_db[interior(th)])
    assert bool(kept[:, winner].all()) and int(kept.sum()) == kept.shape[0]


def chain_psd(levels: list[float], start_bin: int = 100, spacing_bark: float = 0.4) -> tuple[torch.Tensor, list[int]]:
    """A flat -100 dB PSD frame with single-bin peaks at the given levels, ``spacing_bark`` apart from start_bin."""
    z = bark_hz(np.arange(1025) * SR / N_FFT)
    bins = [start_bin]
    for _ in levels[1:]:
        bins.append(int(np.argmin(np.abs(z - (z[bins[-1]] + spacing_bark)))))
    psd = torch.full((1025,), -100.0, dtype=torch.float64)
    for k, level in zip(bins, levels, strict=True):
        psd[k] = level
    return psd, bins


@pytest.mark.parametrize(("levels", "kept_ranks"), [
    ([60.0, 50.0, 40.0], [0, 2]),  # A keeps B off; C is 0.8 Bark from A, so it starts a new group
    ([40.0, 50.0, 60.0], [2]),     # B drops A, C drops B: the scan's current masker moves up
    ([50.0, 60.0, 40.0], [1]),
])
def test_the_half_bark_scan_of_qin(levels, kept_ranks):
    psd, bins = chain_psd(levels)
    z = bark_hz(np.array(bins) * SR / N_FFT)
    assert all(0.35 < d < 0.45 for d in np.diff(z))
    _, masker = pa.threshold_from_psd(psd)
    assert torch.nonzero(torch.isfinite(masker)).flatten().tolist() == [bins[i] for i in kept_ranks]


def test_the_window_scale_cancels_and_a_perturbation_equal_to_the_signal_has_its_psd(utterances):
    th = pa.masking_threshold(utterances)
    torch.testing.assert_close(pa.perturbation_psd_db(utterances, th.psd_max_db), th.psd_db, rtol=0, atol=1e-9)
    assert torch.allclose(th.psd_db.amax(dim=(-2, -1)), torch.tensor(96.0, dtype=torch.float64))
    # the raw level: a full-scale bin-centred sine has |X| = N/4 (Hann coherent gain 1/2), so p = 10 log10(8/3 / 16)
    np.testing.assert_allclose(float(pa.masking_threshold(tone(1000.0)).psd_max_db), 10 * math.log10(8 / 3 / 16),
                               atol=1e-9)


def test_every_sample_is_analysed():
    # a click on the first samples: under center=False it would sit under w[0] = 0 and be invisible
    th = pa.masking_threshold(tone(1000.0, 0.5, n=8192))
    click = np.zeros(8192)
    click[:8] = 0.05
    psd = pa.perturbation_psd_db(click, th.psd_max_db)
    assert bool(torch.isfinite(psd[0]).all())
    assert bool(pa.audibility(click, th).audible)


def reference_raw_psd(x: np.ndarray) -> np.ndarray:
    """10 log10 |sqrt(8/3) X / N|^2 of frames every 512 samples of x zero-padded by N/2 (numpy, periodic Hann)."""
    window = scipy.signal.get_window("hann", N_FFT)  # periodic
    padded = np.pad(x.astype(np.float64), N_FFT // 2)
    frames = np.stack([padded[t * HOP:t * HOP + N_FFT] for t in range(1 + x.size // HOP)])
    spectrum = np.fft.rfft(frames * window, axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10((np.sqrt(8 / 3) * np.abs(spectrum) / N_FFT) ** 2)


def reference_threshold(x: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """A straightforward per-frame, per-masker re-derivation of the model in numpy/scipy (slow, readable)."""
    raw = reference_raw_psd(x)
    psd = 96 - raw.max() + raw
    freqs = np.arange(1025) * SR / N_FFT
    z = bark_hz(freqs)
    ath = terhardt(np.maximum(freqs, brentq(lambda f: bark_hz(f) - 1, 1, 1000)))
    theta, kept_bins = np.empty_like(psd), []
    for t, frame in enumerate(psd):
        maskers = []
        for k in scipy.signal.argrelmax(frame)[0]:
            power = 10 * np.log10(sum(10 ** (frame[k + d] / 10) for d in (-1, 0, 1)))
            if power >= ath[k]:
                maskers.append((k, power))
        survivors, current = [], None
        for k, power in maskers:
            if current is None:
                current = (k, power)
            elif z[k] - z[current[0]] < 0.5:
                if power > current[1]:
                    current = (k, power)
            else:
                survivors.append(current)
                current = (k, power)
        if current is not None:
            survivors.append(current)
        total = 10 ** (ath / 10)
        for k, power in survivors:
            dz = z - z[k]
            spread = np.where(dz <= 0, 27 * dz, (-27 + 0.37 * max(power - 40, 0)) * dz)
            total = total + 10 ** ((power - 6.025 - 0.275 * z[k] + spread) / 10)
        theta[t] = 10 * np.log10(total)
        kept_bins.append([k for k, _ in survivors])
    return theta, kept_bins


def test_agrees_with_an_independent_re_derivation_on_speech():
    x = speech(3, 8192, seed=5)
    th = pa.masking_threshold(x)
    for i in range(3):
        theta, kept = reference_threshold(x[i])
        np.testing.assert_allclose(th.theta_db[i].numpy(), theta, rtol=0, atol=1e-6)
        assert [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in th.masker_db[i]] == kept
        assert max(len(k) for k in kept) > 10  # speech: many maskers, so the scan and spreading are exercised
    # the budget's perturbation, measured independently against the independent threshold, stays under it
    b = pa.imperceptible_budget(x, margin_db=0.5, iterations=8, threshold=th)
    for i in range(3):
        theta, _ = reference_threshold(x[i])
        psd_delta = 96 - reference_raw_psd(x[i]).max() + reference_raw_psd(b.perturbation[i].numpy())
        assert -0.5 - 1e-3 < (psd_delta - theta).max() <= -0.5 + 1e-6


def test_batches_of_any_shape_match_single_utterances(utterances):
    x = utterances[:, :10_000]
    batched = pa.masking_threshold(x.reshape(3, 1, -1))
    assert batched.theta_db.shape == (3, 1, 1 + 10_000 // HOP, 1025) and batched.psd_max_db.shape == (3, 1)
    for i in range(3):
        single = pa.masking_threshold(torch.from_numpy(x[i]))
        assert single.psd_max_db.shape == ()
        torch.testing.assert_close(batched.theta_db[i, 0], single.theta_db, rtol=0, atol=0)
    # perturbations with extra leading dims (draws) broadcast against the threshold's batch
    draws = np.stack([x, 0.5 * x])
    psd = pa.perturbation_psd_db(draws, batched.psd_max_db[:, 0])
    torch.testing.assert_close(psd[0], batched.psd_db[:, 0], rtol=0, atol=1e-9)
    torch.testing.assert_close(psd[1], batched.psd_db[:, 0] - 20 * math.log10(2), rtol=0, atol=1e-9)


def test_bad_input_is_named():
    x = np.zeros(4096, dtype=np.float32)
    with pytest.raises(ValueError, match=r"sample_rate=44100.*resample.*dataset.resample=true"):
        pa.masking_threshold(x, sample_rate=44100)
    with pytest.raises(ValueError, match=r"2047 samples, fewer than one analysis frame \(2048"):
        pa.masking_threshold(np.zeros(2047))
    with pytest.raises(ValueError, match="non-finite"):
        pa.masking_threshold(np.r_[x, np.nan])
    with pytest.raises(ValueError, match="float"):
        pa.masking_threshold(np.zeros(4096, dtype=np.int16))
    with pytest.raises(ValueError, match="reference_db"):
        pa.masking_threshold(x, reference_db=math.nan)
    th = pa.masking_threshold(x)
    with pytest.raises(ValueError, match="4000 samples but the threshold was computed for 4096"):
        pa.audibility(np.zeros(4000), th)
    with pytest.raises(ValueError, match="margin_db"):
        pa.imperceptible_budget(x, margin_db=-1)
    with pytest.raises(ValueError, match="iterations"):
        pa.imperceptible_budget(x, iterations=2.5)
    with pytest.raises(ValueError, match="sample_rate=8000"):
        pa.imperceptible_budget(x, sample_rate=8000)


# --- the imperceptible budget ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def budget(utterances) -> tuple[pa.MaskingThreshold, pa.ImperceptibleBudget]:
    x = torch.from_numpy(utterances).double()
    th = pa.masking_threshold(x)
    return th, pa.imperceptible_budget(x, margin_db=1.0, threshold=th)


def test_a_perturbation_at_threshold_minus_1db_is_inaudible_plus_1db_in_one_bin_audible(budget):
    th, b = budget
    a = pa.audibility(b.perturbation, th)
    assert bool((a.excess_db <= -1.0).all()) and bool((a.excess_db > -1.0 - 1e-6).all())
    assert bool((a.fraction_above == 0).all()) and not bool(a.audible.any())
    # lift one bin of an interior frame to +1 dB with a Hann-windowed sinusoid at its frequency and phase: its STFT
    # there is (3 N / 16) e^(i phi) exactly (periodic Hann squared has DFT support 0, +-1, +-2 only)
    excess = pa.excess_db(b.perturbation, th)[0]
    frames = excess.shape[0]
    region = excess[2:frames - 2, 2:1023]
    t, k = divmod(int(region.argmax()), region.shape[1])
    t, k = t + 2, k + 2
    start = t * HOP - N_FFT // 2
    n = np.arange(N_FFT)
    window = scipy.signal.get_window("hann", N_FFT)
    delta = b.perturbation[0].numpy().copy()
    frame_spectrum = np.fft.rfft(window * delta[start:start + N_FFT])[k]
    target = abs(frame_spectrum) * 10 ** ((1.0 - float(excess[t, k])) / 20)
    amplitude = (target - abs(frame_spectrum)) / (3 * N_FFT / 16)
    delta[start:start + N_FFT] += amplitude * window * np.cos(2 * np.pi * k * n / N_FFT + np.angle(frame_spectrum))
    lifted = pa.excess_db(delta, th[0])
    np.testing.assert_allclose(float(lifted[t, k]), 1.0, atol=1e-6)
    a1 = pa.audibility(delta, th[0])
    assert bool(a1.audible) and float(a1.excess_db) >= 1.0 - 1e-6 and float(a1.fraction_above) > 0


def test_budget_is_bracketed_measured_and_reported(budget, utterances):
    th, b = budget
    assert b.perturbation.shape == utterances.shape and b.perturbation.dtype == torch.float64
    torch.testing.assert_close(b.budget, b.perturbation.norm(dim=-1), rtol=0, atol=0)
    assert bool((b.budget < b.upper_bound).all())
    # the construction's regression floor: measured 0.47-0.57 on synthetic speech crops (benchmarks/psychoacoustics.py)
    assert bool((b.tightness > 0.35).all()) and bool((b.tightness <= 1).all())
    torch.testing.assert_close(b.max_excess_db, torch.full((3,), -1.0, dtype=torch.float64), rtol=0, atol=1e-6)
    assert bool((b.median_slack_db > 1).all()) and bool((b.within_3db > 0.1).all())
    # the linear programme's bound is no worse than the plain Parseval bound with the worst window envelope
    allowed = th.allowed_magnitude(1.0)
    weights = torch.tensor([1.0] + [2.0] * 1023 + [1.0], dtype=torch.float64)
    envelope = pa._frame_weights(CROP)[1]
    parseval = torch.sqrt((allowed.square() * weights).sum(dim=(-2, -1)) / (N_FFT * envelope.min()))
    assert bool((b.upper_bound <= parseval + 1e-9).all())
    # the imperceptible perturbation is about as loud as the speech itself under this model (SNR of a few dB)
    snr = 20 * torch.log10(torch.from_numpy(utterances).double().norm(dim=-1) / b.budget)
    assert bool((snr > -3).all()) and bool((snr < 20).all())


def test_budget_is_deterministic_and_independent_of_the_batch(budget, utterances):
    th, b = budget
    alone = pa.imperceptible_budget(torch.from_numpy(utterances[1]).double(), margin_db=1.0)
    assert torch.equal(alone.perturbation, b.perturbation[1])
    other_seed = pa.imperceptible_budget(torch.from_numpy(utterances[1]).double(), margin_db=1.0, seed=1,
                                         iterations=8)
    assert not torch.equal(other_seed.perturbation, alone.perturbation)


def test_budget_scales_linearly_with_the_gain_of_the_signal(utterances):
    x = torch.from_numpy(utterances[:2, :8192]).double()
    base = pa.imperceptible_budget(x, iterations=12)
    for gain in (0.5, 0.3):  # 0.5 is exact in binary floating point; 0.3 is not
        scaled = pa.imperceptible_budget(gain * x, iterations=12)
        torch.testing.assert_close(scaled.budget, gain * base.budget, rtol=1e-9, atol=0)
        # the upper bound comes from a linear programme solved to HiGHS's default tolerances (1e-7)
        torch.testing.assert_close(scaled.tightness, base.tightness, rtol=1e-6, atol=0)
        torch.testing.assert_close(scaled.perturbation, gain * base.perturbation, rtol=0,
                                   atol=1e-9 * float(base.perturbation.abs().max()))


def test_float32_budget_never_exceeds_the_margin(utterances):
    x = utterances[:2, :12_000]
    b = pa.imperceptible_budget(x, margin_db=0.0, iterations=16)
    assert b.perturbation.dtype == torch.float32
    a = pa.audibility(b.perturbation, pa.masking_threshold(x))
    assert bool((a.excess_db <= 0).all()) and bool((a.excess_db > -1e-3).all())


# --- perturbations of an exact norm ------------------------------------------------------------------------------
def test_shaped_perturbation_has_the_norm_and_is_audible_exactly_beyond_the_budget(budget, utterances):
    th, b = budget
    x = torch.from_numpy(utterances).double()
    for factor in (0.5, 2.0):
        delta = pa.shaped_perturbation(x, factor * b.budget, budget=b)
        torch.testing.assert_close(delta.norm(dim=-1), factor * b.budget, rtol=1e-12, atol=0)
        expected = -1.0 + 20 * math.log10(factor)
        torch.testing.assert_close(pa.audibility(delta, th).excess_db, torch.full((3,), expected,
                                   dtype=torch.float64), rtol=0, atol=1e-6)
    single = pa.shaped_perturbation(utterances[0, :8192], 0.25, iterations=8)  # float32 in, float32 out
    assert single.dtype == torch.float32 and abs(float(single.double().norm()) - 0.25) < 1e-6
    with pytest.raises(ValueError, match="norm"):
        pa.shaped_perturbation(x, -1.0, budget=b)


def test_random_perturbations_have_exact_norms_and_are_reproducible():
    delta = pa.random_perturbation((4, CROP), torch.tensor([0.0, 0.1, 1.0, 7.5]), seed=3)
    assert delta.dtype == torch.float32
    torch.testing.assert_close(delta.double().norm(dim=-1), torch.tensor([0.0, 0.1, 1.0, 7.5], dtype=torch.float64),
                               rtol=1e-6, atol=0)
    spec = pa.random_perturbation((2, 160, 257), 2.0, event_dims=2, generator=torch.Generator().manual_seed(3),
                                  dtype=torch.float64)
    torch.testing.assert_close(spec.flatten(1).norm(dim=-1), torch.full((2,), 2.0, dtype=torch.float64),
                               rtol=1e-12, atol=0)
    assert torch.equal(pa.random_perturbation((4, CROP), 1.0, seed=3), pa.random_perturbation((4, CROP), 1.0, seed=3))
    # directions are isotropic: the mean of many unit directions is near 0 (each coordinate ~ N(0, 1/n) / sqrt(m))
    many = pa.random_perturbation((2000, 16), 1.0, seed=0, dtype=torch.float64)
    assert float(many.mean(0).abs().max()) < 5 / math.sqrt(16 * 2000)  # 5 sigma: fails with probability < 1e-5
    with pytest.raises(ValueError, match="generator or a seed"):
        pa.random_perturbation((2, 10), 1.0)
    with pytest.raises(ValueError, match="norm"):
        pa.random_perturbation((2, 10), math.inf, seed=0)
    with pytest.raises(ValueError, match="event_dims"):
        pa.random_perturbation((2, 10), 1.0, seed=0, event_dims=3)


# --- magnitude-spectrogram resynthesis ---------------------------------------------------------------------------
def round_trip_bound(frontend: DeepSpeakerFrontend, waveform: torch.Tensor, unit_roundoff: float) -> float:
    """max |x_hat - x| <= 1/(1-p) * sqrt(2) * (7 log2(nfft) + 2) * u * max_f ||y_f||_2.

    The magspec carries the rounding of the frontend's pre-emphasis and FFT in its precision u: per frame
    ||Delta Y||_2 <= (eta log2(nfft) + 2 u) sqrt(nfft) ||y_f||_2 with eta <= 7u the FFT's error constant
    (Higham, Accuracy and Stability of Numerical Algorithms, 24.1; |.| is 1-Lipschitz and rounds once more). The
    least-squares inverse of zero-padding + DFT (first 400 samples of irfft) has gain sqrt(2 / nfft) from a
    one-sided spectrum, averaging the frames does not increase the max, and the inverse pre-emphasis, an IIR of
    impulse response p^t, has l-infinity gain sum p^t = 1 / (1 - p) = 33.3.
    """
    frames = frontend.frame(frontend.preemphasize(waveform.double()))
    largest = float(frames.norm(dim=-1).max())
    fft_and_rounding = math.sqrt(2) * (7 * math.log2(frontend.nfft) + 2) * unit_roundoff
    return fft_and_rounding * largest / (1 - frontend.preemphasis)


def test_the_clean_magspec_resynthesises_the_clean_waveform(utterances):
    frontend = DeepSpeakerFrontend()
    x32 = torch.from_numpy(utterances)
    magspec = frontend.to_stage(x32, "magspec")  # float32, as the pipeline computes it
    assert magspec.shape == (3, 160, 257)
    back = pa.magspec_to_waveform(magspec, x32, frontend)
    assert back.dtype == torch.float32 and back.shape == x32.shape
    error = float((back.double() - x32.double()).abs().max())
    bound = round_trip_bound(frontend, x32, 2.0 ** -24) + 2.0 ** -24  # + the final cast to float32
    assert error <= bound, (error, bound)
    x64 = x32.double()
    back64 = pa.magspec_to_waveform(frontend.to_stage(x64, "magspec"), x64, frontend)
    error64 = float((back64 - x64).abs().max())
    assert error64 <= round_trip_bound(frontend, x64, 2.0 ** -53), error64


def test_resynthesis_keeps_the_clean_phase_and_is_exact_for_consistent_magspecs(utterances):
    frontend = DeepSpeakerFrontend()
    x = torch.from_numpy(utterances[:2]).double()
    magspec = frontend.to_stage(x, "magspec")
    # a gain keeps the phase: its magspec resynthesises to the scaled waveform
    torch.testing.assert_close(pa.magspec_to_waveform(1.25 * magspec, x, frontend), 1.25 * x, rtol=0, atol=1e-9)
    # resynthesis then analysis is the orthogonal projection onto consistent spectra, in the norm of the full
    # (two-sided) spectrum: with Y = (M + E) e^(i phi), || |STFT(y)| - M ||_w <= ||Pi Y - X||_w <= ||E||_w
    # (|.| is 1-Lipschitz; X, the clean spectrum, is consistent), weights 1 at DC and Nyquist, 2 elsewhere
    weights = torch.tensor([1.0] + [2.0] * 255 + [1.0], dtype=torch.float64).sqrt()
    noise = pa.random_perturbation(tuple(magspec.shape), 0.5, event_dims=2, seed=0, dtype=torch.float64)
    y = pa.magspec_to_waveform(magspec + noise, x, frontend)
    moved = ((frontend.to_stage(y, "magspec") - magspec) * weights).flatten(1).norm(dim=-1)
    assert bool((moved <= (noise * weights).flatten(1).norm(dim=-1) * (1 + 1e-9)).all())
    assert bool((moved > 0.1).all())  # and it does move
    with pytest.raises(ValueError, match="magspec has shape"):
        pa.magspec_to_waveform(magspec[:, :10], x, frontend)


def test_inverse_pre_emphasis_matches_a_direct_recursion():
    y = np.random.default_rng(0).standard_normal((2, 3000))
    direct = scipy.signal.lfilter([1.0], [1.0, -0.97], y, axis=-1)
    np.testing.assert_allclose(pa._deemphasize(torch.from_numpy(y), 0.97).numpy(), direct, rtol=0, atol=1e-12)


# --- objective quality -------------------------------------------------------------------------------------------
def test_quality_scores_rank_noise_levels_and_refusals_are_nan_with_a_reason(utterances):
    x = utterances[:1, :CROP].astype(np.float64)
    noise = np.random.default_rng(0).standard_normal(x.shape)
    clean_and_noisy = np.concatenate([x, x + 0.003 * noise, x + 0.03 * noise])
    scores = pa.quality_scores(np.repeat(x, 3, axis=0), clean_and_noisy)
    assert scores.pesq.shape == (3,) and scores.pesq_errors == (None, None, None)
    assert scores.pesq[0] > 4.6 and scores.stoi[0] > 0.999  # identical signals: the scales' maxima
    assert scores.pesq[0] > scores.pesq[1] > scores.pesq[2] and scores.stoi[0] > scores.stoi[1] > scores.stoi[2]
    short = pa.quality_scores(x[:, :2000], x[:, :2000])
    assert math.isnan(short.pesq[0]) and "1/4 of a second" in short.pesq_errors[0]
    assert math.isnan(short.stoi[0]) and "Not enough STFT frames" in short.stoi_errors[0]
    silent = pa.quality_scores(np.zeros(8000), x[0, :8000])
    assert silent.pesq.shape == () and math.isnan(float(silent.pesq)) and "silent" in silent.pesq_errors[0]
    with pytest.raises(ValueError, match="sample_rate=8000"):
        pa.quality_scores(x, x, sample_rate=8000)
    with pytest.raises(ValueError, match="must match"):
        pa.quality_scores(x, x[:, :-1])
