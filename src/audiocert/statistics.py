"""The statistics of randomized smoothing (Cohen, Rosenfeld & Kolter 2019), as pure functions on counts.

CERTIFY(x, n0, n, alpha): A = argmax of the n0 selection counts; k = estimation count of A out of n;
    pA_lower = Beta(alpha; k, n - k + 1)   (one-sided Clopper-Pearson lower bound at level alpha)
    abstain if pA_lower < 1/2, else radius R = sigma * Phi^-1(pA_lower).
PREDICT(x, n, alpha): top two counts c1 > c2; abstain unless the two-sided binomial test of c1 out of
    c1 + c2 at p = 1/2 has p-value <= alpha.
The largest radius n samples can certify (all n correct) is sigma * Phi^-1(alpha^(1/n)).
No torch here: counts in, numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np

ABSTAIN = -1
# The radii the report's tables ask about ("is R >= r?"), in the units of the smoothing stage.
REPORT_RADII: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def _stats() -> ModuleType:
    """scipy.stats, imported on first use: 0.6 s of every process's start-up that a shard worker, which only
    counts, never needs."""
    import scipy.stats

    return scipy.stats


def check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha={alpha} must lie in (0, 0.5)")


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion with k successes in n."""
    check_alpha(alpha)
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return float(lower_confidence_bounds(np.array([k]), np.array([n]), alpha)[0])


