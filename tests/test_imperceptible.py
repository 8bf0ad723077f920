"""The imperceptible attack (audiocert.imperceptible): the masking penalty against the psychoacoustic model, Qin's
lambda schedule, the smoothed loss's exact gradient under any chunking, and the search on a closed-form (linear)
classifier whose adversarial examples are known.

Tolerances: the penalty computes the model's PSD in float64 with a floor at -200 dB, so on bins above -150 dB it
equals audiocert.psychoacoustics.perturbation_psd_db to float64 round-off (1e-9 dB leaves four orders of magnitude
of room); the chunked smoothed loss combines float32 log-probabilities exactly by logsumexp, so chunkings agree to
float32 round-off (relative 1e-5).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm
from torch import nn

from audiocert import psychoacoustics as pa
from audiocert.corpus import synthesize_utterance, voice_parameters
from audiocert.imperceptible import (
    FLOOR_DB,
    ImperceptibleSettings,
    MaskingPenalty,
    check_imperceptible_settings,
    imperceptible_attack,
    imperceptible_search,
    next_lambda,
    quietest_order,
    smoothed_log_probability,
)
from audiocert.sampler import Smooth

N = 4096  # two analysis frames of the masking model: enough for a threshold, small for speed

SETTINGS = dict(start=1.0, shrink=0.7, steps=8, samples=8, step_factor=2.0, lambda0=0.05, lambda_up=1.2,
                lambda_down=0.8, up_every=1, down_every=2, candidates=4, n=200, alpha=0.001, batch_size=64)


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: a second intra-op thread only contends on a busy 2-core runner."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    voice = voice_parameters(0, 2)[0]
    audio, _ = synthesize_utterance(voice, 0, 0)
    return torch.tensor(audio[4000:4000 + N], dtype=torch.float32)


@pytest.fixture(scope="module")
def threshold(speech) -> pa.MaskingThreshold:
    return pa.masking_threshold(speech.double())


def settings(**changes) -> ImperceptibleSettings:
    return check_imperceptible_settings({**SETTINGS, **changes})


# --- the penalty ----------------------------------------------------------------------------------------------
def test_penalty_is_zero_under_the_threshold_and_grows_above_it(speech, threshold):
    """The budget's perturbation touches theta (max excess 0); at half its norm every bin is >= 6 dB under theta:
    penalty exactly 0. At twice its norm the max excess is +20 log10 2 dB and the penalty is positive."""
    budget = pa.imperceptible_budget(speech.double(), threshold=threshold, iterations=16, seed=1)
    penalty = MaskingPenalty(threshold)
    d = budget.perturbation.double()[None]
    quiet, quiet_max = penalty(0.5 * d)
    assert float(quiet) == 0.0 and float(quiet_max) == pytest.approx(-20 * math.log10(2), abs=1e-9)
    loud, loud_max = penalty(2.0 * d)
    assert float(loud) > 0 and float(loud_max) == pytest.approx(20 * math.log10(2), abs=1e-9)
    # The penalty is the mean over bins of the dB above theta, bin for bin the model's own excess.
    excess = pa.excess_db(2.0 * d, threshold)
    assert float(loud) == pytest.approx(float(torch.relu(excess).mean()), rel=1e-12)


def test_penalty_psd_is_the_models_and_its_gradient_is_finite_at_zero(speech, threshold):
    generator = torch.Generator().manual_seed(0)
    delta = 0.05 * torch.randn((3, N), generator=generator, dtype=torch.float64)
    delta[2, 1000:3000] = 0.0  # exact zeros in some frames: the model's PSD is -inf there, ours the floor
    penalty = MaskingPenalty(threshold)
    ours = penalty.excess_db(delta) + penalty.theta_db
    model = pa.perturbation_psd_db(delta, threshold.psd_max_db)
    live = model > FLOOR_DB + 50
    assert torch.allclose(ours[live], model[live], rtol=0, atol=1e-9)
    assert bool((ours[~live] >= FLOOR_DB - 1e-9).all())
    start = torch.zeros((1, N), dtype=torch.float64, requires_grad=True)
    value, _ = penalty(start)
    (grad,) = torch.autograd.grad(value.sum(), start)
    assert float(value.detach()) == 0.0 and bool(torch.isfinite(grad).all()) and float(grad.abs().max()) == 0.0


def test_penalty_refuses_silence_and_wrong_shapes(threshold):
    with pytest.raises(ValueError, match="digitally silent"):
        MaskingPenalty(pa.masking_threshold(np.zeros(N)))
    with pytest.raises(ValueError, match="expected"):
        MaskingPenalty(threshold)(torch.zeros((1, N + 1)))


# --- settings and the lambda schedule ----------------------------------------------------------------------------
def test_lambda_schedule_follows_qin():
    """x lambda_up at every up_every-th fooled step, x lambda_down at every down_every-th step that is not."""
    s = settings(up_every=2, down_every=3, lambda_up=1.5, lambda_down=0.5)
    lam, trace = 1.0, []
    for step, flipped in enumerate([True, True, False, False, False, True, False, True]):
        lam = next_lambda(lam, flipped, step, s)
        trace.append(lam)
    # step 1 (2nd, fooled): x1.5; step 2 (3rd, not): x0.5; step 5 (6th, fooled, even): x1.5; step 7 (8th): x1.5
    assert trace == [1.0, 1.5, 0.75, 0.75, 0.75, 1.125, 1.125, 1.6875]


@pytest.mark.parametrize("change,field", [
    ({"shrink": 1.5}, "perceptibility.attack.shrink=1.5"), ({"shrink": 0}, "perceptibility.attack.shrink=0"),
    ({"steps": 0}, "perceptibility.attack.steps=0"), ({"samples": 2.5}, "perceptibility.attack.samples=2.5"),
    ({"lambda0": float("nan")}, "perceptibility.attack.lambda0=nan"),
    ({"lambda_up": 0.9}, "perceptibility.attack.lambda_up=0.9"),
    ({"lambda_down": 1.5}, "perceptibility.attack.lambda_down=1.5"),
    ({"alpha": 0.5}, "perceptibility.attack.alpha=0.5"), ({"start": float("inf")}, "perceptibility.attack.start=inf"),
    ({"n": None}, "lacks perceptibility.attack.n"), ({"bf16": "yes"}, "perceptibility.attack.bf16='yes'"),
    ({"steps": 5000, "samples": 50}, "attack stream"),
])
def test_bad_settings_name_the_field(change, field):
    with pytest.raises(ValueError) as error:
        settings(**change)
    assert field in str(error.value)


# --- the smoothed loss ---------------------------------------------------------------------------------------------
def test_smoothed_log_probability_is_exact_under_any_chunking():
    torch.manual_seed(3)
    classifier = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 3)).eval()
    z = torch.randn(3, 12)
    noise = 0.7 * torch.randn(8, 12)
    y = 1
    leaf = z.clone().requires_grad_(True)
    log_p = torch.log_softmax(classifier(leaf[:, None] + noise[None]), dim=-1)[..., y]      # (3, 8)
    reference = torch.logsumexp(log_p, dim=1) - math.log(8)
    (reference_grad,) = torch.autograd.grad(reference.sum(), leaf)
    predicted = classifier(z[:, None] + noise[None]).argmax(-1)
    for batch_size in (1, 3, 8, 16, 64):
        value, grad, votes = smoothed_log_probability(classifier, z, noise, y, batch_size)
        assert torch.allclose(value.float(), reference, rtol=1e-5, atol=1e-6), batch_size
        assert torch.allclose(grad, reference_grad, rtol=1e-4, atol=1e-6), batch_size
        for row in range(3):
            counts = torch.bincount(predicted[row], minlength=3)
            others = torch.cat([counts[:y], counts[y + 1:]]).max()
            assert votes[row].tolist() == [int(counts[y]), int(others)]


# --- the search on a linear classifier -----------------------------------------------------------------------------
SIGMA, SCALE = 0.01, 50.0


class Linear(nn.Module):
    """logits (-s, s), s = SCALE (w.z + b), ||w|| = 1: g's boundary is f's (isotropic noise), so x + delta is
    adversarial for label 0 exactly when w.(x + delta) + b > 0, at distance margin - w.delta from it."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        s = SCALE * (z @ self.w + self.b)
        return torch.stack([-s, s], dim=-1)


