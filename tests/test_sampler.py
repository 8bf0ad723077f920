"""Sampling: shapes, reproducible noise streams, batching invariance, and the soundness of the certificates.

Statistical tests use fixed seeds; each states the probability that it would fail for a correct
implementation (its one-sided binomial p-value threshold), so a failure means a real defect.
"""

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, kstest, norm

from audiocert import DeepSpeakerFrontend, Smooth, StagedClassifier
from audiocert.sampler import block_seed, fill_noise, sample_batches
from audiocert.statistics import ABSTAIN, max_certifiable_radius

FAILURE_RATE = 1e-3  # each statistical test below fails with probability <= 1e-3 for a correct sampler


class LinearBinary(torch.nn.Module):
    """f(x) = 1 if <w, x> > b else 0, on inputs of any shape: smoothed probabilities are closed-form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x.flatten(1).double() * self.w.flatten().double()).sum(1) - self.b
        return torch.stack([-score, score], dim=1)


class Recorder(torch.nn.Module):
    """Keeps what the classifier's input stage receives."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.clone())
        return torch.zeros(x.shape[0], self.num_classes)


def test_sample_batches_align_to_blocks():
    assert list(sample_batches(0, 230, 100, 50)) == [(0, 100), (100, 200), (200, 230)]
    assert list(sample_batches(25, 230, 100, 50)) == [(25, 100), (100, 200), (200, 230)]
    assert list(sample_batches(0, 120, 30, 50)) == [(0, 50), (50, 100), (100, 120)]


def test_noise_depends_only_on_sample_index():
    whole = fill_noise(torch.empty(300, 7), seed=1, example=4, phase="estimation", start=0, block_size=50)
    part = fill_noise(torch.empty(130, 7), seed=1, example=4, phase="estimation", start=85, block_size=50)
    torch.testing.assert_close(part, whole[85:215])
    other_phase = fill_noise(torch.empty(300, 7), seed=1, example=4, phase="selection", start=0, block_size=50)
    other_example = fill_noise(torch.empty(300, 7), seed=1, example=5, phase="estimation", start=0, block_size=50)
    assert not torch.allclose(whole, other_phase) and not torch.allclose(whole, other_example)
    seeds = {block_seed(0, e, p, b) for e in range(5) for p in ("selection", "estimation") for b in range(20)}
    assert len(seeds) == 200


def test_counts_invariant_to_batch_size_and_ranges():
    torch.manual_seed(0)
    w = torch.randn(3, 8)
    smooth = Smooth(LinearBinary(w, 0.3), num_classes=2, sigma=0.7, seed=11, block_size=50)
    x = torch.randn(3, 8) * 0.1
    whole = smooth.counts(x, "estimation", 0, 1000, batch_size=200, example=2)
    assert whole.sum() == 1000 and whole.dtype == np.int64
    assert np.array_equal(whole, smooth.counts(x, "estimation", 0, 1000, batch_size=37, example=2))
    pieces = sum(smooth.counts(x, "estimation", lo, hi, batch_size=64, example=2)
                 for lo, hi in [(0, 130), (130, 500), (500, 1000)])
    assert np.array_equal(whole, pieces)
    assert not np.array_equal(whole, smooth.counts(x, "estimation", 0, 1000, batch_size=200, example=3))


def test_certify_and_predict_interface():
    w = torch.ones(5)
    smooth = Smooth(LinearBinary(w, 0.0), num_classes=2, sigma=0.5, seed=0)
    prediction, radius = smooth.certify(torch.full((5,), 2.0), n0=100, n=1000, alpha=0.001, batch_size=256)
    assert prediction == 1 and 0 < radius <= max_certifiable_radius(0.5, 1000, 0.001) + 1e-12
    assert smooth.predict(torch.full((5,), 2.0), n=500, alpha=0.001, batch_size=100) == 1
    assert smooth.predict(torch.zeros(5), n=200, alpha=0.001, batch_size=100) == ABSTAIN
    with pytest.raises(ValueError, match="sigma"):
        Smooth(LinearBinary(w, 0.0), 2, sigma=0.0)
    with pytest.raises(ValueError, match="returned 2 logits, Smooth has num_classes=3"):
        Smooth(LinearBinary(w, 0.0), 3, sigma=0.5).counts(torch.zeros(5), "estimation", 0, 10, batch_size=10)