def lower_confidence_bounds(k: np.ndarray, n: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """:func:`lower_confidence_bound` elementwise (the same Beta quantile, so the same numbers), for a config's
    points at once: a per-point scipy call costs ~0.2 ms, 6 s over the 27,630 points of a 921-speaker config.
    0 where k = 0. The caller checks the arguments (0 <= k <= n, n >= 1, alpha in (0, 1/2))."""
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = _stats().beta.ppf(alpha, np.maximum(k, 1), n - k + 1)
    return np.where(k == 0, 0.0, bound).astype(float)


def upper_confidence_bounds(k: np.ndarray, n: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson upper bounds, elementwise: Beta(1 - alpha; k + 1, n - k), 1 where
    k = n."""
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = _stats().beta.ppf(1.0 - np.asarray(alpha, dtype=float), k + 1, np.maximum(n - k, 1))
    return np.where(k == n, 1.0, bound).astype(float)


def rate_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Clopper-Pearson interval of a rate k / n over test points (each side at level (1 - confidence) / 2);
    None for n = 0 (no points: no rate)."""
    if n == 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    side = (1.0 - confidence) / 2
    return (float(lower_confidence_bounds(np.array([k]), np.array([n]), side)[0]),
            float(upper_confidence_bounds(np.array([k]), np.array([n]), side)[0]))


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of seeing k or more events where each of n points
    has probability p (1 for k <= 0)."""
    return 1.0 if k <= 0 else float(_stats().binom.sf(k - 1, n, p))


def radius_from_lower_bound(p_lower: float, sigma: float) -> float:
    """Certified L2 radius sigma * Phi^-1(pA_lower) (meaningful for pA_lower >= 1/2)."""
    return float(sigma * _stats().norm.ppf(p_lower))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The radius certified when all n estimation samples agree: sigma * Phi^-1(alpha^(1/n))."""
    check_alpha(alpha)
    return radius_from_lower_bound(alpha ** (1.0 / n), sigma)


def fewest_samples_to_certify(radius: float, sigma: float, alpha: float) -> int:
    """The fewest estimation samples m with which any level-alpha test can certify R >= radius (radius > 0).

    Certifying R >= r is rejecting H0: pA <= p0 = Phi(r / sigma). The outcome most against H0 is all m samples of
    class A, of probability p0^m under H0; a level-alpha test can reject only if p0^m <= alpha, so
    m >= ln(alpha) / ln(p0), whatever the algorithm (sequential or not). Clopper-Pearson attains it.
    """
    check_alpha(alpha)
    if not radius > 0 or not sigma > 0:
        raise ValueError(f"radius={radius} and sigma={sigma} must be positive")
    p0 = float(_stats().norm.cdf(radius / sigma))
    m = int(np.ceil(np.log(alpha) / np.log(p0)))
    return m - 1 if m > 1 and p0 ** (m - 1) <= alpha else m  # guard the rounding of the ratio


def certify_from_counts(
    selection_counts: Sequence[int] | np.ndarray, estimation_counts: Sequence[int] | np.ndarray,
    alpha: float, sigma: float,
) -> tuple[int, float, float]:
    """CERTIFY on class-count vectors -> (prediction or ABSTAIN, radius, pA_lower). Abstain gives radius 0.

    The class is chosen from the selection counts only (independent of the estimation counts); ties go to
    the lowest class index, as numpy's argmax does in locuslab/smoothing.
    """
    selection = np.asarray(selection_counts)
    estimation = np.asarray(estimation_counts)
    if selection.shape != estimation.shape or selection.ndim != 1:
        raise ValueError(f"count vectors must be 1-D and alike, got {selection.shape} and {estimation.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be positive")
    top = int(selection.argmax())
    n = int(estimation.sum())
    p_lower = lower_confidence_bound(int(estimation[top]), n, alpha)
    if p_lower < 0.5:
        return ABSTAIN, 0.0, p_lower
    return top, radius_from_lower_bound(p_lower, sigma), p_lower


def predict_p_value(c1: int, c2: int) -> float:
    """Two-sided binomial test p-value of c1 successes out of c1 + c2 at p = 1/2."""
    if c1 + c2 == 0:
        return 1.0
    return float(_stats().binomtest(int(c1), int(c1 + c2), 0.5).pvalue)


def predict_p_values(c1: np.ndarray, c2: np.ndarray, alpha: float | np.ndarray | None = None) -> np.ndarray:
    """:func:`predict_p_value` elementwise. At p = 1/2 the binomial is symmetric, so binomtest's two-sided p-value
    (the mass of every outcome no likelier than the one observed) is min(1, 2 P(X <= min(c1, c2))). Where a
    p-value lies within a relative 1e-9 of ``alpha`` (the decision PREDICT takes), binomtest itself gives it, so
    decisions are exactly those of binomtest whatever the floating-point path."""
    c1, c2 = np.asarray(c1, dtype=np.int64), np.asarray(c2, dtype=np.int64)
    n = c1 + c2
    tail = _stats().binom.cdf(np.minimum(c1, c2), np.maximum(n, 1), 0.5)
    values = np.where(n == 0, 1.0, np.minimum(1.0, 2.0 * tail))
    if alpha is not None:
        alpha = np.broadcast_to(np.asarray(alpha, dtype=float), values.shape)
        for i in np.flatnonzero(np.abs(values - alpha) <= 1e-9 * alpha):
            values.flat[i] = predict_p_value(int(c1.flat[i]), int(c2.flat[i]))
    return values


def predict_from_counts(counts: Sequence[int] | np.ndarray, alpha: float) -> int:
    """PREDICT on a class-count vector -> the top class, or ABSTAIN when it is not significantly ahead."""
    check_alpha(alpha)
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")
    c1, c2 = int(counts[order[0]]), int(counts[order[1]]) if counts.size > 1 else 0
    return int(order[0]) if predict_p_value(c1, c2) <= alpha else ABSTAIN


def top_two(counts: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a (P, C) count table: the top class (the lowest index on ties, as numpy's argmax and a stable
    sort), its count, and the runner-up's count (the second largest count, equal to the top's on a tie).

    Done in chunks of rows, so a 27,630 x 921 table needs no full-size temporary.
    """
    counts = np.asarray(counts)
    top = np.empty(counts.shape[0], dtype=np.int64)
    c1 = np.empty(counts.shape[0], dtype=np.int64)
    c2 = np.zeros(counts.shape[0], dtype=np.int64)
    for lo in range(0, counts.shape[0], chunk):
        block = counts[lo : lo + chunk]
        top[lo : lo + chunk] = block.argmax(axis=1)
        c1[lo : lo + chunk] = block.max(axis=1)
        if block.shape[1] > 1:
            c2[lo : lo + chunk] = np.partition(block, block.shape[1] - 2, axis=1)[:, -2]
    return top, c1, c2


def predict_many(counts: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """:func:`predict_from_counts` for every row of a (P, C) count table (alpha per row or one for all)."""
    top, c1, c2 = top_two(counts)
    alpha = np.broadcast_to(np.asarray(alpha, dtype=float), top.shape)
    return np.where(predict_p_values(c1, c2, alpha) <= alpha, top, ABSTAIN)


def certify_many(selection: np.ndarray, estimation: np.ndarray, alpha: float | np.ndarray,
                 sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`certify_from_counts` for every row of (P, C) selection and estimation tables: (predictions or
    ABSTAIN, radii, pA_lower), the same numbers as row by row."""
    selection, estimation = np.asarray(selection), np.asarray(estimation)
    if selection.shape != estimation.shape or selection.ndim != 2:
        raise ValueError(f"count tables must be 2-D and alike, got {selection.shape} and {estimation.shape}")
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be positive")
    top = selection.argmax(axis=1)
    k = estimation[np.arange(top.size), top]
    p_lower = lower_confidence_bounds(k, estimation.sum(axis=1), alpha)
    certified = p_lower >= 0.5
    radius = np.where(certified, sigma * _stats().norm.ppf(np.where(certified, p_lower, 0.5)), 0.0)
    return np.where(certified, top, ABSTAIN), radius, p_lower


def certified_accuracy(
    radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, radius: float
) -> float:
    """Fraction of points predicted correctly with certified radius >= ``radius`` (abstentions are wrong)."""
    radii, correct = np.asarray(radii, dtype=float), np.asarray(correct, dtype=bool)
    if radii.size == 0:
        return float("nan")
    return float(np.mean(correct & (radii >= radius)))


def certified_accuracy_curve(
    radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, grid: Sequence[float]
) -> np.ndarray:
    return np.array([certified_accuracy(radii, correct, r) for r in grid])


def snr_db(signal_norm: float | np.ndarray, radius: float | np.ndarray) -> np.ndarray:
    """SNR-equivalent of an L2 radius at a stage: 20 log10(||x_stage|| / r) dB (inf for r = 0)."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(np.asarray(signal_norm, dtype=float) / np.asarray(radius, dtype=float))
