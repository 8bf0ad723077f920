"""The imperceptible budget of clean utterances: the largest perturbation under theta - margin that is found.

Built (random phases, Griffin-Lim and clipping steps, frame evening, one exact scale), then measured; its norm is
a lower bound on the largest imperceptible norm, and :mod:`audiocert.psychoacoustics.budget_bound` gives the upper
bound. See the package docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from audiocert.psychoacoustics.audibility import _check_match
from audiocert.psychoacoustics.budget_bound import _upper_bound
from audiocert.psychoacoustics.grid import HOP, N_FFT, SAMPLE_RATE, Array
from audiocert.psychoacoustics.inputs import _as_batch, _check_finite_number, check_sample_rate
from audiocert.psychoacoustics.masking import MaskingThreshold, masking_threshold
from audiocert.psychoacoustics.spectrum import _anchor, _istft, _raw_db, _stft

GRIFFIN_LIM_STEPS = 16               # budget construction: Griffin-Lim steps before the clipping steps
MOMENTUM = 0.9                       # budget construction: momentum of the clipping steps
FADE = 512                           # budget construction: samples over which a frame's attenuation fades out


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