def linear_point(speech: torch.Tensor, margin: float) -> Linear:
    w = torch.randn(N, generator=torch.Generator().manual_seed(4))
    w /= w.norm()
    return Linear(w, -float(speech @ w) - margin).eval()  # w.x + b = -margin: class 0 at distance margin


def test_predict_error_rate_of_the_linear_test():
    """PREDICT(200, 0.001) names a class other than the side of the boundary x + delta lies on, or abstains, at
    distance >= 15 sigma with probability < 1e-37 per decision (stated for the two tests below)."""
    k = min(c for c in range(100, 201) if binomtest(c, 200, 0.5).pvalue <= 0.001)
    assert binom.cdf(k - 1, 200, norm.cdf(15.0)) < 1e-37


def test_search_finds_the_adversarial_example_that_exists_and_never_leaves_its_ball(speech, threshold):
    """margin 0.6, eps0 = 1, T = 8, no penalty (lambda0 = 0): every normalised step is +0.25 w exactly (the gradient
    of log q_y of a linear f is along w), so delta_3 = 0.75 w lies 0.15 = 15 sigma past the boundary: its votes
    flip, the ball shrinks to 0.7 x 0.75 = 0.525 < 0.6 and no later iterate crosses. PREDICT then finds it."""
    classifier = linear_point(speech, 0.6)
    smooth = Smooth(classifier, 2, SIGMA, seed=7)
    s = settings(lambda0=0.0, step_factor=2.0)
    result = imperceptible_attack(smooth, speech, 0, threshold, 1.0, s, example=3)
    search = result.search
    assert search.candidate_steps == [3] and search.flipped[:4] == [False, False, False, True]
    assert search.eps[4] == pytest.approx(0.525, rel=1e-6) and not any(search.flipped[4:])
    assert result.found and result.predict == 1 and result.judged == [1]
    assert result.l2 == pytest.approx(0.75, rel=1e-5) and result.l2 <= 1.0
    assert float(result.delta.double() @ classifier.w.double()) == pytest.approx(0.75, rel=1e-5)
    assert result.max_excess_db == pytest.approx(float(pa.audibility(result.delta.double(), threshold).excess_db))
    record = result.to_record()
    assert record["found"] and record["candidates"] == 1 and record["predict_passes"] == 200
    # Every iterate stays in its ball; the same call gives the same candidates bit for bit.
    again = imperceptible_search(classifier, speech, 0, MaskingPenalty(threshold), 1.0, sigma=SIGMA, settings=s,
                                 seed=7, example=3)
    assert torch.equal(again.candidates, search.candidates)
    for step, candidate in zip(again.candidate_steps, again.candidates, strict=True):
        assert float(candidate.double().norm()) <= again.eps[step]


