"""Property-based fuzzing of every operation in the service's own OpenAPI document (schemathesis).

Each operation gets `MAX_EXAMPLES` generated requests, valid and invalid ones, sent over real
HTTP to the service in both auth modes (none; keys, with a valid key and the admin token). The
checks: no 5xx; every documented status, content type and header; every body (2xx, errors, and
each event of a stream) valid against the schema the document gives for it; every error in
OpenAI's shape; invalid input refused with a 4xx. Generation answers come from a mocked upstream
(respx through the real `openai` client), so an example costs milliseconds.

Not fuzzed, because the OpenAPI document does not list them: the playground (`/`, static files),
`/metrics` (Prometheus text), `/docs`, `/redoc` and `/openapi.json` itself.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx
import schemathesis
from schemathesis import Case

from app.main import create_app
from tests import openai_mock as mock
from tests.conftest import UPSTREAM, openai_settings, serve_in_thread

MAX_EXAMPLES = 20
"""Generated requests per operation and auth mode."""

ADMIN_TOKEN = "fuzz-admin-token-0123456789abcdef"
MODELS = ["gpt-4o-mini", "gpt-4o"]
PRESETS = ["customer_service", "copywriting", "qa", "summarize"]

#: The generator draws `model` and preset names from the real ones half of the time, so positive
#: examples reach the (mocked) upstream instead of stopping at 404.
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261202,
        "dictionaries": {"models": {"values": MODELS}, "presets": {"values": PRESETS}},
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "parameters": {
            "body.model": {"dictionary": "models", "probability": 0.5},
            "path.name": {"dictionary": "presets", "probability": 0.5},
        },
        # The coverage phase (boundary values of every field) found the last findings, but takes
        # three times as long; its findings stay covered by tests/api/test_bad_inputs.py.
        "phases": {"coverage": {"enabled": False}},
        # Replaced by `check_valid_requests_are_accepted`, which knows the few refusals of
        # schema-valid requests for rules the document cannot express.
        "checks": {
            "positive_data_acceptance": {"enabled": False},
            # A body over `max_body_bytes` is refused before it is read, whatever it holds.
            "negative_data_rejection": {
                "expected-statuses": ["400", "401", "403", "404", "405", "409", "413", "429"]
            },
        },
        # Failure reports show the real values (the default hides any field named like a token).
        "output": {"sanitization": {"enabled": False}},
    }
)

schema = schemathesis.openapi.from_dict(create_app(openai_settings()).openapi(), config=CONFIG)


def _upstream_answer(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    n = body.get("n") or 1
    if body.get("stream"):
        events = [mock.chunk("", role=True, index=i) for i in range(n)]
        events += [mock.chunk("Hello", index=i) for i in range(n)]
        events += [mock.chunk(finish_reason="stop", index=i) for i in range(n)]
        events.append(mock.usage_chunk(5, n))
        return mock.sse_response(events)
    usage = {"prompt_tokens": 5, "completion_tokens": 3}
    return httpx.Response(200, json=mock.completion(*["Hello there!"] * n, usage=usage))


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str]
    """Sent with every request: the client key (auth_mode=keys), or nothing."""
    ids: dict[str, str]
    """Path parameter → the id of something that exists (a conversation, another key)."""


@pytest.fixture(scope="module", params=["none", "keys"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The service over real HTTP with a mocked upstream, in one auth mode."""
    mode = request.param
    settings = openai_settings(auth_mode=mode, admin_token=ADMIN_TOKEN, usage_flush_seconds=0)
    with (
        respx.mock(base_url=UPSTREAM, assert_all_called=False) as upstream,
        serve_in_thread(create_app(settings)) as server,
    ):
        upstream.post("/chat/completions").mock(side_effect=_upstream_answer)
        upstream.route(host="127.0.0.1").pass_through()
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}

        def key() -> dict[str, str]:
            created = httpx.post(f"{server.url}/admin/keys", json={"name": "fuzz"}, headers=admin, timeout=10)
            assert created.status_code == 201, created.text
            return dict(created.json())

        headers = {"authorization": f"Bearer {key()['key']}"} if mode == "keys" else {}
        conversation = httpx.post(
            f"{server.url}/v1/conversations", json={"model": MODELS[0]}, headers=headers, timeout=10
        )
        assert conversation.status_code == 200, conversation.text
        # A key of its own: fuzzing revokes it (and may limit it to nothing).
        ids = {"conversation_id": conversation.json()["id"], "key_id": key()["id"]}
        yield Target(server.url, headers, ids)


