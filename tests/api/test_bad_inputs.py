"""Bad input never produces a 500: each one gets its status and an OpenAI-shaped error body."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from app.main import create_app
from app.providers.openai import OpenAIProvider
from app.settings import LOCAL_DEFAULT_MODEL
from tests import openai_mock as mock
from tests.conftest import LiveServer, _client, make_settings, openai_settings, serving

GEN = "/v1/generate"
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]
JSON = {"content-type": "application/json"}
LONG_PROMPT = "word " * 3000  # about 3000 tokens: more than the embedded model's 2048 of context


def chat(**fields: Any) -> dict[str, Any]:
    return {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": USER, **fields}}


def gen(**fields: Any) -> dict[str, Any]:
    return {"json": {"prompt": "Hi", **fields}}


def cmpl(**fields: Any) -> dict[str, Any]:
    return {"json": {"model": LOCAL_DEFAULT_MODEL, "prompt": "Hi", **fields}}


def resp(**fields: Any) -> dict[str, Any]:
    return {"json": {"model": LOCAL_DEFAULT_MODEL, "input": "Hi", **fields}}


CMPL = "/v1/completions"
RESP = "/v1/responses"


def raw(content: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": content_type}}


INVALID = "invalid_request_error"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    },
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_order", "arguments": '{"id": "A1"}'},
}

#: (id, method, path, request kwargs, status, type, param, code)
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str | None, str | None]] = [
    ("not-json", "POST", GEN, raw(b"{prompt: hi"), 400, INVALID, None, "invalid_json"),
    ("chat-not-json", "POST", CHAT, raw(b"messages="), 400, INVALID, None, "invalid_json"),
    ("json-array", "POST", GEN, {"json": [{"prompt": "Hi"}]}, 400, INVALID, None, "invalid_body"),
    ("json-string", "POST", CHAT, {"json": "Hi"}, 400, INVALID, None, "invalid_body"),
    ("no-body", "POST", GEN, {}, 400, INVALID, None, "missing_body"),
    (
        "wrong-content-type",
        "POST",
        GEN,
        raw(b'{"prompt": "Hi"}', "text/plain"),
        400,
        INVALID,
        None,
        "invalid_body",
    ),
    ("invalid-utf8", "POST", GEN, raw(b'{"prompt": "\xff\xfe"}'), 400, INVALID, None, None),
    ("missing-prompt", "POST", GEN, {"json": {"temperature": 1}}, 400, INVALID, "prompt", "invalid_value"),
    ("null-prompt", "POST", GEN, gen(prompt=None), 400, INVALID, "prompt", "invalid_value"),
    ("empty-prompt", "POST", GEN, gen(prompt=""), 400, INVALID, "prompt", "invalid_value"),
    ("prompt-wrong-type", "POST", GEN, gen(prompt=["Hi"]), 400, INVALID, "prompt", "invalid_value"),
    (
        "prompt-too-many-chars",
        "POST",
        GEN,
        gen(prompt="x" * 200_001),
        400,
        INVALID,
        "prompt",
        "prompt_too_long",
    ),
    (
        "prompt-too-many-tokens",
        "POST",
        GEN,
        gen(prompt=LONG_PROMPT),
        400,
        INVALID,
        "messages",
        "context_length_exceeded",
    ),
    (
        "chat-too-many-tokens",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": [{"role": "user", "content": LONG_PROMPT}]}},
        400,
        INVALID,
        "messages",
        "context_length_exceeded",
    ),
    (
        "prompt-plus-max-tokens-too-long",
        "POST",
        GEN,
        gen(prompt="word " * 1900, max_tokens=500),
        400,
        INVALID,
        "max_tokens",
        "context_length_exceeded",
    ),
    (
        "system-wrong-type",
        "POST",
        GEN,
        gen(system={"role": "system"}),
        400,
        INVALID,
        "system",
        "invalid_value",
    ),
    ("temperature-string", "POST", GEN, gen(temperature="hot"), 400, INVALID, "temperature", "invalid_value"),
    ("temperature-3", "POST", CHAT, chat(temperature=3), 400, INVALID, "temperature", "invalid_value"),
    (
        "temperature-negative",
        "POST",
        GEN,
        gen(temperature=-0.1),
        400,
        INVALID,
        "temperature",
        "invalid_value",
    ),
    (
        "temperature-nan",
        "POST",
        GEN,
        raw(b'{"prompt": "Hi", "temperature": NaN}'),
        400,
        INVALID,
        "temperature",
        "invalid_value",
    ),
    ("top-p-0", "POST", GEN, gen(top_p=0), 400, INVALID, "top_p", "invalid_value"),
    ("top-p-above-1", "POST", CHAT, chat(top_p=1.5), 400, INVALID, "top_p", "invalid_value"),
    ("n-0", "POST", GEN, gen(n=0), 400, INVALID, "n", "invalid_value"),
    ("n-9", "POST", CHAT, chat(n=9), 400, INVALID, "n", "invalid_value"),
    ("max-tokens-negative", "POST", GEN, gen(max_tokens=-1), 400, INVALID, "max_tokens", "invalid_value"),
    ("max-tokens-fraction", "POST", GEN, gen(max_tokens=1.5), 400, INVALID, "max_tokens", "invalid_value"),
    ("max-tokens-beyond-model", "POST", GEN, gen(max_tokens=5000), 400, INVALID, "max_tokens", None),
    (
        "max-completion-tokens-0",
        "POST",
        CHAT,
        chat(max_completion_tokens=0),
        400,
        INVALID,
        "max_completion_tokens",
        "invalid_value",
    ),
    (
        "five-stop-strings",
        "POST",
        GEN,
        gen(stop=["a", "b", "c", "d", "e"]),
        400,
        INVALID,
        "stop",
        "invalid_value",
    ),
    ("empty-stop-string", "POST", CHAT, chat(stop=""), 400, INVALID, "stop", "invalid_value"),
    ("empty-stop-in-list", "POST", GEN, gen(stop=["\n", ""]), 400, INVALID, "stop[1]", "invalid_value"),
    ("stop-wrong-type", "POST", GEN, gen(stop=5), 400, INVALID, "stop", "invalid_value"),
    ("seed-negative", "POST", GEN, gen(seed=-1), 400, INVALID, "seed", "invalid_value"),
    ("seed-huge", "POST", CHAT, chat(seed=2**70), 400, INVALID, "seed", "invalid_value"),
    (
        "presence-penalty-3",
        "POST",
        CHAT,
        chat(presence_penalty=3),
        400,
        INVALID,
        "presence_penalty",
        "invalid_value",
    ),
    (
        "frequency-penalty--3",
        "POST",
        GEN,
        gen(frequency_penalty=-3),
        400,
        INVALID,
        "frequency_penalty",
        "invalid_value",
    ),
    ("unknown-model-generate", "POST", GEN, gen(model="gpt-9"), 404, INVALID, "model", "model_not_found"),
    ("unknown-model-chat", "POST", CHAT, chat(model="gpt-9"), 404, INVALID, "model", "model_not_found"),
    (
        "unknown-model-chat-stream",
        "POST",
        CHAT,
        chat(model="gpt-9", stream=True),
        404,
        INVALID,
        "model",
        "model_not_found",
    ),
    (
        "unknown-parameter-generate",
        "POST",
        GEN,
        gen(temprature=0.5),
        400,
        INVALID,
        "temprature",
        "unknown_parameter",
    ),
    (
        "empty-messages",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": []}},
        400,
        INVALID,
        "messages",
        "invalid_value",
    ),
    (
        "messages-not-a-list",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": "Hi"}},
        400,
        INVALID,
        "messages",
        "invalid_value",
    ),
    ("missing-messages", "POST", CHAT, {"json": {"model": "x"}}, 400, INVALID, "messages", "invalid_value"),
    (
        "only-system-message",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": [{"role": "system", "content": "Be nice."}]}},
        400,
        INVALID,
        "messages",
        "invalid_value",
    ),
    (
        "bad-role",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": [{"role": "robot", "content": "Hi"}]}},
        400,
        INVALID,
        "messages[0].role",
        "invalid_value",
    ),
    (
        "missing-content",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": [*USER, {"role": "user"}]}},
        400,
        INVALID,
        "messages[1].content",
        "invalid_value",
    ),
    (
        "null-content",
        "POST",
        CHAT,
        {"json": {"model": LOCAL_DEFAULT_MODEL, "messages": [{"role": "user", "content": None}]}},
        400,
        INVALID,
        "messages[0].content",
        "invalid_value",
    ),
    (
        "image-on-a-model-without-vision",
        "POST",
        CHAT,
        {
            "json": {
                "model": LOCAL_DEFAULT_MODEL,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
                        ],
                    }
                ],
            }
        },
        400,
        INVALID,
        "messages[0].content[1]",
        "image_not_supported",
    ),
    (
        "image-part-without-url",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
        400,
        INVALID,
        "messages[0].content[0].image_url.url",
        "invalid_value",
    ),
    (
        "chat-without-model",
        "POST",
        CHAT,
        {"json": {"messages": USER}},
        400,
        INVALID,
        "model",
        "invalid_value",
    ),
    ("chat-empty-model", "POST", CHAT, chat(model=""), 400, INVALID, "model", "invalid_value"),
    (
        "tool-call-id-on-a-user-message",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "Hi", "tool_call_id": "x"}]),
        400,
        INVALID,
        "messages[0].tool_call_id",
        "invalid_value",
    ),
    (
        "tool-result-answering-no-call",
        "POST",
        CHAT,
        chat(
            messages=[
                *USER,
                {"role": "assistant", "tool_calls": [TOOL_CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{}"},
                {"role": "tool", "tool_call_id": "call_9", "content": "{}"},
            ],
            tools=[TOOL],
        ),
        400,
        INVALID,
        "messages[3].tool_call_id",
        "invalid_value",
    ),
    (
        "tool-message-without-id",
        "POST",
        CHAT,
        chat(messages=[*USER, {"role": "tool", "content": "{}"}]),
        400,
        INVALID,
        "messages[1]",
        "invalid_value",
    ),
    (
        "tool-calls-on-a-user-message",
        "POST",
        CHAT,
        chat(messages=[{"role": "user", "content": "Hi", "tool_calls": [TOOL_CALL]}]),
        400,
        INVALID,
        "messages[0].tool_calls",
        "invalid_value",
    ),
    (
        "tool-call-arguments-not-text",
        "POST",
        CHAT,
        chat(
            messages=[
                *USER,
                {
                    "role": "assistant",
                    "tool_calls": [{**TOOL_CALL, "function": {"name": "f", "arguments": {}}}],
                },
            ]
        ),
        400,
        INVALID,
        "messages[1].tool_calls[0].function.arguments",
        "invalid_value",
    ),
    ("tools-not-a-list", "POST", CHAT, chat(tools="get_order"), 400, INVALID, "tools", "invalid_value"),
    (
        "tool-of-a-built-in-type",
        "POST",
        CHAT,
        chat(tools=[{"type": "web_search"}]),
        400,
        INVALID,
        "tools[0].type",
        "invalid_value",
    ),
    (
        "tool-name-with-spaces",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "get order"}}]),
        400,
        INVALID,
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        "tool-parameters-not-an-object-schema",
        "POST",
        CHAT,
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
        400,
        INVALID,
        "tools[0].function.parameters",
        "invalid_value",
    ),
    (
        "tool-names-twice",
        "POST",
        CHAT,
        chat(tools=[TOOL, TOOL]),
        400,
        INVALID,
        "tools[1].function.name",
        "invalid_value",
    ),
    (
        "tool-schema-the-embedded-model-cannot-enforce",
        "POST",
        CHAT,
        chat(
            tools=[
                TOOL,
                {
                    "type": "function",
                    "function": {
                        "name": "refund",
                        "parameters": {
                            "type": "object",
                            "properties": {"amount": {"type": "number", "minimum": 0}},
                        },
                    },
                },
            ],
            tool_choice="required",
        ),
        400,
        INVALID,
        "tools[1].function.parameters",
        "unsupported_schema",
    ),
    (
        "tool-choice-without-tools",
        "POST",
        CHAT,
        chat(tool_choice="auto"),
        400,
        INVALID,
        "tool_choice",
        "invalid_value",
    ),
    (
        "tool-choice-unknown-mode",
        "POST",
        CHAT,
        chat(tools=[TOOL], tool_choice="sometimes"),
        400,
        INVALID,
        "tool_choice",
        "invalid_value",
    ),
    (
        "tool-choice-names-no-tool",
        "POST",
        CHAT,
        chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "refund"}}),
        400,
        INVALID,
        "tool_choice.function.name",
        "invalid_value",
    ),
    (
        "parallel-tool-calls-wrong-type",
        "POST",
        CHAT,
        chat(tools=[TOOL], parallel_tool_calls="maybe"),
        400,
        INVALID,
        "parallel_tool_calls",
        "invalid_value",
    ),
    (
        "stream-options-wrong-type",
        "POST",
        CHAT,
        chat(stream=True, stream_options={"include_usage": "sure"}),
        400,
        INVALID,
        "stream_options.include_usage",
        "invalid_value",
    ),
    ("user-wrong-type", "POST", CHAT, chat(user=5), 400, INVALID, "user", "invalid_value"),
    (
        "conversation-tool-of-a-built-in-type",
        "POST",
        "/v1/conversations",
        {"json": {"tools": [{"type": "file_search"}]}},
        400,
        INVALID,
        "tools[0].type",
        "invalid_value",
    ),
    (
        "conversation-tools-twice",
        "POST",
        "/v1/conversations",
        {"json": {"tools": [TOOL, TOOL]}},
        400,
        INVALID,
        "tools",
        "invalid_value",
    ),
    (
        "conversation-message-and-tool-results",
        "POST",
        "/v1/conversations/conv_x/messages",
        {"json": {"content": "Hi", "tool_results": [{"tool_call_id": "call_1", "content": "{}"}]}},
        400,
        INVALID,
        "tool_results",
        "invalid_value",
    ),
    (
        "conversation-tool-result-without-id",
        "POST",
        "/v1/conversations/conv_x/messages",
        {"json": {"tool_results": [{"content": "{}"}]}},
        400,
        INVALID,
        "tool_results[0].tool_call_id",
        "invalid_value",
    ),
    ("logprobs-wrong-type", "POST", CHAT, chat(logprobs=5), 400, INVALID, "logprobs", "invalid_value"),
    (
        "top-logprobs-21",
        "POST",
        CHAT,
        chat(logprobs=True, top_logprobs=21),
        400,
        INVALID,
        "top_logprobs",
        "invalid_value",
    ),
    (
        "top-logprobs-negative",
        "POST",
        CHAT,
        chat(logprobs=True, top_logprobs=-1),
        400,
        INVALID,
        "top_logprobs",
        "invalid_value",
    ),
    (
        "top-logprobs-without-logprobs",
        "POST",
        CHAT,
        chat(top_logprobs=2, stream=True),
        400,
        INVALID,
        "top_logprobs",
        "invalid_value",
    ),
    (
        "generate-top-logprobs-21",
        "POST",
        GEN,
        gen(logprobs=True, top_logprobs=21),
        400,
        INVALID,
        "top_logprobs",
        "invalid_value",
    ),
    (
        "generate-top-logprobs-without-logprobs",
        "POST",
        GEN,
        gen(top_logprobs=3),
        400,
        INVALID,
        "top_logprobs",
        "invalid_value",
    ),
    (
        "logit-bias-unsupported",
        "POST",
        CHAT,
        chat(logit_bias={"1": 5}),
        400,
        INVALID,
        "logit_bias",
        "unsupported_parameter",
    ),
    (
        "response-format-string",
        "POST",
        CHAT,
        chat(response_format="json"),
        400,
        INVALID,
        "response_format",
        "invalid_value",
    ),
    (
        "response-format-unknown-type",
        "POST",
        CHAT,
        chat(response_format={"type": "xml"}),
        400,
        INVALID,
        "response_format.type",
        "invalid_value",
    ),
    (
        "response-format-schema-missing",
        "POST",
        CHAT,
        chat(response_format={"type": "json_schema"}),
        400,
        INVALID,
        "response_format",
        "invalid_value",
    ),
    ("oversized-body", "POST", GEN, gen(prompt="x" * 1_100_000), 413, INVALID, None, "payload_too_large"),
    ("get-on-post-route", "GET", GEN, {}, 405, INVALID, None, "method_not_allowed"),
    ("delete-on-models", "DELETE", "/v1/models", {}, 405, INVALID, None, "method_not_allowed"),
    ("unknown-route", "POST", "/v1/edits", gen(), 404, "not_found_error", None, "not_found"),
    ("unknown-model-retrieve", "GET", "/v1/models/gpt-9", {}, 404, INVALID, "model", "model_not_found"),
    # -- legacy completions
    ("cmpl-no-model", "POST", CMPL, {"json": {"prompt": "Hi"}}, 400, INVALID, "model", "invalid_value"),
    (
        "cmpl-no-prompt",
        "POST",
        CMPL,
        {"json": {"model": LOCAL_DEFAULT_MODEL}},
        400,
        INVALID,
        "prompt",
        "invalid_value",
    ),
    ("cmpl-token-ids", "POST", CMPL, cmpl(prompt=[1, 2, 3]), 400, INVALID, "prompt", "invalid_value"),
    ("cmpl-token-id-arrays", "POST", CMPL, cmpl(prompt=[[1, 2]]), 400, INVALID, "prompt", "invalid_value"),
    ("cmpl-empty-prompt-list", "POST", CMPL, cmpl(prompt=[]), 400, INVALID, "prompt", "invalid_value"),
    (
        "cmpl-too-many-prompts",
        "POST",
        CMPL,
        cmpl(prompt=["Hi"] * 17),
        400,
        INVALID,
        "prompt",
        "invalid_value",
    ),
    ("cmpl-suffix", "POST", CMPL, cmpl(suffix="the end"), 400, INVALID, "suffix", "invalid_value"),
    ("cmpl-best-of", "POST", CMPL, cmpl(best_of=3), 400, INVALID, "best_of", "invalid_value"),
    ("cmpl-best-of-vs-n", "POST", CMPL, cmpl(best_of=1, n=2), 400, INVALID, "best_of", "invalid_value"),
    ("cmpl-logprobs-too-many", "POST", CMPL, cmpl(logprobs=6), 400, INVALID, "logprobs", "invalid_value"),
    ("cmpl-echo-logprobs", "POST", CMPL, cmpl(echo=True, logprobs=1), 400, INVALID, "echo", "invalid_value"),
    ("cmpl-echo-string", "POST", CMPL, cmpl(echo="maybe"), 400, INVALID, "echo", "invalid_value"),
    ("cmpl-unknown-field", "POST", CMPL, cmpl(messages=USER), 400, INVALID, "messages", "unknown_parameter"),
    ("cmpl-unknown-model", "POST", CMPL, cmpl(model="gpt-9"), 404, INVALID, "model", "model_not_found"),
    (
        "cmpl-prompt-too-many-tokens",
        "POST",
        CMPL,
        cmpl(prompt=LONG_PROMPT, max_tokens=None),
        400,
        INVALID,
        "prompt",
        "context_length_exceeded",
    ),
    # -- the Responses API
    ("resp-no-model", "POST", RESP, {"json": {"input": "Hi"}}, 400, INVALID, "model", "invalid_value"),
    (
        "resp-no-input",
        "POST",
        RESP,
        {"json": {"model": LOCAL_DEFAULT_MODEL}},
        400,
        INVALID,
        "input",
        "invalid_value",
    ),
    ("resp-empty-input", "POST", RESP, resp(input=[]), 400, INVALID, "input", "invalid_value"),
    (
        "resp-bad-role",
        "POST",
        RESP,
        resp(input=[{"role": "robot", "content": "Hi"}]),
        400,
        INVALID,
        "input[0].role",
        "invalid_value",
    ),
    (
        "resp-image-part",
        "POST",
        RESP,
        resp(input=[{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
        400,
        INVALID,
        "input[0].content[0]",
        "invalid_value",
    ),
    (
        "resp-unknown-item",
        "POST",
        RESP,
        resp(input=[{"type": "reasoning", "summary": []}]),
        400,
        INVALID,
        "input[0]",
        "invalid_value",
    ),
    (
        "resp-orphan-output",
        "POST",
        RESP,
        resp(input=[{"type": "function_call_output", "call_id": "call_1", "output": "{}"}]),
        400,
        INVALID,
        "input[0].call_id",
        "invalid_value",
    ),
    (
        "resp-web-search",
        "POST",
        RESP,
        resp(tools=[{"type": "web_search"}]),
        400,
        INVALID,
        "tools",
        "invalid_value",
    ),
    (
        "resp-tool-no-name",
        "POST",
        RESP,
        resp(tools=[{"type": "function", "parameters": {}}]),
        400,
        INVALID,
        "tools[0].name",
        "invalid_value",
    ),
    (
        "resp-tool-choice",
        "POST",
        RESP,
        resp(tool_choice="sometimes"),
        400,
        INVALID,
        "tool_choice",
        "invalid_value",
    ),
    (
        "resp-max-output",
        "POST",
        RESP,
        resp(max_output_tokens=0),
        400,
        INVALID,
        "max_output_tokens",
        "invalid_value",
    ),
    ("resp-temperature", "POST", RESP, resp(temperature=3), 400, INVALID, "temperature", "invalid_value"),
    ("resp-store-string", "POST", RESP, resp(store="maybe"), 400, INVALID, "store", "invalid_value"),
    (
        "resp-text-format-type",
        "POST",
        RESP,
        resp(text={"format": {"type": "yaml"}}),
        400,
        INVALID,
        "text.format",
        "invalid_value",
    ),
    (
        "resp-text-schema-without-name",
        "POST",
        RESP,
        resp(text={"format": {"type": "json_schema", "schema": {"type": "object"}}}),
        400,
        INVALID,
        "text.format.name",
        "invalid_value",
    ),
    (
        "resp-truncation",
        "POST",
        RESP,
        resp(truncation="sometimes"),
        400,
        INVALID,
        "truncation",
        "invalid_value",
    ),
    (
        "resp-metadata-nested",
        "POST",
        RESP,
        resp(metadata={"a": {"b": 1}}),
        400,
        INVALID,
        "metadata.a",
        "invalid_value",
    ),
    (
        "resp-metadata-17",
        "POST",
        RESP,
        resp(metadata={str(i): "x" for i in range(17)}),
        400,
        INVALID,
        "metadata",
        "invalid_value",
    ),
    ("resp-unknown-field", "POST", RESP, resp(messages=USER), 400, INVALID, "messages", "unknown_parameter"),
    (
        "resp-unknown-previous",
        "POST",
        RESP,
        resp(previous_response_id="resp-nope"),
        404,
        "not_found_error",
        "previous_response_id",
        "response_not_found",
    ),
    (
        "resp-get-unknown",
        "GET",
        f"{RESP}/resp-nope",
        {},
        404,
        "not_found_error",
        "response_id",
        "response_not_found",
    ),
    (
        "resp-delete-unknown",
        "DELETE",
        f"{RESP}/resp-nope",
        {},
        404,
        "not_found_error",
        "response_id",
        "response_not_found",
    ),
    (
        "resp-items-unknown",
        "GET",
        f"{RESP}/resp-nope/input_items",
        {},
        404,
        "not_found_error",
        "response_id",
        "response_not_found",
    ),
    (
        "resp-items-limit",
        "GET",
        f"{RESP}/resp-nope/input_items?limit=0",
        {},
        400,
        INVALID,
        "limit",
        "invalid_value",
    ),
    # Found by fuzzing (tests/api/test_fuzz.py): pydantic's lax mode took `true` for 1 and "0.5"
    # for 0.5, where the OpenAPI document (and OpenAI) say number.
    ("max-tokens-true", "POST", GEN, gen(max_tokens=True), 400, INVALID, "max_tokens", "invalid_value"),
    ("n-numeric-string", "POST", CHAT, chat(n="2"), 400, INVALID, "n", "invalid_value"),
    ("temperature-true", "POST", CHAT, chat(temperature=True), 400, INVALID, "temperature", "invalid_value"),
    ("stream-zero", "POST", GEN, gen(stream=0), 400, INVALID, "stream", "invalid_value"),
    (
        "include-usage-string",
        "POST",
        CHAT,
        chat(stream=True, stream_options={"include_usage": "yes"}),
        400,
        INVALID,
        "stream_options.include_usage",
        "invalid_value",
    ),
    ("usage-start-not-a-date", "GET", "/v1/usage?start=0", {}, 400, INVALID, "start", "invalid_value"),
    (
        "max-completion-tokens-false",
        "POST",
        CHAT,
        chat(max_completion_tokens=False),
        400,
        INVALID,
        "max_completion_tokens",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "type_", "param", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_bad_input_is_refused_with_an_openai_error(
    local_client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    type_: str,
    param: str | None,
    code: str | None,
) -> None:
    r = await local_client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert (error["type"], error["param"], error["code"]) == (type_, param, code)
    assert r.headers["x-request-id"]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 25


async def test_unsupported_parameters_are_named_in_the_message(local_client: httpx.AsyncClient) -> None:
    r = await local_client.post(CHAT, **chat(logit_bias={"1": 5}))
    assert r.status_code == 400
    assert r.json()["error"]["param"] in r.json()["error"]["message"]


async def test_a_chunked_oversized_body_is_413(local_client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(20):
            yield b"x" * 65_536
        yield b'"}'

    r = await local_client.post(GEN, content=body(), headers=JSON)
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_a_small_max_body_setting_is_honoured() -> None:
    async for client in _client(
        create_app(make_settings(provider="openai", openai_api_key="sk-x", max_body_bytes=2048))
    ):
        r = await client.post(GEN, json={"prompt": "x" * 3000})
        assert r.status_code == 413
        assert "2048" in r.json()["error"]["message"]


async def test_false_and_null_optional_openai_parameters_are_accepted(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    """The SDK and many clients send defaults like `logprobs: false`: that is no request for them."""
    route = upstream.post("/chat/completions").respond(json=mock.completion("ok"))
    r = await openai_client.post(
        CHAT, **chat(model="gpt-4o-mini", logprobs=False, tools=None, parallel_tool_calls=None)
    )
    assert r.status_code == 200, r.text
    sent = json.loads(route.calls.last.request.content)
    assert "logprobs" not in sent
    assert "tools" not in sent


# -- no input produces a 500 -------------------------------------------------------------------

GARBAGE: list[Any] = [None, True, -1, 0, 10**30, 1e308, -1e308, "", "x" * 300, [], [None], {}, {"a": {}}]
FIELDS = [
    "prompt",
    "system",
    "model",
    "temperature",
    "top_p",
    "max_tokens",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stream",
]
CHAT_FIELDS = [
    "messages",
    "max_completion_tokens",
    "user",
    "stream_options",
    "n",
    "stop",
    "model",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
]


@pytest.mark.parametrize("field", FIELDS)
async def test_no_garbage_value_in_generate_is_a_server_error(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, field: str
) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("ok"))
    for value in GARBAGE:
        body = {"prompt": "Hi", field: value}
        r = await openai_client.post(GEN, json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("field", CHAT_FIELDS)
async def test_no_garbage_value_in_chat_is_a_server_error(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, field: str
) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("ok"))
    garbage = [*GARBAGE, [{"role": "user"}], [{"role": "user", "content": [{"type": "text"}]}], [{}]]
    for value in garbage:
        body = {"model": "gpt-4o-mini", "messages": USER, field: value}
        r = await openai_client.post(CHAT, json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


COMPLETION_FIELDS = [
    "prompt",
    "model",
    "max_tokens",
    "n",
    "best_of",
    "echo",
    "logprobs",
    "suffix",
    "logit_bias",
    "stop",
    "stream_options",
    "seed",
]
RESPONSE_FIELDS = [
    "input",
    "model",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "previous_response_id",
    "store",
    "metadata",
    "text",
    "truncation",
]
ITEM_GARBAGE: list[Any] = [
    [{"role": "user"}],
    [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}],
    [{"type": "function_call", "name": "f"}],
    [{"type": "function_call_output", "call_id": 5, "output": {}}],
    [{"type": "function", "name": "f", "parameters": "x"}],
    [{"type": "function"}],
    {"type": "function"},
    {"type": "function", "name": 3},
    [{}],
]


@pytest.mark.parametrize("field", COMPLETION_FIELDS)
async def test_no_garbage_value_in_completions_is_a_server_error(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, field: str
) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("ok"))
    for value in [*GARBAGE, *ITEM_GARBAGE, [[1, 2], "a"], ["a", [1]]]:
        body = {"model": "gpt-4o-mini", "prompt": "Hi", field: value}
        r = await openai_client.post(CMPL, json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("field", RESPONSE_FIELDS)
async def test_no_garbage_value_in_responses_is_a_server_error(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter, field: str
) -> None:
    upstream.post("/chat/completions").respond(json=mock.completion("ok"))
    for value in [*GARBAGE, *ITEM_GARBAGE]:
        body = {"model": "gpt-4o-mini", "input": "Hi", field: value}
        r = await openai_client.post(RESP, json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


# -- request ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/healthz", {}),
        ("GET", "/v1/models", {}),
        ("POST", GEN, gen(n=0)),
        ("GET", "/nope", {}),
        ("GET", GEN, {}),
        ("POST", GEN, gen(prompt="x" * 1_100_000)),
    ],
)
async def test_every_response_carries_a_request_id(
    local_client: httpx.AsyncClient, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    r = await local_client.request(method, path, **kwargs)
    assert len(r.headers["x-request-id"]) >= 16


async def test_request_ids_are_unique(local_client: httpx.AsyncClient) -> None:
    ids = {(await local_client.get("/healthz")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize("incoming", ["abc-123", "req_01HZX.9:trace", "a" * 128])
async def test_a_sane_incoming_request_id_is_kept(local_client: httpx.AsyncClient, incoming: str) -> None:
    r = await local_client.post(GEN, json={"prompt": ""}, headers={"x-request-id": incoming})
    assert r.status_code == 400
    assert r.headers["x-request-id"] == incoming


@pytest.mark.parametrize("incoming", ["a" * 129, "has space", "<script>", "line\tbreak", "ünïcode", ""])
async def test_an_insane_incoming_request_id_is_replaced(
    local_client: httpx.AsyncClient, incoming: str
) -> None:
    r = await local_client.get("/healthz", headers={"x-request-id": incoming.encode("utf-8")})
    assert r.headers["x-request-id"] != incoming
    assert r.headers["x-request-id"].isalnum()
    assert r.headers.get_list("x-request-id") == [r.headers["x-request-id"]]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/conversations", "GET, POST"),
        ("POST", "/v1/conversations/conv-1", "DELETE, GET"),
        ("DELETE", "/v1/models", "GET"),
    ],
)
async def test_a_405_names_every_method_the_path_has(
    openai_client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    """Found by fuzzing: with two routes on one path, `Allow` named only the first one's method."""
    r = await openai_client.request(method, path)
    assert r.status_code == 405
    assert r.headers.get_list("allow") == [allow]


