"""A small YAML writer for the documents prodlens prints (rules, PrometheusRule resources).

The documents are plain mappings, lists, strings and numbers; strings are written as JSON
strings (a JSON string is a valid YAML double-quoted scalar) or, when they span several lines,
as literal blocks, so no extra dependency is needed to print them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

__all__ = ["dump"]

Document = Mapping[str, object] | Sequence[object] | str | int | float | bool | None


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    return json.dumps(str(value), ensure_ascii=False)


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


def _key(key: object) -> str:
    text = str(key)
    return text if _PLAIN_KEY.match(text) and text not in ("true", "false", "null") else (
        _scalar(text))


def _block(text: str, indent: str) -> list[str]:
    # Literal block, trailing newline stripped ("|-"): what the reader gets back is ``text``.
    return ["|-", *(f"{indent}{line}" if line else "" for line in text.split("\n"))]


def _lines(value: object, indent: str) -> list[str]:
    """Lines of ``value`` as a block node whose entries start with ``indent``."""
    out: list[str] = []
    if isinstance(value, Mapping):
        if not value:
            return ["{}"]
        for key, item in value.items():
            out.extend(_entry(f"{indent}{_key(key)}:", item, indent))
        return out
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return ["[]"]
        for item in value:
            out.extend(_entry(f"{indent}-", item, indent, in_list=True))
        return out
    raise TypeError(f"not a collection: {value!r}")


def _entry(head: str, item: object, indent: str, *, in_list: bool = False) -> list[str]:
    child = indent + "  "
    if isinstance(item, str) and "\n" in item:
        first, *rest = _block(item, child)
        return [f"{head} {first}", *rest]
    if isinstance(item, (Mapping, list, tuple)) and item:
        nested = _lines(item, child)
        if in_list and isinstance(item, Mapping):
            # "- key: value" on the dash's line, the other keys aligned under it.
            return [f"{head} {nested[0].lstrip()}", *nested[1:]]
        return [head, *nested]
    if isinstance(item, (Mapping, list, tuple)):
        return [f"{head} {'{}' if isinstance(item, Mapping) else '[]'}"]
    return [f"{head} {_scalar(item)}"]


def dump(document: Mapping[str, object]) -> str:
    """``document`` as block-style YAML (ends with a newline).

    Example::

        >>> print(dump({"groups": [{"name": "g", "rules": [{"record": "r", "expr": "a\\n/ b"}]}]}),
        ...       end="")
        groups:
          - name: "g"
            rules:
              - record: "r"
                expr: |-
                  a
                  / b
    """
    return "\n".join(_lines(document, "")) + "\n"
