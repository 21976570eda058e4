"""Type-checked by tests/typing/test_typing.py: ``prodlens.tag`` keeps decorated signatures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import prodlens


@prodlens.tag(plan="pro")
def checkout(order_id: int, *, express: bool = False) -> str:
    return f"{order_id}:{express}"


@prodlens.tag(customer=prodlens.arg("user.id"))
async def fetch(user: dict[str, str]) -> int:
    return len(user)


@prodlens.tag(plan="batch")
def numbers(limit: int) -> Iterator[int]:
    yield from range(limit)


@prodlens.tag(plan="batch")
async def stream(limit: int) -> AsyncIterator[int]:
    for i in range(limit):
        yield i


class Shop:
    @prodlens.tag(plan="pro")
    def buy(self, sku: str) -> bool:
        return bool(sku)

    @prodlens.tag(plan="pro")
    @classmethod
    def open(cls, name: str) -> Shop:
        return cls()

    @prodlens.tag(plan="pro")
    @staticmethod
    def price(sku: str) -> float:
        return 1.0


text: str = checkout(1, express=True)
later = fetch({"id": "acme"})
first: Iterator[int] = numbers(3)
items: AsyncIterator[int] = stream(3)
bought: bool = Shop().buy("x")
shop: Shop = Shop.open("main")
price: float = Shop.price("x")
