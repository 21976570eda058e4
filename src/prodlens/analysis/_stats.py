"""The significance test: one-sided Fisher exact test, Bonferroni-corrected.

For a subgroup of ``n`` units with ``x`` failures, out of ``N`` units with ``K`` failures in all,
the null hypothesis is that failures fall on units regardless of the subgroup. Then ``x`` follows
the hypergeometric distribution, and the one-sided p-value is ``P(X >= x)``. It is exact at any
size (no normal approximation, which is poor at failure rates near 0), and computed in log space
so that tiny p-values do not underflow when ranking.
"""

from __future__ import annotations

import math


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_log_p(x: int, n: int, failures: int, total: int) -> float:
    """Natural log of the one-sided Fisher exact p-value ``P(X >= x)``.

    Args:
        x: Failures in the subgroup.
        n: Units in the subgroup.
        failures: Failures overall (``K``).
        total: Units overall (``N``).

    Example::

        >>> round(math.exp(fisher_log_p(3, 3, 3, 6)), 4)  # 1 / C(6, 3)
        0.05
    """
    if not (0 <= x <= n <= total and 0 <= failures <= total):
        raise ValueError("need 0 <= x <= n <= total and 0 <= failures <= total")
    low = max(x, n + failures - total)
    high = min(n, failures)
    if low > high:
        return -math.inf
    if low == max(0, n + failures - total):
        return 0.0  # the whole support: P = 1
    base = _log_comb(total, n)
    logs: list[float] = []
    peak = -math.inf
    for i in range(low, high + 1):
        term = _log_comb(failures, i) + _log_comb(total - failures, n - i) - base
        logs.append(term)
        if term > peak:
            peak = term
        elif term < peak - 40.0:  # past the mode terms only shrink; e^-40 is below precision
            break
    return min(0.0, peak + math.log(sum(math.exp(t - peak) for t in logs)))


def design_effect_log_p(x: int, n: int, failures: int, total: int, design_effect: float
                        ) -> float:
    """:func:`fisher_log_p` on counts divided by ``design_effect`` (clustered failures).

    When each failure shows up on ``d`` units on average (every service on a failed request's
    path), the effective sample is ``d`` times smaller. Dividing the counts by ``d`` (failures
    rounded down, which is conservative) is the first-order Rao-Scott correction.

    Example::

        >>> design_effect_log_p(10, 20, 10, 40, 1.0) < design_effect_log_p(10, 20, 10, 40, 2.0)
        True
    """
    if design_effect <= 1.0:
        return fisher_log_p(x, n, failures, total)
    scaled_total = max(1, round(total / design_effect))
    scaled_n = min(scaled_total, max(0, round(n / design_effect)))
    scaled_failures = min(scaled_total, max(0, round(failures / design_effect)))
    scaled_x = min(scaled_n, scaled_failures, int(x / design_effect))
    return fisher_log_p(scaled_x, scaled_n, scaled_failures, scaled_total)


def bonferroni(log_p: float, tests: int) -> float:
    """The Bonferroni-adjusted p-value ``min(1, p * tests)`` from a log p-value."""
    return min(1.0, math.exp(log_p + math.log(max(1, tests))))
