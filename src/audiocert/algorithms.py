"""Certification algorithms: how many samples each point needs, and what its counts certify.

An algorithm sees only class counts. Work proceeds in rounds: after each round, ``targets`` says how many
selection and estimation samples a point should have in all (the prefixes [0, s) and [0, e) of its two noise
streams), and ``certify`` turns the final counts into (prediction, radius, pA_lower). Pure functions of counts.

Cohen (Cohen, Rosenfeld & Kolter 2019, CERTIFY): s = n0, e = n in one round; pA_lower at level alpha.

Sequential: the same CERTIFY, but a point stops drawing as soon as its answer to the report's question is
settled: for which radii r of a fixed grid is R >= r? Estimation counts are looked at after e_1 < e_2 < ...
< e_K = n samples (``looks``: geometric, block-aligned). Look k uses the one-sided Clopper-Pearson bound at
level alpha_k, with sum_k alpha_k = alpha: the last look keeps alpha_K = last_share x alpha (default 3/4, so a
point that goes to n is certified almost as Cohen would; with 1/2 a point needing exactly Cohen's level at n,
e.g. 3 errors in 10,000 at r / sigma = 3, falls just short), the earlier looks share the rest in proportion to 2^k.
By the union bound (Bonferroni over the K looks; the classical "repeated significance tests" argument, e.g.
Jennison & Turnbull 2000, ch. 1, and Wald 1945 for sequential stopping in general),
    P(exists k: pA_lower_k > pA) <= sum_k alpha_k = alpha,
whatever rule decides when to stop, so the certificate R = sigma * Phi^-1(pA_lower_tau) at the stopping look
tau holds with probability >= 1 - alpha, as CERTIFY's does. The stopping rule only decides cost and accuracy:
stop when even an optimistic end (the (1 - stop_alpha) upper bound on pA, observed at all n samples and bounded
at level alpha_K) would not certify a larger grid radius than the current bound already does.
Selection stops early too, on selection counts alone (so A stays independent of the estimation samples): as
soon as the top class leads the runner-up significantly (PREDICT's binomial test at level alpha), when no class
plausibly reaches pA >= 1/2 (the point will abstain whichever A is taken), or at n0.
PREDICT (the reported prediction without a radius) tests the estimation counts at the stopping look's alpha_k,
covered by the same union bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr  # = scipy.stats.norm.cdf, bit for bit (scipy.stats costs 0.6 s to import)

from audiocert.statistics import (
    ABSTAIN,
    REPORT_RADII,
    certify_from_counts,
    certify_many,
    check_alpha,
    lower_confidence_bound,
    lower_confidence_bounds,
    max_certifiable_radius,
    predict_from_counts,
    predict_many,
    predict_p_value,
    predict_p_values,
    radius_from_lower_bound,
    top_two,
    upper_confidence_bounds,
)

ALGORITHMS = ("cohen", "sequential")


def upper_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a binomial proportion with k successes in n."""
    check_alpha(alpha)
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if k == n:
        return 1.0
    from scipy.stats import beta  # on first use: a shard worker never needs it

    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def geometric_looks(first: int, total: int, growth: float, block: int) -> tuple[int, ...]:
    """Sample totals first, first * growth, ... rounded up to whole noise blocks, ending exactly at ``total``."""
    if first < 1 or total < 1 or growth <= 1 or block < 1:
        raise ValueError(f"need first >= 1, total >= 1, growth > 1, block >= 1 (got {first}, {total}, "
                         f"{growth}, {block})")
    looks, size = [], float(first)
    while True:
        look = min(total, math.ceil(size / block) * block)
        if not looks or look > looks[-1]:
            looks.append(look)
        if look >= total:
            return tuple(looks)
        size *= growth


