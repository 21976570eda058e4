"""Must NOT type-check: the decorated function's parameters are still enforced."""

from __future__ import annotations

import prodlens


@prodlens.tag(plan="pro")
def checkout(order_id: int) -> str:
    return str(order_id)


checkout("not an int")
