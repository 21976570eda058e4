"""Analysis on realistic traces: the seven ways it went wrong, each checked.

The mesh fixtures come from :func:`prodlens.analysis.synthetic.generate_mesh` (five services
through the real SDK: remote parents, errors propagated across three services, handled 404s
and database deadlocks, aliasing attributes, per-host resources, id-like attributes); the exact
counts come from hand-written OTLP/JSON lines (:mod:`otlp_lines`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from otlp_lines import line, span, write

from prodlens.analysis import (
    ABSENT,
    Finding,
    Report,
    SliceOptions,
    affected_customers,
    slice_failures,
)
from prodlens.analysis._stats import bonferroni, fisher_log_p
from prodlens.analysis.synthetic import CANARY_VERSION, MeshTraces, generate_mesh

CANARY = {"service.version": CANARY_VERSION}


def descriptions(finding: Finding) -> list[dict[str, str]]:
    return [dict(finding.subgroup), *(dict(alias) for alias in finding.aliases)]


def find(report: Report, subgroup: dict[str, str]) -> Finding | None:
    for finding in report.findings:
        if subgroup in descriptions(finding):
            return finding
    return None


# -- 2. the culprit, not the attribute its whole failing path shares --------------------------


@pytest.fixture(scope="module")
def canary_only(tmp_path_factory: pytest.TempPathFactory) -> MeshTraces:
    """The payments canary alone: failures propagate payments -> orders -> frontend."""
    return generate_mesh(tmp_path_factory.mktemp("canary"), traces=4000, seed=2,
                         not_found_rate=0.0, deadlock_rate=0.0)


def test_the_canary_version_outranks_the_method_its_failing_path_shares(
        canary_only: MeshTraces) -> None:
    report = slice_failures(canary_only.paths)
    top = report.findings[0]
    assert dict(top.subgroup) == CANARY, report.findings[:3]
    assert report.verdict().startswith("failures concentrate in service.version=1.5.0: ")
    # one failed unit per failed trace for the canary; about three for POST, on every hop
    assert top.design_effect == 1.0
    post = find(report, {"http.request.method": "POST"})
    assert post is not None and post.design_effect > 2.5
    assert post.p_value > top.p_value


def test_a_small_unclustered_subgroup_keeps_its_power(tmp_path: Path) -> None:
    """5 failures in 20 units: the plain Fisher p-value, not one shrunk by other subgroups'
    clustering (a five-service incident elsewhere makes the global design effect ~2.8)."""
    lines = []
    number = 0
    for trace in range(300):  # checkout crosses five services; 30 traces fail in all five
        for hop in range(5):
            number += 1
            lines.append(line(f"svc-{hop}", [span(trace, number, {"op": "checkout"},
                                                  error=trace < 30)]))
    for trace in range(1000, 7000):  # single-service browsing, 0.5% failing
        number += 1
        lines.append(line("browse", [span(trace, number, {"op": "browse"},
                                          error=trace % 200 == 0)]))
    for trace in range(9000, 9020):
        number += 1
        lines.append(line("browse", [span(trace, number, {"op": "browse", "tier": "gold"},
                                          error=trace < 9005)]))
    write(tmp_path / "spans.jsonl", lines)
    report = slice_failures([tmp_path])
    gold = find(report, {"tier": "gold"})
    assert gold is not None, report.findings
    assert (gold.units, gold.failures, gold.design_effect) == (20, 5, 1.0)
    plain = bonferroni(fisher_log_p(5, 20, report.failures, report.units), report.tested)
    assert gold.p_value == pytest.approx(plain)
    assert report.design_effect > 2.5


# -- 3. every incident: aliases are one finding, and the pair budget reaches the second one ---


def test_aliases_are_one_finding_listing_every_description(mesh_dir: Path) -> None:
    report = slice_failures([mesh_dir])
    payments = find(report, {"service.name": "payments"})
    assert payments is not None
    assert {"http.route": "/charge"} in descriptions(payments)
    assert {"span.name": "POST /charge"} in descriptions(payments)
    assert {"k8s.deployment.name": "payments"} in descriptions(payments)
    # the same counts on other units (each checkout has one unit in each service) is no alias
    orders = find(report, {"http.route": "/orders"})
    assert orders is not None and orders is not payments
    assert (orders.units, orders.failures) == (payments.units, payments.failures)
    labels = [label for finding in report.findings for label in finding.labels()]
    assert len(labels) == len(set(labels))  # no description shows up twice
    assert "service.name=payments" in payments.labels()


@pytest.mark.parametrize("handled", [True, False], ids=["handled-errors", "no-handled-errors"])
def test_a_second_incident_is_found_within_the_default_pair_budget(
        handled: bool, mesh_dir: Path, tmp_path: Path) -> None:
    # Without handled errors (seed 3) the canary's hosts and the POST path are rising singles
    # of their own; their pairs with the version are the version: they must take no slot.
    paths = [mesh_dir] if handled else list(generate_mesh(
        tmp_path, traces=4000, seed=3, second_incident=True, not_found_rate=0.0,
        deadlock_rate=0.0).paths)
    report = slice_failures(paths)
    assert dict(report.findings[0].subgroup) == CANARY
    second = [f for f in report.findings
              if f.interaction and f.subgroup.get("prodlens.cohort.plan") == "free"
              and "ap-south" in f.label()]
    assert second, [f.label() for f in report.findings]
    assert second[0].p_value < 1e-6


# -- 4. one ordering; an interaction only when a test says so ---------------------------------


def test_findings_follow_one_ordering(mesh_dir: Path) -> None:
    report = slice_failures([mesh_dir])
    keys = [(f.p_value, -f.rate) for f in report.findings]
    assert keys == sorted(keys)
    assert any(f.interaction for f in report.findings)


def test_a_pair_above_its_parts_by_chance_is_no_interaction(tmp_path: Path) -> None:
    """The pair fails 17.5%, its parts 10% each: 1.75x, but 7 failures in 40 units of a part
    failing 10% is what chance gives (p ~ 0.1), so no interaction is claimed."""
    spans = []
    groups = [("x", "y", 40, 7), ("x", "o", 360, 33), ("o", "y", 360, 33), ("o", "o", 3240, 32)]
    number = 0
    for a, b, units, failed in groups:
        for index in range(units):
            number += 1
            spans.append(span(number, number, {"a": a, "b": b}, error=index < failed))
    write(tmp_path / "spans.jsonl", [line("svc", spans)])
    report = slice_failures([tmp_path])
    assert [dict(f.subgroup) for f in report.findings] == [{"a": "x"}, {"b": "y"}]
    assert not any(f.interaction for f in report.findings)


@pytest.mark.parametrize("seed", range(20, 26))
def test_the_single_cause_is_named_at_small_samples(seed: int, tmp_path: Path) -> None:
    truth = generate_mesh(tmp_path, traces=3000, seed=seed)
    report = slice_failures(truth.paths)
    assert dict(report.findings[0].subgroup) == CANARY, [f.label() for f in report.findings]


# -- 5 and 6. affected: requests as the customer made them, every cohort column ---------------


def test_affected_counts_requests_and_failures_as_customers_saw_them(mesh: MeshTraces,
                                                                    mesh_dir: Path) -> None:
    report = affected_customers([mesh_dir])
    listed = {c.customer: (c.failures, c.requests) for c in report.customers}
    assert listed == {customer: (failed, mesh.requests[customer])
                      for customer, failed in mesh.failures.items()}


def test_affected_keeps_an_id_like_cohort_dropped_midstream(
        mesh: MeshTraces, mesh_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prodlens.analysis import _embedded

    monkeypatch.setattr(_embedded, "_TABLE_BUDGET", 100)  # the account cohort is dropped early
    report = affected_customers([mesh_dir])
    assert len(report.customers) == len(mesh.failures)
    for customer in report.customers:
        assert customer.cohorts["prodlens.cohort.account"] == (mesh.accounts[customer.customer],)


def test_handled_errors_fail_no_unit(tmp_path: Path) -> None:
    """404s from inventory and retried deadlocks only: the customer never saw a failure."""
    truth = generate_mesh(tmp_path, traces=2000, seed=4, canary=False, base_rate=0.0,
                          not_found_rate=0.3, deadlock_rate=0.2)
    assert truth.handled > 250 and truth.failed_traces == 0
    report = slice_failures(truth.paths)
    assert (report.failures, report.findings) == (0, ())
    assert affected_customers(truth.paths).customers == ()
    # the old rule, on request: every handled error fails the unit that handled it
    old = slice_failures(truth.paths, SliceOptions(failure="any-span"))
    assert old.failures == truth.handled
    assert dict(old.findings[0].subgroup) == {"service.name": "orders"} or \
        {"service.name": "orders"} in descriptions(old.findings[0])


def test_a_root_answering_5xx_fails_without_an_error_status(tmp_path: Path) -> None:
    spans = [span(n, n, {"http.response.status_code": 503 if n < 30 else 200,
                         "tier": "a" if n < 60 else "b"}) for n in range(200)]
    for item in spans[::2]:  # int64 as a JSON number too, as some writers do
        code = item["attributes"][0]["value"]
        code["intValue"] = int(code["intValue"])
    write(tmp_path / "spans.jsonl", [line("svc", spans)])
    report = slice_failures([tmp_path])
    assert (report.units, report.failures) == (200, 30)
    assert [dict(f.subgroup) for f in report.findings] == [{"tier": "a"}]


# -- 7. absence is a value; p-values below float range ----------------------------------------


def test_an_attribute_on_some_units_is_tested_present_against_absent(tmp_path: Path) -> None:
    spans = []
    for n in range(2000):
        attributes: dict[str, object] = {"plan": "pro" if n % 2 else "free"}
        if n < 200:
            attributes["feature.flag"] = "on"  # set only when on
        if n >= 400:
            attributes["cache.hit"] = "true"  # missing where the cache was bypassed
        failing = (n < 200 and n % 5 == 0) or (200 <= n < 400 and n % 4 == 0) or n % 100 == 0
        spans.append(span(n, n, attributes, error=failing))
    write(tmp_path / "spans.jsonl", [line("svc", spans)])
    report = slice_failures([tmp_path])
    found = [dict(f.subgroup) for f in report.findings]
    assert {"feature.flag": "on"} in found
    assert {"cache.hit": ABSENT} in found
    flag = find(report, {"cache.hit": ABSENT})
    assert flag is not None and flag.label() == "cache.hit (absent)"
    assert (flag.units, flag.failures) == (400, 90)


def test_p_values_below_float_range_are_ordered_and_shown_as_such(tmp_path: Path) -> None:
    from prodlens.analysis._output import render_csv, render_table

    spans = [span(n, n, {"zone": f"z{n % 4}", "pool": "hot" if n < 1500 else "cold"},
                  error=n < 1500) for n in range(20_000)]
    write(tmp_path / "spans.jsonl", [line("svc", spans)])
    report = slice_failures([tmp_path])
    top = report.findings[0]
    assert dict(top.subgroup) == {"pool": "hot"} and top.p_value == 0.0
    assert "< 1e-300" in render_table(report)
    assert "< 1e-300" in render_csv(report)
    assert not math.isnan(top.p_value)
