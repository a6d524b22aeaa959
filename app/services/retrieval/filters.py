"""OpenAI's attribute filters (a comparison, or `and`/`or` of filters), parsed with bounds and
matched against a file's attributes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from app.errors import InvalidRequest

MAX_DEPTH = 8
MAX_NODES = 200
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Comparison:
    op: str
    key: str
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class Compound:
    op: str
    filters: tuple[Filter, ...]


Filter = Comparison | Compound


def _bad(message: str, where: str) -> InvalidRequest:
    return InvalidRequest(message, param=where)


def _scalar(value: Any) -> TypeGuard[Scalar]:
    # NaN and infinities parse from JSON in Python but compare with nothing; refuse them.
    return isinstance(value, Scalar) and not (isinstance(value, float) and not math.isfinite(value))


def parse_filter(
    raw: Any, where: str = "filters", *, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES
) -> Filter:
    """A `Filter` from its JSON, or a 400 naming the part that is wrong. Deeper than
    `max_depth` or larger than `max_nodes` is refused before it is walked further, so the
    recursion below never goes deeper than `max_depth` (a 1,000-deep tree is a 400, not a
    RecursionError)."""
    nodes = 0

    def parse(obj: Any, path: str, depth: int) -> Filter:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise _bad(f"A filter has at most {max_nodes} parts.", where)
        if depth > max_depth:
            raise _bad(f"Filters nest at most {max_depth} deep.", where)
        if not isinstance(obj, dict):
            raise _bad("A filter is an object.", path)
        kind = obj.get("type")
        if kind in ("and", "or"):
            if set(obj) - {"type", "filters"}:
                raise _bad("A compound filter has only `type` and `filters`.", path)
            parts = obj.get("filters")
            if not isinstance(parts, list) or not parts:
                raise _bad("A compound filter needs a non-empty list of filters.", f"{path}.filters")
            return Compound(
                kind, tuple(parse(p, f"{path}.filters[{i}]", depth + 1) for i, p in enumerate(parts))
            )
        if kind in COMPARISONS:
            if set(obj) - {"type", "key", "value"}:
                raise _bad("A comparison filter has only `type`, `key` and `value`.", path)
            key, value = obj.get("key"), obj.get("value")
            if not isinstance(key, str) or not key or len(key) > 64:
                raise _bad("A comparison filter's key is a string of 1 to 64 characters.", f"{path}.key")
            if kind in ("in", "nin"):
                value = value if isinstance(value, list) else [value]  # one value: a list of one
                if not all(_scalar(v) for v in value) or len(value) > 100:
                    raise _bad(f"`{kind}` compares with a list of at most 100 values.", f"{path}.value")
                return Comparison(kind, key, tuple(value))
            if not _scalar(value):
                raise _bad("A comparison filter's value is a string, number or boolean.", f"{path}.value")
            return Comparison(kind, key, value)
        raise _bad(f"A filter's type is one of and, or, {', '.join(COMPARISONS)}.", f"{path}.type")

    return parse(raw, where, 1)


def _kind(value: Any) -> str:
    """bool, number or str: values of different kinds are never equal (Python's `True == 1` is
    not a filter's)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _equal(have: Any, want: Any) -> bool:
    return _kind(have) == _kind(want) and bool(have == want)


def _compare(op: str, have: Any, want: Any) -> bool:
    if op == "eq":
        return _equal(have, want)
    if op == "ne":
        return not _equal(have, want)
    if op == "in":
        return any(_equal(have, w) for w in want)
    if op == "nin":
        return not any(_equal(have, w) for w in want)
    # Order compares numbers with numbers and strings with strings; anything else does not match.
    if _kind(have) != _kind(want) or _kind(have) not in ("number", "str"):
        return False
    order = int(have > want) - int(have < want)
    return {"gt": order > 0, "gte": order >= 0, "lt": order < 0, "lte": order <= 0}[op]


def matches(f: Filter, attributes: dict[str, Any]) -> bool:
    """Whether a file with `attributes` passes `f` (a missing key passes only `ne` and `nin`)."""
    if isinstance(f, Compound):
        results = (matches(part, attributes) for part in f.filters)
        return all(results) if f.op == "and" else any(results)
    if f.key not in attributes:
        return f.op in ("ne", "nin")
    return _compare(f.op, attributes[f.key], f.value)
