"""`affected`: exactly the customers who saw a failure."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from prodlens.analysis import Filters, SliceOptions, affected_customers
from prodlens.analysis._output import render_affected_csv
from prodlens.analysis.synthetic import SyntheticTraces


def test_lists_exactly_the_customers_with_failures(planted: SyntheticTraces,
                                                   planted_dir: Path) -> None:
    report = affected_customers([planted_dir])
    listed = {row.customer for row in report.customers}
    assert listed == planted.failed_customers
    assert not report.pseudonymised
    for row in report.customers:
        assert 1 <= row.failures <= row.requests
        assert row.first_failure_ns <= row.last_failure_ns
        assert row.operations
        assert set(row.cohorts) == {"prodlens.cohort.new_checkout", "prodlens.cohort.plan",
                                    "prodlens.cohort.region"}
    failures = [row.failures for row in report.customers]
    assert failures == sorted(failures, reverse=True)


def test_csv_columns(planted_dir: Path) -> None:
    text = render_affected_csv(affected_customers([planted_dir]))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:6] == ["customer", "failures", "requests", "first_failure", "last_failure",
                           "operations"]
    assert rows[0][6:] == ["prodlens.cohort.new_checkout", "prodlens.cohort.plan",
                           "prodlens.cohort.region"]
    first = rows[1]
    assert first[3].endswith("Z") and "T" in first[3]


def test_where_narrows_to_a_subgroup(planted_dir: Path) -> None:
    eu = affected_customers([planted_dir], SliceOptions(filters=Filters(
        where=(("prodlens.cohort.region", "eu-west", True),))))
    assert eu.customers
    assert all(row.cohorts["prodlens.cohort.region"] == ("eu-west",) for row in eu.customers)
