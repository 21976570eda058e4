"""False alarms under repeated testing, over long stretches of simulated span time.

The simulation (``prodlens.live.simulate``) makes the buckets the engine would have closed and
runs the real window, engine report, detector and incident manager over them."""

from __future__ import annotations

import pytest

from prodlens.analysis import SliceOptions
from prodlens.live import DetectOptions, WatchOptions
from prodlens.live.simulate import Traffic, simulate

SEEDS = range(8)
HOURS = 1.0


def test_clean_traffic_raises_no_incident_over_many_seeds(
        capsys: pytest.CaptureFixture[str]) -> None:
    false = 0
    evaluations = 0
    for seed in SEEDS:
        result = simulate(hours=HOURS, seed=seed)
        false += result.false_incidents
        evaluations += result.evaluations
    with capsys.disabled():
        print(f"\nwatch defaults: {false} false incidents in {len(SEEDS) * HOURS:g} simulated "
              f"hours at 100 rps ({evaluations:,} evaluations)")
    assert evaluations == len(SEEDS) * HOURS * 360
    assert false == 0


def test_without_the_rules_the_same_traffic_raises_false_incidents() -> None:
    # One significant evaluation at slice's alpha, any effect size: repeated testing bites.
    naive = WatchOptions(slice=SliceOptions(alpha=0.05, min_failures=1),
                         detect=DetectOptions(confirm=1, min_lift=1.0, min_delta=0.0001))
    false = sum(simulate(hours=0.5, seed=seed, options=naive).false_incidents
                for seed in (0, 1))
    assert false > 0


def test_a_planted_subgroup_is_found_within_a_minute_at_100_rps() -> None:
    for seed in (1, 2):
        traffic = Traffic(planted=("enterprise", "ap-south"), planted_share=0.02,
                          planted_rate=0.2, base_rate=0.005, onset=400, fixed=800)
        result = simulate(hours=0.25, traffic=traffic, seed=seed)
        assert result.false_incidents == 0
        assert result.first_open is not None and result.first_open - 400 <= 60
        assert result.notified_customers >= result.planted_customers