@dataclass(frozen=True)
class Cohen:
    """CERTIFY with a fixed n0 and n: one round."""

    n0: int
    n: int
    alpha: float
    sigma: float
    name: str = "cohen"

    @property
    def max_radius(self) -> float:
        """The largest radius it can certify (all n samples agree)."""
        return max_certifiable_radius(self.sigma, self.n, self.alpha)

    def targets(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[int, int]:
        return self.n0, self.n

    def certify(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[int, float, float]:
        return certify_from_counts(selection, estimation, self.alpha, self.sigma)

    def predict(self, estimation: np.ndarray) -> int:
        """PREDICT on the estimation counts, at level alpha."""
        return predict_from_counts(estimation, self.alpha)

    # The same, for all the points of a config at once ((P, C) tables): what the reducer and the round planner use.
    def targets_many(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(selection).shape[0]
        return np.full(points, self.n0, dtype=np.int64), np.full(points, self.n, dtype=np.int64)

    def certify_many(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
        return certify_many(selection, estimation, self.alpha, self.sigma)

    def predict_many(self, estimation: np.ndarray) -> np.ndarray:
        return predict_many(estimation, self.alpha)


@dataclass(frozen=True)
class Sequential:
    """CERTIFY with early stopping per point; see the module docstring for the guarantee."""

    n0: int
    n: int
    alpha: float
    sigma: float
    radii: tuple[float, ...] = REPORT_RADII
    first: int = 100
    growth: float = 2.0
    block: int = 50
    stop_alpha: float = 0.001
    last_share: float | None = 0.75  # None: alpha_k proportional to 2^k over all looks (plans made before the option)
    name: str = "sequential"
    looks: tuple[int, ...] = field(init=False)
    selection_looks: tuple[int, ...] = field(init=False)
    look_alphas: tuple[float, ...] = field(init=False)
    thresholds: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_alpha(self.stop_alpha)
        if not self.sigma > 0:
            raise ValueError(f"sigma={self.sigma} must be positive")
        if not self.radii or any(not r > 0 for r in self.radii):
            raise ValueError(f"radii={self.radii} must be a non-empty list of positive radii")
        if self.last_share is not None and not 0 < self.last_share < 1:
            raise ValueError(f"last_share={self.last_share} must lie in (0, 1)")
        looks = geometric_looks(self.first, self.n, self.growth, self.block)
        weights = np.array([2.0**k for k in range(len(looks))])
        if self.last_share is None or len(looks) == 1:
            look_alphas = self.alpha * weights / weights.sum()
        else:
            earlier = self.alpha * (1 - self.last_share) * weights[:-1] / weights[:-1].sum()
            look_alphas = [*earlier, self.alpha * self.last_share]
        object.__setattr__(self, "looks", looks)
        object.__setattr__(self, "selection_looks", geometric_looks(min(self.first, self.n0), self.n0,
                                                                    self.growth, self.block))
        object.__setattr__(self, "look_alphas", tuple(float(a) for a in look_alphas))
        # pA_lower >= 1/2 predicts; pA_lower >= Phi(r / sigma) certifies radius r.
        thresholds = np.concatenate([[0.5], ndtr(np.asarray(sorted(self.radii)) / self.sigma)])
        object.__setattr__(self, "thresholds", thresholds)

    @property
    def max_radius(self) -> float:
        """The largest radius it can certify (all n samples agree, bounded at the last look's level)."""
        return max_certifiable_radius(self.sigma, self.n, self.look_alphas[-1])

    def level(self, p_lower: float) -> int:
        """How many of the report's questions (predict, then R >= r for each grid r) pA_lower answers yes."""
        return int(np.searchsorted(self.thresholds, p_lower, side="right"))

    def look_alpha(self, samples: int) -> float:
        if samples not in self.looks:
            raise ValueError(f"{samples} estimation samples is not one of the looks {self.looks}: the union "
                             "bound covers only those")
        return self.look_alphas[self.looks.index(samples)]

    def selection_settled(self, selection: np.ndarray) -> bool:
        total = int(selection.sum())
        if total >= self.n0:
            return True
        ordered = np.sort(selection)[::-1]
        runner_up = int(ordered[1]) if ordered.size > 1 else 0
        if upper_confidence_bound(int(ordered[0]), total, self.stop_alpha) < 0.5:
            return True  # no class plausibly reaches pA >= 1/2: whichever A is taken, the point abstains
        return predict_p_value(int(ordered[0]), runner_up) <= self.alpha

    def estimation_settled(self, top: int, estimation: np.ndarray) -> bool:
        samples = int(estimation.sum())
        if samples >= self.n:
            return True
        if samples == 0:
            return False
        k = int(estimation[top])
        now = self.level(lower_confidence_bound(k, samples, self.look_alpha(samples)))
        optimistic = upper_confidence_bound(k, samples, self.stop_alpha)
        best = self.level(lower_confidence_bound(math.ceil(optimistic * self.n - 1e-9), self.n, self.look_alphas[-1]))
        return best <= now

    def targets(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[int, int]:
        """Totals (selection, estimation) this point should reach next; equal to the current ones when settled.

        Estimation waits while selection is unsettled (its stopping rule needs the class A).
        """
        selection, estimation = np.asarray(selection), np.asarray(estimation)
        drawn_s, drawn_e = int(selection.sum()), int(estimation.sum())
        if drawn_s == 0:
            return self.selection_looks[0], self.looks[0]
        if not self.selection_settled(selection):
            return next(s for s in self.selection_looks if s > drawn_s), drawn_e
        if self.estimation_settled(int(selection.argmax()), estimation):
            return drawn_s, drawn_e
        return drawn_s, next(e for e in self.looks if e > drawn_e)

    def certify(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[int, float, float]:
        """CERTIFY at the stopping look: the bound at that look's alpha_k."""
        selection, estimation = np.asarray(selection), np.asarray(estimation)
        samples = int(estimation.sum())
        top = int(selection.argmax())
        p_lower = lower_confidence_bound(int(estimation[top]), samples, self.look_alpha(samples))
        if p_lower < 0.5:
            return ABSTAIN, 0.0, p_lower
        return top, radius_from_lower_bound(p_lower, self.sigma), p_lower

    def predict(self, estimation: np.ndarray) -> int:
        """PREDICT on the estimation counts at the stopping look's alpha_k: the stop depends on these counts, so
        a test at the full alpha would lose its level (optional stopping); the union bound over looks keeps it."""
        estimation = np.asarray(estimation)
        return predict_from_counts(estimation, self.look_alpha(int(estimation.sum())))


    # The same rules for all the points of a config at once ((P, C) tables), with the same numbers as the
    # per-point methods above (the same scipy quantiles elementwise; binomtest itself near a decision): a
    # per-point loop costs ~1-2 ms a point, a minute over the 27,630 points of a 921-speaker config.
    def look_alphas_of(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.int64)
        looks = np.asarray(self.looks)
        position = np.minimum(np.searchsorted(looks, samples), len(looks) - 1)
        if np.any(looks[position] != samples):
            bad = sorted(set(samples[looks[position] != samples].tolist()))[:5]
            raise ValueError(f"estimation sample counts {bad} are not among the looks {self.looks}: the union bound "
                             "covers only those")
        return np.asarray(self.look_alphas)[position]

    def selection_settled_many(self, total: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
        """:meth:`selection_settled` from each point's selection total, top count and runner-up count."""
        hopeless = upper_confidence_bounds(c1, total, self.stop_alpha) < 0.5
        leads = predict_p_values(c1, c2, self.alpha) <= self.alpha
        return (total >= self.n0) | hopeless | leads

    def estimation_settled_many(self, k: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """:meth:`estimation_settled` from each point's estimation count of its class A and its total."""
        settled = samples >= self.n
        active = ~settled & (samples > 0)
        if active.any():
            rows = np.flatnonzero(active)
            now = np.searchsorted(self.thresholds, lower_confidence_bounds(
                k[rows], samples[rows], self.look_alphas_of(samples[rows])), side="right")
            optimistic = upper_confidence_bounds(k[rows], samples[rows], self.stop_alpha)
            reach = np.ceil(optimistic * self.n - 1e-9).astype(np.int64)
            best = np.searchsorted(self.thresholds, lower_confidence_bounds(
                reach, np.full(rows.size, self.n), self.look_alphas[-1]), side="right")
            settled[rows] = best <= now
        return settled

    def targets_many(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`targets` for every point: (selection totals, estimation totals) to reach next. Works on per-point
        summaries (totals, top two counts), never on copies of the (P, C) tables."""
        selection, estimation = np.asarray(selection), np.asarray(estimation)
        drawn_s, drawn_e = selection.sum(axis=1, dtype=np.int64), estimation.sum(axis=1, dtype=np.int64)
        top, c1, c2 = top_two(selection)
        k = estimation[np.arange(top.size), top].astype(np.int64)
        target_s, target_e = drawn_s.copy(), drawn_e.copy()
        first = drawn_s == 0
        target_s[first], target_e[first] = self.selection_looks[0], self.looks[0]
        later = np.flatnonzero(~first)
        selection_done = np.zeros(top.size, dtype=bool)
        selection_done[later] = self.selection_settled_many(drawn_s[later], c1[later], c2[later])
        more_selection = ~first & ~selection_done
        looks_s = np.asarray(self.selection_looks)
        target_s[more_selection] = looks_s[np.searchsorted(looks_s, drawn_s[more_selection], side="right")]
        rows = np.flatnonzero(~first & selection_done)
        if rows.size:
            grow = rows[~self.estimation_settled_many(k[rows], drawn_e[rows])]
            looks = np.asarray(self.looks)
            target_e[grow] = looks[np.searchsorted(looks, drawn_e[grow], side="right")]
        return target_s, target_e

    def certify_many(self, selection: np.ndarray, estimation: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
        alphas = self.look_alphas_of(np.asarray(estimation).sum(axis=1))
        return certify_many(selection, estimation, alphas, self.sigma)

    def predict_many(self, estimation: np.ndarray) -> np.ndarray:
        return predict_many(estimation, self.look_alphas_of(np.asarray(estimation).sum(axis=1)))


Algorithm = Cohen | Sequential


def make_algorithm(quantities: Mapping[str, Any]) -> Algorithm:
    """The algorithm of a config, from its certified quantities (what the config hash covers)."""
    name = quantities.get("algorithm", "cohen")
    common = {"n0": int(quantities["n0"]), "n": int(quantities["n"]), "alpha": float(quantities["alpha"]),
              "sigma": float(quantities["sigma"])}
    if name == "cohen":
        return Cohen(**common)
    if name == "sequential":
        options = quantities["sequential"]
        return Sequential(**common, radii=tuple(float(r) for r in options["radii"]), first=int(options["first"]),
                          growth=float(options["growth"]), block=int(quantities["block_size"]),
                          stop_alpha=float(options["stop_alpha"]),
                          last_share=None if options.get("last_share") is None else float(options["last_share"]))
    raise ValueError(f"certify.algorithm={name!r}: choose one of {', '.join(ALGORITHMS)}")