def _with_known_ids(case: Case, target: Target) -> None:
    """Half of the valid cases address a conversation or key that exists, so fuzzing goes past 404."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not case.path_parameters:
        return
    for name, known in target.ids.items():
        value = case.path_parameters.get(name)
        if value is not None and zlib.crc32(str(value).encode()) % 2 == 0:
            case.path_parameters[name] = known


def _headers(case: Case, target: Target) -> dict[str, str]:
    if case.path.startswith("/admin/"):
        return {"authorization": f"Bearer {ADMIN_TOKEN}"}
    return target.headers


@schema.parametrize()
def test_every_operation_survives_fuzzing(case: Case, target: Target) -> None:
    _with_known_ids(case, target)
    case.call_and_validate(
        base_url=target.url,
        headers=_headers(case, target),
        additional_checks=[check_openai_error_shape, check_valid_requests_are_accepted],
        timeout=30,
    )


def check_openai_error_shape(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """Every error body is `{"error": {"message", "type", "param", "code"}}`."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str), error
    assert isinstance(error["type"], str), error
    assert error["message"], error
    assert error["type"], error
    return True


#: Why a schema-valid request may still get a 400, by the `param` or `code` its error names: rules
#: the document cannot express. Anything else is a document that promises more than the service
#: accepts.
STATE_DEPENDENT = {
    # The chosen model's own limits (max_tokens, context window) and its provider's extra
    # parameters (chat passes OpenAI's other parameters through only where they can be honoured).
    "max_tokens": "bounded by the model",
    "context_length_exceeded": "bounded by the model",
    "unsupported_parameter": "depends on the model's provider",
    "model_not_found": "a key may be limited to models of the configured table",
    "model_not_supported": "embedding models serve /v1/embeddings only, generation models the rest",
    "dimensions": "an embedding model's own length, or shorter where its route allows",
    "max_tokens_per_request": "an embedding request's inputs are bounded by the model, together",
    # Each preset has an input schema of its own (GET /v1/presets/{name} shows it).
    "missing_input": "depends on the preset",
    "unknown_input": "depends on the preset",
    "invalid_input": "depends on the preset",
    # Rules across fields, or against the clock.
    "system": "a conversation takes a preset or a system prompt, not both",
    "response_format": "json_schema goes with type json_schema, and only with it",
    "top_logprobs": "needs logprobs: true",
    # Tool calls: which turn may carry which, and a result answers a call that was made.
    **dict.fromkeys(
        ("messages", "tools", "tool_choice", "tool_calls", "tool_call_id", "tool_results"),
        "a message's role decides what it needs; tool calls are checked against their results",
    ),
    "content": "a message has content unless it is an assistant turn calling tools; a conversation "
    "message has content or tool_results",
    "expires_at": "must be in the future",
    "chunk_overlap_tokens": "at most half of max_chunk_size_tokens",
    "file_ids": "a file batch takes file_ids or files, exactly one of them",
    "filters": "filters nest at most 8 deep, 200 parts in all",
    "include": "OpenAI's values that genserve cannot produce are refused, each by name",
    "preset_not_grounded": "only grounded presets take vector_store_ids",
    "empty_file": "an uploaded file has bytes (a binary part's length is not in the document)",
    # Legacy completions serve `n` choices and no insertion; their `echo` does not go with logprobs.
    "best_of": "must equal n: completions are not ranked server-side",
    "suffix": "text after an insertion is not supported",
    "echo": "not together with logprobs",
    # The Responses API: a function call's output answers a call made before it.
    "call_id": "a function_call_output answers an earlier function_call",
    "inputs": "a conversation takes `inputs` only with a preset",
    # Grounded answers: only the grounded presets (qa, customer_service) take vector_store_ids,
    # and a conversation's grounded message is `content`, not tool_results.
    "vector_store_ids": "only grounded presets take vector_store_ids",
    # A bias probe: a built-in suite or a template whose placeholders its variables fill, exactly
    # one of them holding groups; the number of pairs is bounded by the service's settings.
    "suite": "one of the service's suites, or a template instead",
    "template": "must use the variable that holds the groups",
    "variables": "exactly one holds groups, and every placeholder has one",
    "samples": "bounded by the service's settings",
    # The generator compares bounds in floating point: 2**63 - 1 rounds to 2**63, which is then
    # drawn as a "valid" seed one above the bound.
    "seed": "int64 bound, compared in floating point by the generator",
}
ACCEPTED = {401, 403, 404, 409, 429}


def check_valid_requests_are_accepted(ctx: Any, response: schemathesis.Response, case: Case) -> bool | None:
    """A request the schema allows is answered 2xx, or refused only for a reason the schema
    cannot express."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code < 400:
        return None
    if response.status_code in ACCEPTED:
        return True
    error = response.json()["error"]
    assert response.status_code == 400, f"a schema-valid request got {response.status_code}: {error}"
    field = re.sub(r"\[\d+\]$", "", (error["param"] or "").rsplit(".", 1)[-1])
    assert field in STATE_DEPENDENT or error["code"] in STATE_DEPENDENT, (
        f"a schema-valid request was refused: {error}"
    )
    return True
