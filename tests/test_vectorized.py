"""The reducer and the round planner decide for all of a config's points at once: the same decisions and the same
numbers as the per-point rules (CERTIFY, PREDICT, the sequential looks), on random and on borderline counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from audiocert.algorithms import Cohen, Sequential
from audiocert.statistics import (
    certify_from_counts,
    certify_many,
    predict_from_counts,
    predict_many,
    predict_p_values,
    upper_confidence_bounds,
)


def random_tables(rng: np.random.Generator, points: int, classes: int, totals: np.ndarray) -> np.ndarray:
    """(points, classes) counts with the given row totals: from a concentrated class to nearly uniform rows."""
    table = np.zeros((points, classes), dtype=np.int64)
    for p in range(points):
        skew = rng.uniform(0.0, 8.0)
        weights = rng.dirichlet(np.full(classes, 0.3)) ** skew
        table[p] = rng.multinomial(int(totals[p]), weights / weights.sum())
    return table


def test_p_values_equal_binomtest_including_ties_and_empty_counts():
    rng = np.random.default_rng(0)
    c1 = rng.integers(0, 3000, size=2000)
    c2 = rng.integers(0, 3000, size=2000)
    c1[:5], c2[:5] = [0, 7, 50, 0, 1], [0, 7, 50, 3, 0]
    values = predict_p_values(c1, c2)
    expected = np.array([1.0 if a + b == 0 else binomtest(int(a), int(a + b), 0.5).pvalue
                         for a, b in zip(c1, c2, strict=True)])
    # The closed form and binomtest are two float paths to one number; decisions near alpha use binomtest itself.
    np.testing.assert_allclose(values, expected, rtol=1e-9, atol=0)


def test_decisions_at_alpha_follow_binomtest_exactly():
    # c1 out of c1 + c2 at the edge of the level: the closed form may land a rounding error on either side.
    alpha = float(binomtest(60, 100, 0.5).pvalue)
    assert predict_p_values(np.array([60]), np.array([40]), alpha)[0] == binomtest(60, 100, 0.5).pvalue
    assert predict_many(np.array([[60, 40]]), alpha)[0] == predict_from_counts(np.array([60, 40]), alpha) == 0


@pytest.mark.parametrize("seed", range(3))
def test_cohen_for_all_points_equals_cohen_point_by_point(seed):
    rng = np.random.default_rng(seed)
    points, classes, n0, n, alpha, sigma = 400, 12, 50, 500, 0.001, 0.25
    selection = random_tables(rng, points, classes, np.full(points, n0))
    estimation = random_tables(rng, points, classes, np.full(points, n))
    estimation[:20] = 0
    estimation[:20, 3] = n  # all samples agree: the ceiling
    predicted, radius, lower = certify_many(selection, estimation, alpha, sigma)
    for p in range(points):
        assert (predicted[p], radius[p], lower[p]) == certify_from_counts(selection[p], estimation[p], alpha, sigma)
    np.testing.assert_array_equal(predict_many(estimation, alpha),
                                  [predict_from_counts(estimation[p], alpha) for p in range(points)])
    algorithm = Cohen(n0, n, alpha, sigma)
    assert [tuple(t) for t in zip(*algorithm.targets_many(selection, estimation), strict=True)] == \
        [algorithm.targets(selection[p], estimation[p]) for p in range(points)]


@pytest.mark.parametrize("last_share", [0.75, None])
def test_sequential_for_all_points_equals_sequential_point_by_point(last_share):
    rng = np.random.default_rng(7)
    algorithm = Sequential(n0=400, n=6400, alpha=0.001, sigma=0.25, first=100, growth=2.0, block=50,
                           last_share=last_share)
    points, classes = 600, 8
    drawn_s = rng.choice([0, *algorithm.selection_looks], size=points)
    drawn_e = np.where(drawn_s == 0, 0, rng.choice(algorithm.looks, size=points))
    selection = random_tables(rng, points, classes, drawn_s)
    estimation = random_tables(rng, points, classes, drawn_e)
    target_s, target_e = algorithm.targets_many(selection, estimation)
    for p in range(points):
        assert (target_s[p], target_e[p]) == algorithm.targets(selection[p], estimation[p]), p
    done = drawn_e > 0
    predicted, radius, lower = algorithm.certify_many(selection[done], estimation[done])
    expected = [algorithm.certify(selection[p], estimation[p]) for p in np.flatnonzero(done)]
    assert list(zip(predicted.tolist(), radius.tolist(), lower.tolist(), strict=True)) == expected
    np.testing.assert_array_equal(algorithm.predict_many(estimation[done]),
                                  [algorithm.predict(estimation[p]) for p in np.flatnonzero(done)])
    with pytest.raises(ValueError, match="not among the looks"):
        algorithm.look_alphas_of(np.array([123]))


def test_upper_bounds_are_one_at_all_successes_and_monotone():
    bounds = upper_confidence_bounds(np.array([0, 5, 10, 10]), np.array([10, 10, 10, 20]), 0.001)
    assert bounds[2] == 1.0 and bounds[0] < bounds[1] < 1.0 and bounds[3] < 1.0
