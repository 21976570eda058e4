"""Regression tests for isolation and integrity defects of the core (issue 15).

- one ``prodlens.tag`` instance shared by concurrent requests never swaps their identities;
- a scope closed from another context is reported once and never "repaired" into another
  request's state;
- an ``Identity`` cannot be mutated, nor built inconsistent, and compares by what it stamps;
- ``identify(None)`` clears the identity.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import logging
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import prodlens
from prodlens._scope import close_scope, open_scope

REQUESTS = 1000
#: A module-level tag, as an application writes one: shared by every request.
BATCH = prodlens.tag(plan="batch")


def _assert_own_customer(spans, expected: int) -> None:
    assert len(spans) == expected
    for span in spans:
        owner = span.name.split(":", 1)[1]
        assert span.attributes["enduser.id"] == owner, span.name


def test_shared_tag_instance_across_asyncio_tasks_never_swaps_identities(traced_with):
    traced = traced_with(max_cohort_values=REQUESTS)
    tracer = traced.tracer

    async def request(customer: str) -> None:
        with prodlens.tag(customer):  # the request's own scope
            async with BATCH:
                with tracer.start_as_current_span(f"inside:{customer}"):
                    await asyncio.sleep(0)  # every other task enters and leaves BATCH here
            await asyncio.sleep(0)
            with tracer.start_as_current_span(f"after:{customer}"):
                pass

    async def main() -> None:
        await asyncio.gather(*(request(f"c{i}") for i in range(REQUESTS)))

    asyncio.run(main())
    spans = traced.spans()
    _assert_own_customer(spans, 2 * REQUESTS)
    inside = [s for s in spans if s.name.startswith("inside:")]
    assert all(s.attributes["prodlens.cohort.plan"] == "batch" for s in inside)
    after = [s for s in spans if s.name.startswith("after:")]
    assert all("prodlens.cohort.plan" not in s.attributes for s in after)


def test_shared_tag_instance_across_threads_never_swaps_identities(traced_with):
    traced = traced_with(max_cohort_values=REQUESTS)
    tracer = traced.tracer
    entered = threading.Barrier(8)

    def request(i: int) -> None:
        customer = f"c{i}"
        with prodlens.tag(customer):
            with BATCH, tracer.start_as_current_span(f"inside:{customer}"):
                if i < 8:
                    entered.wait(timeout=10)  # eight threads inside BATCH at once
            with tracer.start_as_current_span(f"after:{customer}"):
                pass

    with ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(request, i) for i in range(REQUESTS)]:
            future.result(timeout=60)
    spans = traced.spans()
    _assert_own_customer(spans, 2 * REQUESTS)
    after = [s for s in spans if s.name.startswith("after:")]
    assert all("prodlens.cohort.plan" not in s.attributes for s in after)


def test_scope_closed_from_another_context_is_reported_once_and_not_repaired(
        traced, caplog):
    with prodlens.tag("alice"):
        alice_token = open_scope(None)
        bob_context = contextvars.copy_context()

        def bob() -> str | None:
            with prodlens.tag("bob"):
                close_scope(alice_token)  # a bug: alice's token, closed in bob's context
                close_scope(alice_token)
                identity = prodlens.current()
                return None if identity is None else identity.customer

        with caplog.at_level(logging.WARNING, logger="prodlens"):
            seen_by_bob = bob_context.run(bob)
        # Bob's context still holds bob's scope: nothing was "repaired" into alice's state.
        assert seen_by_bob == "bob"
        close_scope(alice_token)
        assert prodlens.current().customer == "alice"
    errors = [r for r in caplog.records if "outside the context that opened it" in r.getMessage()]
    assert len(errors) == 1


def test_tag_exit_in_another_context_is_reported_and_changes_nothing(traced, caplog):
    shared = prodlens.tag("acme")
    shared.__enter__()
    other = contextvars.copy_context()
    with caplog.at_level(logging.WARNING, logger="prodlens"):
        other.run(lambda: prodlens.tag("bob").__enter__())
        other.run(shared.__exit__, None, None, None)  # bob's scope is current there
        assert other.run(lambda: prodlens.current().customer) == "bob"
    assert any("had not started" in r.getMessage() for r in caplog.records)
    assert prodlens.current().customer == "acme"
    shared.__exit__(None, None, None)
    assert prodlens.current() is None


def test_identity_cannot_be_mutated(traced):
    with prodlens.tag("acme", plan="pro"):
        identity = prodlens.current()
        with pytest.raises(TypeError):
            identity.attributes["enduser.id"] = "mallory"  # type: ignore[index]
        with pytest.raises(TypeError):
            identity.cohorts["plan"] = "free"  # type: ignore[index]
        with pytest.raises(AttributeError):
            identity.customer = "mallory"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            del identity.attributes
    # The next request of the same customer (a cached identity) is unchanged.
    with prodlens.tag("acme", plan="pro"), traced.tracer.start_as_current_span("next"):
        pass
    assert traced.by_name()["next"] == {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}


def test_identity_cannot_be_built_inconsistent():
    with pytest.raises(TypeError, match="cannot be constructed directly"):
        prodlens.Identity("acme", {"plan": "pro"})  # type: ignore[call-arg]


def test_identity_equality_follows_what_it_stamps(traced):
    with prodlens.tag("acme", plan="pro"):
        from_tag = prodlens.current()
    with prodlens.tag():
        from_identify = prodlens.identify("acme", plan="pro")
    with prodlens.tag("acme", plan="free"):
        other_plan = prodlens.current()
    assert from_tag == from_identify and hash(from_tag) == hash(from_identify)
    assert from_tag != other_plan
    assert copy.deepcopy(from_tag) is from_tag
    restored = pickle.loads(pickle.dumps(from_tag))
    assert restored == from_tag and dict(restored.attributes) == dict(from_tag.attributes)


def test_identify_none_clears_the_identity(traced):
    tracer = traced.tracer
    with prodlens.tag():
        prodlens.identify("acme", plan="pro")
        with tracer.start_as_current_span("before"):
            pass
        assert prodlens.identify(None) is None
        with tracer.start_as_current_span("cleared"):
            pass
        prodlens.identify(None, region="eu")
        with tracer.start_as_current_span("restarted"):
            pass
        prodlens.identify(plan="pro")  # no customer argument: merges, keeps what is there
        with tracer.start_as_current_span("merged"):
            pass
    spans = traced.by_name()
    assert spans["before"] == {"enduser.id": "acme", "prodlens.cohort.plan": "pro"}
    assert spans["cleared"] == {}
    assert spans["restarted"] == {"prodlens.cohort.region": "eu"}
    assert spans["merged"] == {"prodlens.cohort.region": "eu", "prodlens.cohort.plan": "pro"}
