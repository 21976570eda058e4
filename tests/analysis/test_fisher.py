"""The significance test against exact arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from prodlens.analysis._stats import bonferroni, design_effect_log_p, fisher_log_p


def exact_upper_tail(x: int, n: int, failures: int, total: int) -> Fraction:
    denominator = math.comb(total, n)
    return sum(
        (Fraction(math.comb(failures, i) * math.comb(total - failures, n - i), denominator)
         for i in range(x, min(n, failures) + 1)),
        Fraction(0),
    )


@pytest.mark.parametrize(("x", "n", "failures", "total"), [
    (3, 3, 3, 6), (0, 5, 2, 10), (2, 5, 2, 10), (5, 20, 8, 100), (12, 40, 15, 400),
    (1, 1, 1, 2), (7, 50, 7, 1000), (30, 200, 60, 3000), (4, 10, 10, 20),
])
def test_fisher_matches_exact_hypergeometric_tail(x: int, n: int, failures: int,
                                                  total: int) -> None:
    expected = float(exact_upper_tail(x, n, failures, total))
    assert math.exp(fisher_log_p(x, n, failures, total)) == pytest.approx(expected, rel=1e-9)


def test_tiny_p_values_stay_ordered_in_log_space() -> None:
    strong = fisher_log_p(900, 1000, 1000, 100_000)
    stronger = fisher_log_p(990, 1000, 1000, 100_000)
    assert math.exp(strong) == 0.0  # underflows as a float ...
    assert stronger < strong < -1000  # ... but ranks correctly


def test_bonferroni_caps_at_one_and_multiplies() -> None:
    assert bonferroni(math.log(0.001), 10) == pytest.approx(0.01)
    assert bonferroni(math.log(0.5), 10) == 1.0


def test_design_effect_makes_the_test_more_conservative() -> None:
    plain = design_effect_log_p(20, 200, 40, 2000, 1.0)
    clustered = design_effect_log_p(20, 200, 40, 2000, 2.0)
    assert plain < clustered < 0


def test_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        fisher_log_p(5, 3, 5, 10)
