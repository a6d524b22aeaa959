"""Faults injected into a mocked upstream, and what the client of this service sees: retries with
backoff and Retry-After, one deadline, fallbacks on one retry budget, circuit breakers and the
concurrency cap."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import pytest
import respx

from tests.clock import ManualClock
from tests.conftest import openai_settings
from tests.upstream_faults import (
    Service,
    dying_stream,
    error,
    ok,
    slow,
    slow_stream,
    sse_bytes,
    sse_events,
    streamed,
)

CHAT = "/v1/chat/completions"
PROMPT = "Tell me a joke about retries."


def settings(**overrides: Any) -> Any:
    """Two upstream models: `primary` falls back to `backup`. Backoff is short to keep tests quick."""
    values: dict[str, Any] = {
        "models": {
            "primary": {"provider": "openai", "upstream_model": "gpt-4o", "fallbacks": ["backup"]},
            "backup": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "alone": {"provider": "openai", "upstream_model": "gpt-4.1"},
        },
        "upstream_max_retries": 2,
        "retry_backoff": 0.01,
        "retry_backoff_max": 0.02,
    }
    values.update(overrides)
    return openai_settings(**values)


def chat(model: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **more}


def route(upstream: respx.MockRouter, upstream_model: str) -> respx.Route:
    return upstream.post("/chat/completions", json__model=upstream_model)


async def test_5xx_is_retried_until_it_succeeds(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=[error(500), error(503), ok("Finally.")])
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Finally."
    assert r.json()["metadata"]["retries"] == 2
    assert calls.call_count == 3


async def test_retries_stop_when_the_budget_is_spent(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(return_value=error(500))
    async with Service(settings(upstream_max_retries=1)) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_error"
    assert calls.call_count == 2


async def test_429_waits_for_retry_after(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=[error(429, {"retry-after": "1"}), ok()])
    async with Service(settings()) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone"))
        elapsed = time.perf_counter() - started
    assert r.status_code == 200, r.text
    assert calls.call_count == 2
    assert elapsed >= 1.0, "the retry came before the upstream's Retry-After"


async def test_retry_after_longer_than_we_wait_goes_to_the_client(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(return_value=error(429, {"retry-after": "120"}))
    async with Service(settings(retry_max_wait=5)) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone"))
    assert time.perf_counter() - started < 2
    assert r.status_code == 429
    assert r.headers["retry-after"] == "120"
    assert r.json()["error"]["code"] == "upstream_rate_limited"
    assert calls.call_count == 1


async def test_a_long_retry_after_sends_the_request_to_the_fallback(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(429, {"retry-after": "60"}))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=ok("From the backup."))
    async with Service(settings(retry_max_wait=5)) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "backup"
    assert (primary.call_count, backup.call_count) == (1, 1)


async def test_timeouts_are_retried_then_answered_with_504(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=httpx.ReadTimeout("upstream too slow"))
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 504
    assert r.json()["error"]["type"] == "timeout_error"
    assert calls.call_count == 3


async def test_a_connection_reset_is_retried(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=[httpx.ConnectError("connection reset"), ok("Back.")])
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Back."
    assert calls.call_count == 2


async def test_malformed_json_is_retried_then_reported_as_502(upstream: respx.MockRouter) -> None:
    garbled = httpx.Response(200, headers={"content-type": "application/json"}, content=b'{"choices": [')
    calls = route(upstream, "gpt-4.1").mock(return_value=garbled)
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_bad_response"
    assert calls.call_count == 3


async def test_the_clients_own_mistakes_are_neither_retried_nor_sent_to_a_fallback(
    upstream: respx.MockRouter,
) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(400))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=ok())
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 400
    assert (primary.call_count, backup.call_count) == (1, 0)


async def test_the_deadline_cuts_a_hanging_upstream(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4.1").mock(side_effect=slow(5))
    async with Service(settings(upstream_deadline=0.5, openai_timeout=30)) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone"))
    # Well before the upstream's 5 s, with room for a busy machine.
    assert time.perf_counter() - started < 4
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"


async def test_no_retry_is_started_that_the_deadline_would_cut(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(return_value=error(500))
    async with Service(settings(upstream_deadline=0.5, retry_backoff=2, retry_backoff_max=4)) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone"))
    assert time.perf_counter() - started < 0.5
    assert r.status_code == 502
    assert calls.call_count == 1


async def test_the_deadline_is_read_on_the_injected_clock(upstream: respx.MockRouter) -> None:
    """A request's deadline and what is left of it are measured on the app's monotonic clock: an
    upstream failure that takes (by that clock) longer than the whole deadline is not retried,
    though no real time passed."""
    clock = ManualClock()

    def slow_failure(request: httpx.Request) -> httpx.Response:
        clock.advance(31)
        return error(500)

    calls = route(upstream, "gpt-4.1").mock(side_effect=slow_failure)
    async with Service(settings(upstream_deadline=30), clocks=clock.clocks) as client:
        r = await client.post(CHAT, json=chat("alone"))
    assert r.status_code == 502
    assert calls.call_count == 1, "a retry past the deadline must not start"
    calls.mock(return_value=error(500))
    async with Service(settings(upstream_deadline=30), clocks=clock.clocks) as client:
        await client.post(CHAT, json=chat("alone"))
    assert calls.call_count == 1 + 3, "with time left, the same failure is retried twice"


# -- fallbacks -------------------------------------------------------------------------------


async def test_a_failing_model_is_served_by_its_fallback(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(500))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=ok("From the backup."))
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "backup"
    assert body["provider"] == "openai"
    assert body["choices"][0]["message"]["content"] == "From the backup."
    assert body["metadata"]["served_by"] == "backup"
    assert body["metadata"]["fallback_from"] == "primary"
    assert body["metadata"]["retries"] == 2
    assert (primary.call_count, backup.call_count) == (3, 1)


async def test_a_fallback_does_not_restart_the_retry_budget(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(500))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=error(502))
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 502
    # Two retries in all: spent on the primary, none left for the backup.
    assert (primary.call_count, backup.call_count) == (3, 1)


async def test_retries_left_over_are_used_by_the_fallback(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(429, {"retry-after": "60"}))
    backup = route(upstream, "gpt-4o-mini").mock(side_effect=[error(500), ok("Second try.")])
    async with Service(settings(retry_max_wait=5)) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 200, r.text
    assert r.json()["metadata"]["retries"] == 1
    assert (primary.call_count, backup.call_count) == (1, 2)


async def test_a_stream_falls_back_before_its_first_chunk(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4o").mock(return_value=error(503))
    route(upstream, "gpt-4o-mini").mock(return_value=streamed("Hi ", "from backup."))
    async with Service(settings(upstream_max_retries=0)) as client:
        r = await client.post("/v1/generate", json={"model": "primary", "prompt": PROMPT, "stream": True})
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    final = events[-2]
    assert final["text"] == "Hi from backup."
    assert final["model"] == "backup"
    assert final["metadata"]["fallback_from"] == "primary"


async def test_chat_stream_chunks_name_the_model_that_served_them(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4o").mock(side_effect=httpx.ConnectError("refused"))
    route(upstream, "gpt-4o-mini").mock(return_value=streamed("Hello."))
    async with Service(settings(upstream_max_retries=0)) as client:
        r = await client.post(CHAT, json=chat("primary", stream=True))
    chunks = [e for e in sse_events(r.text) if e != "[DONE]"]
    assert chunks
    assert {c["model"] for c in chunks} == {"backup"}


async def test_a_stream_that_dies_halfway_is_not_retried(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=dying_stream("Once upon ", "a time"))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=streamed("Other text."))
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("primary", stream=True))
    assert r.status_code == 200
    events = sse_events(r.text)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2] if e["choices"])
    assert text == "Once upon a time"
    assert events[-2]["error"]["code"] == "upstream_unreachable"
    assert events[-1] == "[DONE]"
    # The client has seen text: neither a retry nor a fallback could continue it.
    assert (primary.call_count, backup.call_count) == (1, 0)


async def test_a_garbled_stream_before_any_text_is_retried(upstream: respx.MockRouter) -> None:
    garbled = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=b"data: {not json\n\n" + sse_bytes([])
    )
    calls = route(upstream, "gpt-4.1").mock(side_effect=[garbled, streamed("Clean.")])
    async with Service(settings()) as client:
        r = await client.post("/v1/generate", json={"model": "alone", "prompt": PROMPT, "stream": True})
    assert r.status_code == 200
    assert sse_events(r.text)[-2]["text"] == "Clean."
    assert calls.call_count == 2


async def test_a_stream_failing_before_any_text_is_retried(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=[dying_stream(), streamed("Fine now.")])
    async with Service(settings()) as client:
        r = await client.post("/v1/generate", json={"model": "alone", "prompt": PROMPT, "stream": True})
    final = sse_events(r.text)[-2]
    assert final["text"] == "Fine now."
    assert final["metadata"]["retries"] == 1
    assert calls.call_count == 2


# -- circuit breaker -------------------------------------------------------------------------


async def test_an_open_circuit_fails_fast_until_a_probe_succeeds(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(return_value=error(500))
    config = settings(upstream_max_retries=0, circuit_failure_threshold=2, circuit_cooldown=30)
    clock = ManualClock()
    async with Service(config, clocks=clock.clocks) as client:
        for _ in range(2):
            assert (await client.post(CHAT, json=chat("alone"))).status_code == 502
        r = await client.post(CHAT, json=chat("alone"))
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "circuit_open"
        assert int(r.headers["retry-after"]) >= 1
        assert calls.call_count == 2, "an open circuit must not reach the upstream"

        clock.advance(29)
        assert (await client.post(CHAT, json=chat("alone"))).status_code == 503  # still cooling down
        clock.advance(1)
        calls.mock(return_value=ok("Recovered."))
        r = await client.post(CHAT, json=chat("alone"))
        assert r.status_code == 200
        assert (await client.post(CHAT, json=chat("alone"))).status_code == 200
        assert calls.call_count == 4


async def test_a_failed_probe_opens_the_circuit_again(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(return_value=error(500))
    config = settings(upstream_max_retries=0, circuit_failure_threshold=1, circuit_cooldown=30)
    clock = ManualClock()
    async with Service(config, clocks=clock.clocks) as client:
        assert (await client.post(CHAT, json=chat("alone"))).status_code == 502
        clock.advance(30)
        assert (await client.post(CHAT, json=chat("alone"))).status_code == 502  # the probe
        assert (await client.post(CHAT, json=chat("alone"))).status_code == 503
        assert calls.call_count == 2


async def test_an_open_circuit_sends_requests_straight_to_the_fallback(upstream: respx.MockRouter) -> None:
    primary = route(upstream, "gpt-4o").mock(return_value=error(500))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=ok("Backup."))
    config = settings(upstream_max_retries=0, circuit_failure_threshold=1, circuit_cooldown=60)
    async with Service(config) as service_client:
        first = await service_client.post(CHAT, json=chat("primary"))
        second = await service_client.post(CHAT, json=chat("primary"))
    assert first.json()["model"] == second.json()["model"] == "backup"
    assert primary.call_count == 1, "the open circuit should have skipped the primary"
    assert backup.call_count == 2


async def test_circuit_state_is_exposed_for_metrics(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4.1").mock(return_value=error(500))
    service = Service(settings(upstream_max_retries=1, circuit_failure_threshold=2))
    async with service as client:
        await client.post(CHAT, json=chat("alone"))
        resilience = service.state.safeguards.resilience
        assert resilience.circuits["openai:gpt-4.1"].state == "open"
        assert resilience.retries_total == 1


# -- concurrency cap -------------------------------------------------------------------------


async def test_requests_beyond_the_concurrency_cap_get_503_with_retry_after(
    upstream: respx.MockRouter,
) -> None:
    route(upstream, "gpt-4.1").mock(side_effect=slow(0.5))
    config = settings(upstream_max_concurrency=1, upstream_queue_timeout=0.1)
    async with Service(config) as client:
        first, second = await asyncio.gather(
            client.post(CHAT, json=chat("alone")), client.post(CHAT, json=chat("alone"))
        )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 503]
    refused = first if first.status_code == 503 else second
    assert refused.json()["error"]["code"] == "upstream_busy"
    assert refused.headers["retry-after"] == "1"


async def test_a_stream_holds_its_slot_until_it_ends(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4.1").mock(side_effect=lambda request: slow_stream("a", "b", "c", pause=0.2))
    config = settings(upstream_max_concurrency=1, upstream_queue_timeout=0.1)
    async with Service(config) as client:

        async def later() -> httpx.Response:
            await asyncio.sleep(0.3)  # the stream has sent its first chunks by now
            return await client.post(CHAT, json=chat("alone"))

        stream, plain = await asyncio.gather(client.post(CHAT, json=chat("alone", stream=True)), later())
    assert stream.status_code == 200
    assert plain.status_code == 503
    assert plain.json()["error"]["code"] == "upstream_busy"


async def test_a_request_waits_briefly_for_a_free_slot(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=slow(0.1))
    config = settings(upstream_max_concurrency=1, upstream_queue_timeout=2)
    async with Service(config) as client:
        results = await asyncio.gather(*(client.post(CHAT, json=chat("alone")) for _ in range(3)))
    assert [r.status_code for r in results] == [200, 200, 200]
    assert calls.call_count == 3


# -- privacy of logs -------------------------------------------------------------------------


async def test_retry_and_fallback_logs_hold_neither_keys_nor_prompts(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    route(upstream, "gpt-4o").mock(return_value=error(500))
    route(upstream, "gpt-4o-mini").mock(return_value=ok())
    caplog.set_level(logging.DEBUG, logger="genserve")
    async with Service(settings()) as client:
        r = await client.post(CHAT, json=chat("primary"))
    assert r.status_code == 200
    assert any(rec.getMessage() == "retrying upstream" for rec in caplog.records)
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.__dict__)
        assert "sk-test-secret-key-0000" not in text
        assert PROMPT not in text


@pytest.mark.slow
async def test_an_upstream_model_can_fall_back_to_the_embedded_model(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4o").mock(side_effect=httpx.ConnectError("no route to host"))
    config = settings(
        upstream_max_retries=0,
        models={
            "primary": {
                "provider": "openai",
                "upstream_model": "gpt-4o",
                "fallbacks": ["smollm2-135m-instruct"],
            },
            "smollm2-135m-instruct": {"provider": "local", "context_window": 2048},
        },
    )
    async with Service(config) as client:
        r = await client.post(
            "/v1/generate", json={"model": "primary", "prompt": "Say hello.", "max_tokens": 8, "seed": 1}
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "local"
    assert body["model"] == "smollm2-135m-instruct"
    assert body["text"].strip()
    assert body["metadata"]["fallback_from"] == "primary"
    assert calls.call_count == 1


async def test_retry_after_ms_is_honoured_on_a_503(upstream: respx.MockRouter) -> None:
    calls = route(upstream, "gpt-4.1").mock(side_effect=[error(503, {"retry-after-ms": "400"}), ok()])
    async with Service(settings()) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone"))
        elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert calls.call_count == 2
    assert elapsed >= 0.4


async def test_a_stream_that_never_starts_is_cut_at_the_deadline(upstream: respx.MockRouter) -> None:
    route(upstream, "gpt-4.1").mock(side_effect=slow(5, lambda: streamed("late")))
    async with Service(settings(upstream_deadline=0.5, openai_timeout=30)) as client:
        started = time.perf_counter()
        r = await client.post(CHAT, json=chat("alone", stream=True))
    assert time.perf_counter() - started < 2
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "deadline_exceeded"


async def test_the_official_sdk_sees_the_fallback_and_the_open_circuit(upstream: respx.MockRouter) -> None:
    import openai

    route(upstream, "gpt-4o").mock(return_value=error(500))
    route(upstream, "gpt-4o-mini").mock(return_value=ok("Backup."))
    route(upstream, "gpt-4.1").mock(return_value=error(500))
    config = settings(upstream_max_retries=0, circuit_failure_threshold=1, circuit_cooldown=60)
    async with Service(config) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://genserve.test/v1", api_key="unused", http_client=http, max_retries=0
        )
        messages: Any = [{"role": "user", "content": PROMPT}]
        reply = await sdk.chat.completions.create(model="primary", messages=messages)
        assert reply.model == "backup"
        assert reply.choices[0].message.content == "Backup."
        with pytest.raises(openai.InternalServerError) as failed:
            await sdk.chat.completions.create(model="alone", messages=messages)
        assert failed.value.status_code == 502
        with pytest.raises(openai.InternalServerError) as paused:
            await sdk.chat.completions.create(model="alone", messages=messages)
        assert paused.value.status_code == 503
        assert paused.value.code == "circuit_open"
        assert int(paused.value.response.headers["retry-after"]) > 0


async def test_fallbacks_stay_within_the_models_a_key_may_use(upstream: respx.MockRouter) -> None:
    from tests.access_helpers import create_key, keys_app, running

    primary = route(upstream, "gpt-4o").mock(return_value=error(500))
    backup = route(upstream, "gpt-4o-mini").mock(return_value=ok("Backup."))
    app = keys_app(models=settings().models, upstream_max_retries=0)
    async with running(app) as client:
        _, narrow = await create_key(client, allowed_models=["primary"])
        _, wide = await create_key(client, allowed_models=["primary", "backup"])
        refused = await client.post(CHAT, json=chat("primary"), headers={"authorization": f"Bearer {narrow}"})
        served = await client.post(CHAT, json=chat("primary"), headers={"authorization": f"Bearer {wide}"})
    assert refused.status_code == 502
    assert served.status_code == 200
    assert served.json()["model"] == "backup"
    assert (primary.call_count, backup.call_count) == (2, 1)


def test_a_half_open_circuit_lets_exactly_one_probe_through() -> None:
    from app.services.gateway.resilience import CircuitBreaker

    now = [0.0]
    circuit = CircuitBreaker(threshold=2, cooldown=10, clock=lambda: now[0])
    circuit.record_failure()
    assert circuit.state == "closed"
    circuit.record_failure()
    assert circuit.state == "open"
    assert not circuit.allow()
    now[0] = 10.0
    assert circuit.state == "half_open"
    assert circuit.allow()  # the probe
    assert not circuit.allow()  # everyone else waits for its verdict
    circuit.release()  # the probe's client went away: another may probe
    assert circuit.allow()
    circuit.record_success()
    assert circuit.state == "closed"
    assert circuit.allow()
    assert circuit.allow()


# -- the fallback says so (issue 23, part 3) ----------------------------------------------------


async def test_an_answer_from_a_fallback_says_so_to_the_official_sdk(upstream: respx.MockRouter) -> None:
    import openai

    route(upstream, "gpt-4o").mock(return_value=error(500))
    route(upstream, "gpt-4o-mini").mock(return_value=ok("Backup."))
    route(upstream, "gpt-4.1").mock(return_value=ok("Alone."))
    async with Service(settings(upstream_max_retries=0)) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://genserve.test/v1", api_key="unused", http_client=http, max_retries=0
        )
        messages: Any = [{"role": "user", "content": PROMPT}]
        raw = await sdk.chat.completions.with_raw_response.create(model="primary", messages=messages)
        direct = await sdk.chat.completions.with_raw_response.create(model="alone", messages=messages)
    reply = raw.parse().to_dict()
    assert raw.headers["x-genserve-fallback"] == "backup"
    assert reply["model"] == "backup"
    assert reply["provider"] == "openai"
    assert reply["metadata"]["provider"] == "openai"
    assert reply["metadata"]["fallback_from"] == "primary"
    assert "x-genserve-fallback" not in direct.headers
    assert "fallback_from" not in direct.parse().to_dict().get("metadata", {})


async def test_a_stream_from_a_fallback_says_so_in_its_headers_and_chunks(upstream: respx.MockRouter) -> None:
    import openai

    route(upstream, "gpt-4o").mock(side_effect=httpx.ConnectError("refused"))
    route(upstream, "gpt-4o-mini").mock(return_value=streamed("Hi ", "from backup."))
    async with Service(settings(upstream_max_retries=0)) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://genserve.test/v1", api_key="unused", http_client=http, max_retries=0
        )
        messages: Any = [{"role": "user", "content": PROMPT}]
        async with sdk.chat.completions.with_streaming_response.create(
            model="primary", messages=messages, stream=True
        ) as response:
            assert response.headers["x-genserve-fallback"] == "backup"
            chunks = [chunk async for chunk in await response.parse()]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi from backup."
    assert {c.model for c in chunks} == {"backup"}


async def test_an_open_circuit_sends_traffic_to_the_fallback_without_waiting_for_timeouts(
    upstream: respx.MockRouter,
) -> None:
    """While the upstream hangs, only the requests that open the circuit wait for its timeout;
    the rest go to the fallback at once, and say so."""
    import openai

    async def times_out(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.3)  # respx's transport does not apply httpx's timeouts itself
        raise httpx.ReadTimeout("timed out", request=request)

    hanging = route(upstream, "gpt-4o").mock(side_effect=times_out)
    route(upstream, "gpt-4o-mini").mock(return_value=ok("Backup."))
    config = settings(upstream_max_retries=0, circuit_failure_threshold=2, circuit_cooldown=60)
    async with Service(config) as http:
        sdk = openai.AsyncOpenAI(
            base_url="http://genserve.test/v1", api_key="unused", http_client=http, max_retries=0
        )
        messages: Any = [{"role": "user", "content": PROMPT}]
        for _ in range(2):  # each waits for the timeout, then falls back: the circuit opens
            await sdk.chat.completions.create(model="primary", messages=messages)
        started = time.perf_counter()
        replies = [
            await sdk.chat.completions.with_raw_response.create(model="primary", messages=messages)
            for _ in range(10)
        ]
        elapsed = time.perf_counter() - started
    assert hanging.call_count == 2, "the open circuit should have kept requests off the upstream"
    assert {r.headers["x-genserve-fallback"] for r in replies} == {"backup"}
    assert {r.parse().model for r in replies} == {"backup"}
    assert elapsed < 1.0, f"10 requests took {elapsed:.2f} s: they waited for the upstream"
