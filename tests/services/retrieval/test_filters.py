"""OpenAI's attribute filters: what a search with `filters` returns, and the 400s for bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from app.errors import InvalidRequest
from app.services.retrieval.filters import MAX_DEPTH, MAX_NODES, matches, parse_filter

FILE = {"author": "ana", "year": 2023, "score": 4.5, "draft": False, "lang": "zh"}
SPEC = Path("/work/shared/openai-spec/openai_vector_stores_schemas.json")


def passes(raw: dict[str, Any], attributes: dict[str, Any] = FILE) -> bool:
    return matches(parse_filter(raw), attributes)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"type": "eq", "key": "author", "value": "ana"}, True),
        ({"type": "eq", "key": "author", "value": "bob"}, False),
        ({"type": "ne", "key": "author", "value": "bob"}, True),
        ({"type": "gt", "key": "year", "value": 2022}, True),
        ({"type": "gt", "key": "year", "value": 2023}, False),
        ({"type": "gte", "key": "year", "value": 2023}, True),
        ({"type": "lt", "key": "score", "value": 5}, True),
        ({"type": "lte", "key": "score", "value": 4.5}, True),
        ({"type": "lt", "key": "author", "value": "bob"}, True),  # strings order as strings
        ({"type": "in", "key": "lang", "value": ["en", "zh"]}, True),
        ({"type": "nin", "key": "lang", "value": ["en", "zh"]}, False),
        ({"type": "eq", "key": "draft", "value": False}, True),
        # Kinds never mix: 0 is not False, "2023" is not 2023, and a string is not ordered with a number.
        ({"type": "eq", "key": "draft", "value": 0}, False),
        ({"type": "in", "key": "year", "value": ["2023"]}, False),
        ({"type": "gt", "key": "author", "value": 1}, False),
        # A file without the attribute passes only ne and nin.
        ({"type": "eq", "key": "missing", "value": "x"}, False),
        ({"type": "ne", "key": "missing", "value": "x"}, True),
        ({"type": "nin", "key": "missing", "value": ["x"]}, True),
    ],
)
def test_comparisons(raw: dict[str, Any], expected: bool) -> None:
    assert passes(raw) is expected


def test_compound_filters_nest() -> None:
    raw = {
        "type": "and",
        "filters": [
            {"type": "gte", "key": "year", "value": 2020},
            {
                "type": "or",
                "filters": [
                    {"type": "eq", "key": "author", "value": "bob"},
                    {"type": "eq", "key": "lang", "value": "zh"},
                ],
            },
        ],
    }
    assert passes(raw)
    assert not passes(raw, {**FILE, "lang": "en"})
    assert not passes(raw, {**FILE, "year": 1999})


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "in", "key": "lang", "value": ["en", 1]},
        {"type": "eq", "key": "draft", "value": True},
        {"type": "lte", "key": "score", "value": 4.5},
    ],
)
def test_comparisons_in_openais_shape_are_accepted(raw: dict[str, Any]) -> None:
    # Only comparisons: in the published schema a comparison inside a compound matches both
    # branches of its `oneOf` (the compound's items list it beside `$recursiveRef: #`).
    schema = json.loads(SPEC.read_text())["schemas"]["VectorStoreSearchRequest"]["properties"]["filters"]
    jsonschema.Draft201909Validator(schema).validate(raw)
    parse_filter(raw)


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "eq", "key": "k", "value": 1}
    for _ in range(depth - 1):
        node = {"type": "and", "filters": [node]}
    return node


def test_the_deepest_allowed_filter_parses() -> None:
    assert passes(nested(MAX_DEPTH), {"k": 1})


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deeper_filters_are_400_not_a_recursion_error(depth: int) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(nested(depth))
    assert caught.value.param == "filters"
    assert "deep" in str(caught.value)


def test_too_many_parts_is_400() -> None:
    wide = {"type": "or", "filters": [{"type": "eq", "key": "k", "value": i} for i in range(1_000_000)]}
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(wide)
    assert caught.value.param == "filters"
    parse_filter({"type": "or", "filters": wide["filters"][: MAX_NODES - 1]})


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ([], "filters"),
        ({"type": "like", "key": "k", "value": 1}, "filters.type"),
        ({"type": "eq", "value": 1}, "filters.key"),
        ({"type": "eq", "key": "k", "value": None}, "filters.value"),
        ({"type": "eq", "key": "k", "value": {"a": 1}}, "filters.value"),
        ({"type": "eq", "key": "k", "value": float("nan")}, "filters.value"),
        ({"type": "in", "key": "k", "value": list(range(101))}, "filters.value"),
        ({"type": "eq", "key": "k", "value": 1, "extra": 2}, "filters"),
        ({"type": "and", "filters": []}, "filters.filters"),
        ({"type": "and", "filters": [{"type": "eq", "key": "k"}]}, "filters.filters[0].value"),
    ],
)
def test_bad_filters_are_400_naming_the_part(raw: Any, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_filter(raw)
    assert caught.value.param == param


def test_in_with_one_value_is_a_list_of_one() -> None:
    """OpenAI's schema lets `in`/`nin` take a single value: it means a list of one."""
    assert matches(parse_filter({"type": "in", "key": "k", "value": "x"}), {"k": "x"})
    assert not matches(parse_filter({"type": "nin", "key": "k", "value": "x"}), {"k": "x"})
