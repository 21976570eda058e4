"""The tag() decorator on every kind of callable, with literals, callables and arg() paths."""

from __future__ import annotations

import asyncio
import inspect
import logging

import pytest

import prodlens


def who() -> tuple[str | None, dict[str, str]]:
    identity = prodlens.current()
    assert identity is not None
    return identity.customer, dict(identity.cohorts)


class Order:
    def __init__(self, customer_id: str, plan: str) -> None:
        self.customer = type("Customer", (), {"id": customer_id})()
        self.meta = {"plan": plan}


class Service:
    region = "eu-west"

    @prodlens.tag(customer=prodlens.arg("order.customer.id"), plan=prodlens.arg("order.meta.plan"))
    def method(self, order: Order, flag: bool = False) -> tuple[str | None, dict[str, str]]:
        """Docstring kept."""
        return who()

    @prodlens.tag(customer=lambda cls: cls.__name__, region=prodlens.arg("cls.region"))
    @classmethod
    def klass(cls) -> tuple[str | None, dict[str, str]]:
        return who()

    @prodlens.tag(customer=prodlens.arg("customer"))
    @staticmethod
    def static(customer: str) -> tuple[str | None, dict[str, str]]:
        return who()


@prodlens.tag(customer=prodlens.arg("customer"), plan="pro")
def function(customer: str, *, limit: int = 3) -> tuple[str | None, dict[str, str]]:
    return who()


@prodlens.tag(customer=prodlens.arg("customer"))
async def coroutine(customer: str) -> tuple[str | None, dict[str, str]]:
    await asyncio.sleep(0)
    return who()


@prodlens.tag(customer=prodlens.arg("customer"), plan=lambda n: f"n{n}")
def generator(customer: str, n: int):
    for _ in range(n):
        yield who()


@prodlens.tag(customer=prodlens.arg("customer"))
async def async_generator(customer: str, n: int):
    for _ in range(n):
        await asyncio.sleep(0)
        yield who()


def test_function(traced):
    assert function("acme") == ("acme", {"plan": "pro"})
    assert prodlens.current() is None


def test_method_classmethod_staticmethod(traced):
    service = Service()
    assert service.method(Order("acme", "pro")) == ("acme", {"plan": "pro"})
    assert Service.method(service, Order("globex", "free")) == ("globex", {"plan": "free"})
    assert Service.klass() == ("Service", {"region": "eu-west"})
    assert service.klass() == ("Service", {"region": "eu-west"})
    assert Service.static("s1") == ("s1", {})
    assert service.static("s2") == ("s2", {})


def test_coroutine(traced):
    assert asyncio.run(coroutine("acme")) == ("acme", {})


def test_generator_sees_identity_at_every_step_and_never_leaks_it(traced):
    gen = generator("acme", 3)
    assert next(gen) == ("acme", {"plan": "n3"})
    assert prodlens.current() is None  # not left attached across the yield
    assert list(gen) == [("acme", {"plan": "n3"})] * 2


def test_generator_send_throw_close(traced):
    @prodlens.tag(customer="acme")
    def echo():
        received = None
        while True:
            try:
                received = yield (received, prodlens.current().customer)
            except KeyError:
                received = "caught"

    gen = echo()
    assert next(gen) == (None, "acme")
    assert gen.send("x") == ("x", "acme")
    assert gen.throw(KeyError()) == ("caught", "acme")
    gen.close()
    assert prodlens.current() is None


def test_async_generator(traced):
    async def collect():
        return [item async for item in async_generator("acme", 2)]

    assert asyncio.run(collect()) == [("acme", {}), ("acme", {})]


def test_signatures_and_inspect_are_intact():
    assert str(inspect.signature(function)) == "(customer: 'str', *, limit: 'int' = 3) -> 'tuple[str | None, dict[str, str]]'"
    assert Service.method.__doc__ == "Docstring kept."
    assert Service.method.__name__ == "method"
    assert inspect.iscoroutinefunction(coroutine)
    assert inspect.isgeneratorfunction(generator)
    assert inspect.isasyncgenfunction(async_generator)
    assert not inspect.iscoroutinefunction(function)


def test_errors_of_the_function_propagate_unchanged(traced):
    class Boom(Exception):
        pass

    @prodlens.tag(customer="acme")
    def fails() -> None:
        raise Boom("from the app")

    @prodlens.tag(customer="acme")
    async def fails_async() -> None:
        raise Boom("from the app")

    with pytest.raises(Boom, match="from the app"):
        fails()
    with pytest.raises(Boom, match="from the app"):
        asyncio.run(fails_async())
    assert prodlens.current() is None


def test_an_extractor_that_raises_never_breaks_the_call(traced, caplog):
    def broken(order: object) -> str:
        raise RuntimeError("extractor bug")

    @prodlens.tag(customer=broken, plan="pro")
    def handle(order: object) -> tuple[str | None, dict[str, str]]:
        with traced.tracer.start_as_current_span("work"):
            return who()

    with caplog.at_level(logging.WARNING, logger="prodlens"):
        assert handle(object()) == (None, {"plan": "pro"})
        assert handle(object()) == (None, {"plan": "pro"})
    assert traced.by_name() == {"work": {"prodlens.cohort.plan": "pro"}}
    assert sum("extractor bug" in r.getMessage() for r in caplog.records) == 1


def test_missing_arg_path_gives_no_value(traced):
    @prodlens.tag(customer=prodlens.arg("order.missing.id"), plan=prodlens.arg("nope"))
    def handle(order: dict[str, object]) -> object:
        return prodlens.current()

    identity = handle({"id": 1})
    assert identity.customer is None and dict(identity.cohorts) == {}


def test_arg_rejects_an_empty_path():
    with pytest.raises(ValueError, match="dotted path"):
        prodlens.arg("order..id")
