"""Cohort-aware sampling: watched traces kept, the rest at the ratio, whole traces, capped."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

import prodlens
from prodlens.config import ConfigError
from prodlens.signals.sampling import ProdlensSampler, TokenBucket, sampler_factory


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(s: Any, customer: str | None, children: int = 2, **cohorts: str) -> None:
    with prodlens.tag(customer, **cohorts):
        with s.tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER,
                                            attributes={"http.route": "/cart"}):
            for _ in range(children):
                with s.tracer.start_as_current_span("db"):
                    pass


def exported_traces(s: Any) -> dict[int, list[Any]]:
    traces: dict[int, list[Any]] = {}
    for span in s.spans():
        traces.setdefault(span.context.trace_id, []).append(span)
    return traces


def customers_of(s: Any) -> list[str]:
    return [span.attributes["enduser.id"] for span in s.spans() if span.parent is None]


@pytest.mark.parametrize("ratio", [0.01, 0.0])
def test_watched_customer_kept_others_at_ratio(signals: Any, ratio: float) -> None:
    # The budget of forced decisions is per second: this loop runs far faster than real traffic.
    s = signals(ProdlensSampler(ratio=ratio, always="customer:acme,plan:enterprise",
                                always_per_second=1e6, record_unsampled_roots=True))
    for i in range(500):
        request(s, "acme", plan="pro")
        request(s, f"other-{i}", plan="enterprise")
        request(s, f"other-{i}", plan="free")
    kept = customers_of(s)
    assert kept.count("acme") == 500
    assert sum(1 for c in kept if c.startswith("other")) >= 500  # every enterprise request
    free = [span for span in s.spans()
            if span.parent is None and span.attributes["prodlens.cohort.plan"] == "free"]
    assert len(free) <= (0 if ratio == 0 else 20)
    for spans in exported_traces(s).values():
        assert len(spans) == 3  # whole traces only
    assert s.total("prodlens.requests") == 1500  # metrics count everything


@pytest.mark.parametrize("ratio", [0.05, 0.25, 0.5])
def test_others_come_out_at_the_ratio(signals: Any, ratio: float) -> None:
    s = signals(ProdlensSampler(ratio=ratio, always="customer:acme"), seed=int(ratio * 100))
    n = 8000
    for i in range(n):
        request(s, f"c{i}", children=0, plan="free")
    kept = len(s.spans())
    sd = (n * ratio * (1 - ratio)) ** 0.5
    assert abs(kept - n * ratio) < 5 * sd


def test_decision_is_deterministic_by_trace_id() -> None:
    sampler = ProdlensSampler(ratio=0.5, always="")
    ids = [i * 0x9E3779B97F4A7C15 % (1 << 128) for i in range(1, 2000)]
    first = [sampler.should_sample(None, t, "x", SpanKind.SERVER).decision for t in ids]
    second = [sampler.should_sample(None, t, "x", SpanKind.SERVER).decision for t in ids]
    assert first == second


def test_children_follow_the_parent_local_and_remote() -> None:
    sampler = ProdlensSampler(ratio=0.0, always="customer:acme", record_unsampled_roots=True)

    def parent(sampled: bool, remote: bool) -> Any:
        flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        return trace.set_span_in_context(NonRecordingSpan(SpanContext(7, 9, remote, flags)))

    def decide(ctx: Any, kind: SpanKind = SpanKind.INTERNAL) -> Decision:
        return sampler.should_sample(ctx, 7, "x", kind).decision

    with prodlens.tag("acme"):  # a watched identity never overrides a parent's decision
        assert decide(parent(True, False)) is Decision.RECORD_AND_SAMPLE
        assert decide(parent(False, False)) is Decision.DROP
        assert decide(parent(True, True), SpanKind.SERVER) is Decision.RECORD_AND_SAMPLE
        # An unsampled remote parent: this service's root is recorded for metrics, not exported.
        assert decide(parent(False, True), SpanKind.SERVER) is Decision.RECORD_ONLY
        assert decide(parent(False, True), SpanKind.CLIENT) is Decision.DROP


def test_sampler_passes_span_attributes_through() -> None:
    sampler = ProdlensSampler(ratio=1.0)
    result = sampler.should_sample(None, 5, "x", SpanKind.SERVER, {"http.route": "/a"})
    assert dict(result.attributes) == {"http.route": "/a"}


def test_unsampled_roots_dropped_when_metrics_are_off() -> None:
    sampler = ProdlensSampler(ratio=0.0, record_unsampled_roots=False)
    assert sampler.should_sample(None, 5, "x", SpanKind.SERVER).decision is Decision.DROP


def test_cap_holds_under_a_flood_of_forged_watched_requests(signals: Any) -> None:
    clock = FakeClock()
    s = signals(ProdlensSampler(ratio=0.0, always="customer:acme", always_per_second=100,
                                record_unsampled_roots=True, clock=clock))
    # 10 simulated seconds, 1,000 forged "acme" requests per second.
    for _second in range(10):
        for _ in range(1000):
            request(s, "acme", children=0)
            clock.now += 0.001
    kept = len(s.spans())
    assert 100 * 10 <= kept <= 100 + 100 * 10  # the burst plus the refill, no more
    assert s.total("prodlens.requests") == 10000


def test_cap_falls_back_to_the_ratio(signals: Any) -> None:
    clock = FakeClock()
    s = signals(ProdlensSampler(ratio=0.5, always="customer:acme", always_per_second=10,
                                clock=clock), seed=3)
    for _ in range(4000):
        request(s, "acme", children=0)
    kept = len(s.spans())
    assert abs(kept - (10 + 0.5 * 3990)) < 5 * (4000 * 0.25) ** 0.5


def test_token_bucket_refills_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, clock=clock)
    assert sum(bucket.take() for _ in range(100)) == 5
    clock.now += 1.0
    assert sum(bucket.take() for _ in range(100)) == 5
    clock.now += 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(100)) == 5
    assert not TokenBucket(0, clock=clock).take()


def test_pseudonymised_watched_customer(signals: Any) -> None:
    key = "0123456789abcdef0123"
    s = signals(ProdlensSampler(ratio=0.0), pseudonymize=True, pseudonym_key=key,
                sample_always=["customer:acme"])
    request(s, "acme", children=0)
    request(s, "globex", children=0)
    request(s, prodlens.pseudonym("acme", key), children=0)  # a raw id equal to the pseudonym
    roots = [span.attributes["enduser.pseudo.id"] for span in s.spans()]
    assert roots == [prodlens.pseudonym("acme", key)]


def test_sampler_follows_settings_in_force(signals: Any) -> None:
    s = signals(ProdlensSampler(), sample_ratio=0.0, sample_always=["plan:enterprise"])
    request(s, "a", children=0, plan="enterprise")
    request(s, "b", children=0, plan="free")
    assert customers_of(s) == ["a"]


def test_explicit_bad_arguments_fail_fast() -> None:
    with pytest.raises(ConfigError, match="PRODLENS_SAMPLE_RATIO"):
        ProdlensSampler(ratio=2.0)
    with pytest.raises(ConfigError, match="PRODLENS_SAMPLE_ALWAYS"):
        ProdlensSampler(always="nocolon")


@pytest.mark.parametrize("arg", ["", "0.25", "1", "banana", "2.5", "-1", "nan"])
def test_factory_never_raises(arg: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="prodlens"):
        sampler = sampler_factory(arg)
    assert isinstance(sampler, ProdlensSampler)
    if arg == "0.25":
        assert sampler.get_description() == "ProdlensSampler{ratio=0.25}"


def zero_code(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a script under ``opentelemetry-instrument`` (the SDK configurator reads the env)."""
    script = textwrap.dedent("""
        from opentelemetry import trace
        sampler = trace.get_tracer_provider().sampler
        print(type(sampler).__name__, sampler.get_description())
    """)
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    full = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none", "OTEL_TRACES_SAMPLER": "prodlens", **env}
    return subprocess.run([instrument, sys.executable, "-c", script], env=full,
                          capture_output=True, text=True, timeout=60, check=True)


def test_entry_point_selected_by_otel_traces_sampler() -> None:
    out = zero_code({"OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert out.stdout.strip() == "ProdlensSampler ProdlensSampler{ratio=0.5}"


def test_entry_point_with_bad_argument_and_settings_still_samples() -> None:
    # A bad argument and bad settings are logged; the SDK still gets the prodlens sampler.
    out = zero_code({"OTEL_TRACES_SAMPLER_ARG": "not-a-number", "PRODLENS_SAMPLE_RATIO": "oops"})
    assert out.stdout.startswith("ProdlensSampler ")
    assert "OTEL_TRACES_SAMPLER_ARG" in out.stderr
