"""The OpenAI Agents SDK on its default model (`OpenAIResponsesModel`, `/v1/responses`): `Runner.run`
with a `FileSearchTool` and with a function tool finishes, on the embedded model and in front of an
upstream. The SDK sends `include: []` and its own tool items; genserve must take them unchanged."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
import respx
from agents import (
    Agent,
    FileSearchTool,
    ModelSettings,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
    set_tracing_disabled,
)

from tests.access_helpers import create_key, keys_app, running
from tests.api.test_contract_sdk import LOCAL, async_client
from tests.conftest import UPSTREAM

__all__ = ["async_client"]  # fixtures

POLL = 50
ORDERS = {"A-1042": "shipped, arriving Friday"}
LOOKUPS: list[str] = []


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    # The SDK exports traces to OpenAI by default: nothing leaves this machine in tests.
    set_tracing_disabled(True)


@function_tool
def order_status(order_id: str) -> str:
    """Look up the status of an order by its number."""
    LOOKUPS.append(order_id)
    return ORDERS.get(order_id, "no such order")


def run_config() -> RunConfig:
    return RunConfig(tracing_disabled=True)


# -- in front of an upstream --------------------------------------------------------------------


def upstream_turn(request: httpx.Request) -> httpx.Response:
    """An upstream model that calls `order_status` once, then answers from its result; asked
    with passages (file_search), it quotes the first one."""
    body = json.loads(request.content)
    messages = body["messages"]
    tool_results = [m for m in messages if m["role"] == "tool"]
    user = "\n".join(m["content"] for m in messages if m["role"] == "user" and isinstance(m["content"], str))
    message: dict[str, Any]
    if body.get("tools") and not tool_results:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "order_status", "arguments": '{"order_id": "A-1042"}'},
        }
        message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    elif tool_results:
        message, finish = (
            {"role": "assistant", "content": f"Your order is {tool_results[-1]['content']}."},
            "stop",
        )
    elif '"""\n' in user:
        passage = user.split('"""\n', 1)[1].split('\n"""', 1)[0]
        message, finish = {"role": "assistant", "content": f"According to [1]: {passage}"}, "stop"
    else:
        message, finish = {"role": "assistant", "content": "I do not know."}, "stop"
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-agent",
            "object": "chat.completion",
            "created": 1,
            "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50},
        },
    )


@pytest.fixture(scope="module")
async def upstream_sdk() -> AsyncIterator[dict[str, Any]]:
    with respx.mock(assert_all_called=False) as upstream:
        upstream.post(f"{UPSTREAM}/chat/completions").mock(side_effect=upstream_turn)
        upstream.route(host="127.0.0.1").pass_through()  # the embedded tests' live server
        async with running(keys_app(local_embed_threads=1)) as client:
            _, secret = await create_key(client, name="agents")
            sdk = openai.AsyncOpenAI(
                base_url=str(client.base_url).rstrip("/") + "/v1",
                api_key=secret,
                max_retries=0,
                http_client=client,
            )
            store = await sdk.vector_stores.create(name="policies")
            await sdk.vector_stores.files.upload_and_poll(
                vector_store_id=store.id,
                file=("returns.md", io.BytesIO(b"Jackets may be returned within 30 days of delivery.")),
                poll_interval_ms=POLL,
            )
            yield {"sdk": sdk, "store": store.id, "upstream": upstream}


async def test_an_agent_with_a_function_tool_finishes_in_front_of_an_upstream(
    upstream_sdk: dict[str, Any],
) -> None:
    LOOKUPS.clear()
    agent = Agent(
        name="support",
        instructions="You answer questions about orders.",
        tools=[order_status],
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=upstream_sdk["sdk"]),
    )
    result = await Runner.run(agent, "Where is my order A-1042?", run_config=run_config())
    assert LOOKUPS == ["A-1042"]
    assert result.final_output == "Your order is shipped, arriving Friday."


async def test_an_agent_with_file_search_cites_the_policy_in_front_of_an_upstream(
    upstream_sdk: dict[str, Any],
) -> None:
    agent = Agent(
        name="policies",
        instructions="Answer from the shop's policies.",
        tools=[
            FileSearchTool(
                vector_store_ids=[upstream_sdk["store"]], max_num_results=3, include_search_results=True
            )
        ],
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=upstream_sdk["sdk"]),
    )
    result = await Runner.run(agent, "How long do I have to return a jacket?", run_config=run_config())
    assert "30 days" in result.final_output
    kinds = [item.type for item in result.new_items]
    assert "tool_call_item" in kinds  # the file_search_call, as the SDK names it
    message = next(r for r in result.raw_responses[-1].output if r.type == "message")
    [annotation] = message.content[0].annotations  # type: ignore[union-attr]
    assert annotation.type == "file_citation"
    assert annotation.filename == "returns.md"


# -- on the embedded model ------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_agent_with_a_function_tool_finishes_on_the_embedded_model(
    async_client: openai.AsyncOpenAI,
) -> None:
    """The SDK's loop on the offline default: the required call is made, its result posted back,
    and the next turn is the answer (the SDK resets `tool_choice` after a call; genserve never
    repeats an answered call), so `Runner.run` returns instead of hitting `max_turns`."""
    LOOKUPS.clear()
    agent = Agent(
        name="support",
        instructions="You answer questions about orders.",
        tools=[order_status],
        model=OpenAIResponsesModel(model=LOCAL, openai_client=async_client),
        model_settings=ModelSettings(tool_choice="required", max_tokens=40, temperature=0),
    )
    result = await Runner.run(agent, "Where is my order A-1042?", max_turns=4, run_config=run_config())
    assert len(LOOKUPS) >= 1
    assert isinstance(result.final_output, str)
    assert result.final_output.strip()


@pytest.mark.slow
async def test_an_agent_with_file_search_finishes_on_the_embedded_model(
    async_client: openai.AsyncOpenAI,
) -> None:
    store = await async_client.vector_stores.create(name="agents-embedded")
    await async_client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id,
        file=("returns.md", io.BytesIO(b"Jackets may be returned within 30 days of delivery.")),
        poll_interval_ms=POLL,
    )
    agent = Agent(
        name="policies",
        instructions="Answer from the shop's policies.",
        tools=[FileSearchTool(vector_store_ids=[store.id], max_num_results=2, include_search_results=True)],
        model=OpenAIResponsesModel(model=LOCAL, openai_client=async_client),
        model_settings=ModelSettings(max_tokens=40, temperature=0),
    )
    result = await Runner.run(agent, "How long do I have to return a jacket?", run_config=run_config())
    assert isinstance(result.final_output, str)
    assert result.final_output.strip()
    call = next(r for r in result.raw_responses[-1].output if r.type == "file_search_call")
    assert call.status == "completed"
    assert call.results
    assert call.results[0].filename == "returns.md"