def test_search_finds_nothing_where_no_adversarial_example_exists(speech, threshold):
    """margin 2 > eps0 = 1: every iterate stays >= 1 = 100 sigma on the label's side; nothing flips (a vote flips
    with probability Phi(-100) per draw), nothing is judged."""
    classifier = linear_point(speech, 2.0)
    result = imperceptible_attack(Smooth(classifier, 2, SIGMA, seed=7), speech, 0, threshold, 1.0,
                                  settings(lambda0=0.5), example=3)
    assert not result.found and result.judged == [] and result.search.candidates.shape[0] == 0
    assert not any(result.search.flipped) and result.l2 is None and result.to_record()["l2"] is None
    assert result.search.lambdas[-1] == pytest.approx(0.5 * 0.8 ** 4)  # x0.8 at steps 2, 4, 6, 8: never fooled


def test_the_penalty_enters_the_ascent_with_its_sign(speech, threshold):
    """A soft linear classifier (logit scale 1) out of reach (margin 3 > eps0 = 1): nothing flips, the ball never
    shrinks, and without penalty the steps run along w to the ball's edge (a random direction, far above theta).
    With lambda = 10 the penalty's gradient dominates after the first step: the last iterate must be quieter (a
    sign error in the penalty's term would make it louder) and still inside the ball."""
    w = torch.randn(N, generator=torch.Generator().manual_seed(4))
    w /= w.norm()

    class Soft(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            s = z @ w - float(speech @ w) - 3.0
            return torch.stack([-s, s], dim=-1)

    penalty = MaskingPenalty(threshold)
    last = {}
    for lam in (0.0, 10.0):
        s = dataclasses.replace(settings(), lambda0=lam, steps=12, lambda_down=1.0)
        search = imperceptible_search(Soft().eval(), speech, 0, penalty, 1.0, sigma=SIGMA, settings=s, seed=1,
                                      example=0)
        assert search.candidates.shape[0] == 0 and float(search.final.double().norm()) <= 1.0
        last[lam] = float(penalty(search.final.double()[None])[0])
    assert last[10.0] < last[0.0], last


def test_quietest_order_puts_inaudible_candidates_first_then_small_norms():
    excess = np.array([3.0, -1.0, -5.0, 0.5, -2.0])
    l2 = np.array([0.1, 2.0, 3.0, 0.2, 1.0])
    assert quietest_order(excess, l2).tolist() == [4, 1, 2, 3, 0]