def soundness_run(shape: tuple[int, ...], sigma: float, certifications: int, x0: torch.Tensor | None = None,
                  n0: int = 20, n: int = 200, alpha: float = 0.01, seed: int = 0) -> tuple[int, int, int]:
    """Certify a linear classifier many times; count certified radii above the true radius.

    For f(x) = 1[<w,x> > b] the smoothed classifier is g(x) = 1[<w,x> > b] with exact robust radius
    |<w,x> - b| / ||w|| (the distance to the hyperplane) and pA = Phi(that / sigma). CERTIFY may exceed it only
    when its lower bound on pA is wrong, which happens with probability <= alpha.
    """
    rng = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=rng, dtype=torch.float64)
    unit = w / torch.linalg.vector_norm(w)
    base = torch.zeros(shape, dtype=torch.float64) if x0 is None else x0.double()
    b = float((unit * base).sum())  # hyperplane through x0; points are placed at signed distances from it
    smooth = Smooth(LinearBinary(unit, b), num_classes=2, sigma=sigma, seed=seed, block_size=50)
    distances = torch.linspace(-2.5, 2.5, certifications, dtype=torch.float64) * sigma
    exceed = wrong = abstain = 0
    ceiling = max_certifiable_radius(sigma, n, alpha)
    for i, d in enumerate(distances.tolist()):
        x = (base + d * unit).float()
        prediction, radius = smooth.certify(x, n0=n0, n=n, alpha=alpha, batch_size=n, example=i)
        assert radius <= ceiling + 1e-12
        true_class, true_radius = int(d > 0), abs(d)
        if prediction == ABSTAIN:
            abstain += 1
        elif prediction != true_class:
            wrong += 1
            exceed += 1  # any radius for the wrong class exceeds the true guarantee
        elif radius > true_radius:
            exceed += 1
    return exceed, wrong, abstain


def assert_rate_at_most(events: int, trials: int, alpha: float) -> None:
    p_value = binomtest(events, trials, alpha, alternative="greater").pvalue
    assert p_value > FAILURE_RATE, f"{events}/{trials} exceed rate alpha={alpha} (p={p_value:.2e})"


def test_soundness_plain_vector():
    exceed, wrong, abstain = soundness_run((16,), sigma=0.5, certifications=1500, n=500)
    assert_rate_at_most(exceed, 1500, 0.01)
    assert abstain < 1500 * 0.5  # the test is not vacuous: most points do certify


@pytest.mark.slow
@pytest.mark.parametrize("stage,sigma", [("waveform", 0.02), ("magspec", 0.25), ("mfbe", 0.5)])
def test_soundness_at_each_stage(stage, sigma):
    """Linear classifiers on the stage's representation shape, around a real clean representation."""
    frontend = DeepSpeakerFrontend()
    t = torch.arange(4000) / 16000
    waveform = (0.3 * torch.sin(2 * torch.pi * 180 * t) * torch.sin(2 * torch.pi * 3 * t))[None]
    x0 = frontend.to_stage(waveform, stage)[0]
    exceed, wrong, abstain = soundness_run(tuple(x0.shape), sigma, certifications=1000, x0=x0, n=100, n0=10)
    assert_rate_at_most(exceed, 1000, 0.01)
    assert abstain < 600


def test_noise_reaching_the_stage_is_iid_gaussian():
    frontend = DeepSpeakerFrontend()
    waveform = 0.2 * torch.randn(1, 4000)
    for stage, sigma in [("waveform", 0.05), ("magspec", 0.3), ("mfbe", 1.5)]:
        recorder = Recorder()
        staged = StagedClassifier(frontend, stage, recorder)
        seen: list[torch.Tensor] = []
        staged.forward = lambda x, seen=seen: (seen.append(x.clone()), torch.zeros(x.shape[0], 3))[1]
        x = staged.clean(waveform)[0]
        Smooth(staged, num_classes=3, sigma=sigma, seed=5).counts(x, "estimation", 0, 300, batch_size=100)
        eps = ((torch.cat(seen) - x) / sigma).double()
        assert eps.shape == (300, *x.shape)
        flat = eps.flatten()
        # Moments: with > 1e6 draws, the mean is within 5 SE and the variance within 1% of 1.
        assert abs(flat.mean().item()) < 5 / np.sqrt(flat.numel())
        assert abs(flat.var().item() - 1.0) < 0.01
        assert kstest(flat[:: max(1, flat.numel() // 200_000)].numpy(), norm.cdf).pvalue > FAILURE_RATE
        # Independence across samples and across neighbouring coordinates.
        rows = eps.flatten(1)
        assert abs(torch.corrcoef(rows[:2])[0, 1].item()) < 0.05
        assert abs(torch.corrcoef(torch.stack([rows[:, 0], rows[:, 1]]))[0, 1].item()) < 0.25


def test_predict_near_tie_rarely_wrong():
    """P(f = 0) = 0.52, P(f = 1) = 0.48: PREDICT may answer 1 with probability at most alpha."""
    w = torch.ones(1)
    offset = norm.ppf(0.52)  # <w, x + eps> > b is class 1; choose b so P(class 1) = 0.48
    smooth = Smooth(LinearBinary(w, float(offset)), num_classes=2, sigma=1.0, seed=2)
    alpha, trials = 0.05, 1000
    answers = [smooth.predict(torch.zeros(1), n=200, alpha=alpha, batch_size=200, example=i) for i in range(trials)]
    wrong = sum(a == 1 for a in answers)
    assert_rate_at_most(wrong, trials, alpha)
    assert sum(a == ABSTAIN for a in answers) > trials / 2
