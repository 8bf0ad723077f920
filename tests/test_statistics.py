"""Unit tests of the pure statistics against closed forms and statsmodels."""

import math

import numpy as np
import pytest
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint

from audiocert.statistics import (
    ABSTAIN,
    certified_accuracy,
    certify_from_counts,
    fewest_samples_to_certify,
    lower_confidence_bound,
    max_certifiable_radius,
    predict_from_counts,
    predict_p_value,
    radius_from_lower_bound,
    snr_db,
)
from audiocert.tables import radius_table, radius_table_markdown


@pytest.mark.parametrize("k,n", [(1, 10), (5, 10), (9, 10), (500, 1000), (9990, 10000), (123, 457)])
@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05])
def test_lower_bound_matches_statsmodels(k, n, alpha):
    expected = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(expected, rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("n", [1, 10, 1000, 10000, 100000])
def test_all_correct_bound_is_alpha_to_one_over_n(n):
    assert lower_confidence_bound(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-10)


def test_zero_successes_bound_is_zero():
    assert lower_confidence_bound(0, 100, 0.01) == 0.0


def test_max_radius_closed_form_and_design_values():
    assert max_certifiable_radius(1.0, 1000, 0.001) == pytest.approx(2.463, abs=5e-4)
    assert max_certifiable_radius(1.0, 10000, 0.001) == pytest.approx(3.199, abs=5e-4)
    assert max_certifiable_radius(1.0, 100000, 0.001) == pytest.approx(3.811, abs=5e-4)
    assert max_certifiable_radius(0.5, 10000, 0.001) == pytest.approx(1.599, abs=5e-4)  # seed printed 1.160
    assert max_certifiable_radius(0.3, 777, 0.01) == pytest.approx(0.3 * norm.ppf(0.01 ** (1 / 777)))


@pytest.mark.parametrize("radius,sigma,alpha", [(0.75, 0.25, 0.001), (1.5, 0.5, 0.001), (0.05, 0.05, 0.001),
                                                (0.01, 0.25, 0.001), (1.0, 0.25, 0.1), (0.5, 0.5, 0.01)])
def test_fewest_samples_to_certify_is_where_all_agreeing_samples_first_certify(radius, sigma, alpha):
    """Clopper-Pearson with m of m samples gives alpha^(1/m): it certifies `radius` from the floor on, not before."""
    m = fewest_samples_to_certify(radius, sigma, alpha)
    assert radius_from_lower_bound(lower_confidence_bound(m, m, alpha), sigma) >= radius
    if m > 1:
        assert radius_from_lower_bound(lower_confidence_bound(m - 1, m - 1, alpha), sigma) < radius
    assert max_certifiable_radius(sigma, m, alpha) >= radius


def test_fewest_samples_to_certify_values_and_refusals():
    assert fewest_samples_to_certify(0.75, 0.25, 0.001) == 5114  # r / sigma = 3: the paper grid's hard case
    assert fewest_samples_to_certify(0.05, 0.05, 0.001) == 40
    for bad in [(0.0, 0.25, 0.001), (0.5, 0.0, 0.001), (0.5, 0.25, 0.0)]:
        with pytest.raises(ValueError):
            fewest_samples_to_certify(*bad)


def test_radius_table_exact_and_formatted():
    table = radius_table([0.5, 1.0], [1000, 10000], 0.001)
    assert table[0][1] == pytest.approx(1.599, abs=5e-4)
    text = radius_table_markdown([0.01, 0.05, 0.10, 0.25, 0.50, 1.00, 2.00, 3.00], [1000, 10000, 100000], 0.001)
    assert "| 0.50 | 1.232 | 1.599 | 1.906 |" in text
    assert "| 1.00 | 2.463 | 3.199 | 3.811 |" in text
    assert "| 3.00 | 7.390 | 9.596 | 11.434 |" in text
    with pytest.raises(ValueError, match="sigma"):
        radius_table([0.0], [10], 0.001)


def test_certify_from_counts_picks_class_from_selection_only():
    selection = np.array([2, 8, 0])
    estimation = np.array([990, 10, 0])  # estimation favours class 0, but A comes from selection
    prediction, radius, p_lower = certify_from_counts(selection, estimation, 0.001, 0.5)
    assert prediction == ABSTAIN and radius == 0.0 and p_lower < 0.5
    prediction, radius, p_lower = certify_from_counts(np.array([9, 1, 0]), estimation, 0.001, 0.5)
    assert prediction == 0
    assert radius == pytest.approx(0.5 * norm.ppf(lower_confidence_bound(990, 1000, 0.001)))


def test_certify_rejects_bad_input():
    with pytest.raises(ValueError, match="sigma"):
        certify_from_counts([1, 0], [1, 0], 0.01, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        certify_from_counts([1, 0], [1, 0], 0.7, 1.0)


def test_predict_binomial_test():
    assert predict_from_counts([60, 40, 0], 0.05) == ABSTAIN  # p = 0.057
    assert predict_from_counts([61, 39, 0], 0.05) == 0  # p = 0.035
    assert predict_from_counts([0, 3, 100], 0.001) == 2
    assert predict_p_value(50, 50) == pytest.approx(1.0)


def test_radius_and_accuracy_helpers():
    assert radius_from_lower_bound(0.5, 1.0) == 0.0
    radii, correct = [0.0, 0.3, 0.6, 0.9], [False, True, True, False]
    assert certified_accuracy(radii, correct, 0.0) == 0.5
    assert certified_accuracy(radii, correct, 0.5) == 0.25
    assert certified_accuracy(radii, correct, 1.0) == 0.0
    assert snr_db(10.0, 0.1) == pytest.approx(40.0)
    assert math.isinf(snr_db(1.0, 0.0))