async def test_a_key_limit_must_be_a_number(upstream: respx.MockRouter) -> None:
    """Found by fuzzing: `"tokens_per_month": true` made a key limited to 1 token a month."""
    admin = "bad-inputs-admin-token-0123456789"
    async with serving(create_app(openai_settings(auth_mode="keys", admin_token=admin))) as client:
        for value in (True, "100"):
            r = await client.post(
                "/admin/keys",
                json={"name": "x", "limits": {"tokens_per_month": value}},
                headers={"authorization": f"Bearer {admin}"},
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "limits.tokens_per_month"


async def test_an_oversized_body_over_real_http_gets_the_json_413(live_server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        r = await client.post(GEN, content=b'{"prompt": "' + b"x" * 5_000_000 + b'"}', headers=JSON)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_even_an_internal_failure_answers_an_openai_error_with_the_request_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug is never a bad input; this stands in for one to check what the client gets."""

    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(OpenAIProvider, "complete", broken)
    app = create_app(make_settings(provider="openai", openai_api_key="sk-x", openai_http_transport="httpx"))
    async with serving(app, raise_app_exceptions=False) as client:
        r = await client.post(GEN, json={"prompt": "Hi"}, headers={"x-request-id": "trace-500"})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "api_error"
    assert "a bug" not in r.text
    assert r.headers["x-request-id"] == "trace-500"
