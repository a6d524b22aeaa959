"""OpenAI's published JSON Schemas, to check bodies against (they are not the project's to ship).

Found in a `shared/openai-spec/` directory beside the clone or above it, or the workplace's
`/work/shared`; without them a warning says the checks fall back to the SDK's own types."""

from __future__ import annotations

import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

_SPEC_DIR = Path("shared") / "openai-spec"


@cache
def schemas(file: str) -> dict[str, Any] | None:
    here = Path(__file__).resolve()
    for parent in [*here.parents[1:], Path("/work")]:
        path = parent / _SPEC_DIR / file
        if path.exists():
            found: dict[str, Any] = json.loads(path.read_text())["schemas"]
            return found
    warnings.warn(f"OpenAI's {file} not found: checking with the SDK's types only", stacklevel=2)
    return None


def conforms(file: str, name: str, instance: Any) -> None:
    """Assert `instance` is valid against schema `name` of OpenAI's `file`."""
    found = schemas(file)
    if found is not None:
        jsonschema.Draft202012Validator(found[name]).validate(instance)


def completion_conforms(body: dict[str, Any]) -> None:
    conforms("openai_completions_schemas.json", "CreateCompletionResponse", body)


def completion_chunk_conforms(chunk: dict[str, Any]) -> None:
    """A streamed `text_completion`. OpenAI's schema says streamed objects share the plain shape,
    but its API sends `finish_reason: null` until a choice ends and, with `include_usage`,
    `usage: null` until the last chunk (as this service does): those two nulls are checked
    here, the rest against the schema."""
    shaped = dict(chunk)
    if shaped.get("usage", 0) is None:
        del shaped["usage"]
    choices = []
    for choice in shaped["choices"]:
        assert "finish_reason" in choice
        choices.append(choice if choice["finish_reason"] is not None else {**choice, "finish_reason": "stop"})
    shaped["choices"] = choices
    completion_conforms(shaped)


def response_conforms(body: dict[str, Any]) -> None:
    conforms("openai_responses_schemas.json", "Response", body)


def response_event_conforms(event: dict[str, Any]) -> None:
    conforms("openai_responses_schemas.json", "ResponseStreamEvent", event)


def request_conforms(file: str, name: str, body: dict[str, Any]) -> None:
    conforms(file, name, body)


def error_conforms(body: dict[str, Any]) -> None:
    conforms("openai_completions_schemas.json", "ErrorResponse", body)
