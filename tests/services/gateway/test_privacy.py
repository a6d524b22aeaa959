"""Privacy: personal data never reaches the upstream in `redact` mode and comes back in the answer
(streams included); `block` refuses; the mode can only be tightened; redaction fails closed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis

from app.errors import InvalidRequest
from app.providers.base import Message
from app.services.gateway.privacy import Redactor, luhn_valid, valid_cn_id
from app.services.generation.context import RequestContext
from app.services.generation.spec import GenerationSpec
from tests.conftest import REDIS, openai_settings
from tests.upstream_faults import Service, ok, sse_events, streamed

CHAT = "/v1/chat/completions"

EMAIL = "zhang.san@example.com"
MOBILE = "13812345678"
CN_ID = "11010519491231002X"
CARD = "4111 1111 1111 1111"
IP = "192.168.1.20"
PERSONAL = f"我是张三，邮箱{EMAIL}，手机{MOBILE}，身份证{CN_ID}，卡号{CARD}，我的IP是{IP}。"
VALUES = (EMAIL, MOBILE, CN_ID, CARD, IP)


def chat(content: str = PERSONAL, **more: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **more}


def echo(request: httpx.Request) -> httpx.Response:
    """An upstream that repeats the last message it was sent."""
    sent = json.loads(request.content)["messages"][-1]["content"]
    return ok(f"You said: {sent}")


def sent_upstream(route: respx.Route) -> str:
    return "\n".join(call.request.content.decode() for call in route.calls)


# -- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail me at ann.lee+news@mail.example.co.uk please", "email"),
        ("我的邮箱是zhang@example.cn，谢谢", "email"),
        ("手机号13812345678", "phone"),
        ("call +86 138 1234 5678 today", "phone"),
        ("call 0086-139-1234-5678", "phone"),
        ("办公室电话 010-12345678", "phone"),
        ("call +44 20 7946 0958", "phone"),
        ("call (415) 555-2671", "phone"),
        ("身份证号11010519491231002X", "id_number"),
        ("card 4111 1111 1111 1111 exp 12/29", "card"),
        ("card 4111-1111-1111-1111", "card"),
        ("amex 378282246310005", "card"),
        ("server 10.0.0.1.", "ip"),
        ("host 2001:db8::8a2e:370:7334 is down", "ip"),
    ],
)
def test_personal_data_is_found(text: str, kind: str) -> None:
    redaction = Redactor().redact([Message("user", text)])
    assert dict(redaction.counts) == {kind: 1}
    (placeholder, value) = next(iter(redaction.values.items()))
    assert value not in redaction.messages[0].content
    assert placeholder in redaction.messages[0].content
    assert redaction.restore(redaction.messages[0].content) == text


@pytest.mark.parametrize(
    "text",
    [
        "身份证号110105194912310021",  # checksum does not match
        "card 4111 1111 1111 1112",  # fails Luhn
        "released in version 1.2.3 at 12:30:45 on 2024-01-15",
        "order 20240115 shipped, 3 items, total 129.99",
        "the ratio is 999.999.999.999",  # not an IP address
        "no personal data here, just 42 and 3.14",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    redaction = Redactor().redact([Message("user", text)])
    assert not redaction.counts
    assert redaction.messages[0].content == text


def test_checksums() -> None:
    assert valid_cn_id(CN_ID)
    assert not valid_cn_id(CN_ID[:-1] + "1")
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_one_value_gets_one_placeholder_across_messages() -> None:
    redaction = Redactor().redact([Message("system", f"Reply to {EMAIL}"), Message("user", f"I am {EMAIL}")])
    assert redaction.counts["email"] == 2
    assert list(redaction.values) == ["[EMAIL_1]"]
    assert redaction.messages[1].content == "I am [EMAIL_1]"


def test_a_placeholder_the_client_wrote_is_not_reused() -> None:
    redaction = Redactor().redact([Message("user", f"Template: [EMAIL_1]. Mine: {EMAIL}")])
    assert redaction.values == {"[EMAIL_2]": EMAIL}
    assert redaction.restore("[EMAIL_1] / [EMAIL_2]") == f"[EMAIL_1] / {EMAIL}"


# -- through the service ---------------------------------------------------------------------


async def test_redacted_prompts_reach_the_upstream_and_answers_come_back_whole(
    upstream: respx.MockRouter,
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings()) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-privacy-mode": "redact"})
    assert r.status_code == 200, r.text
    sent = sent_upstream(calls)
    for value in VALUES:
        assert value not in sent
        assert json.dumps(value)[1:-1] not in sent  # nor JSON-escaped
    assert "[EMAIL_1]" in sent
    assert r.json()["choices"][0]["message"]["content"] == f"You said: {PERSONAL}"
    privacy = r.json()["metadata"]["privacy"]
    assert privacy == {
        "mode": "redact",
        "redacted": {"card": 1, "email": 1, "id_number": 1, "ip": 1, "phone": 1},
    }
    assert not any(value in json.dumps(r.json()["metadata"]) for value in VALUES)


async def test_placeholders_split_across_stream_chunks_are_restored(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(
        return_value=streamed("Write to [EM", "AIL", "_1] or ", "call [PHONE_", "1", "]", " [soon].")
    )
    async with Service(openai_settings()) as client:
        r = await client.post(
            "/v1/generate",
            json={"prompt": f"Contact {EMAIL} or {MOBILE}", "stream": True},
            headers={"x-privacy-mode": "redact"},
        )
    assert r.status_code == 200, r.text
    events = sse_events(r.text)
    pieces = [e["text"] for e in events if isinstance(e, dict) and e.get("object") == "generation.chunk"]
    assert "".join(pieces) == f"Write to {EMAIL} or call {MOBILE} [soon]."
    assert not any("[EM" in p or "[PHONE" in p for p in pieces)
    assert events[-2]["text"] == f"Write to {EMAIL} or call {MOBILE} [soon]."
    assert EMAIL not in sent_upstream(calls)


async def test_block_mode_refuses_personal_data_without_calling_the_upstream(
    upstream: respx.MockRouter,
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings()) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-privacy-mode": "block"})
        clean = await client.post(CHAT, json=chat("Hello!"), headers={"x-privacy-mode": "block"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "personal_data_detected"
    assert error["param"] == "messages"
    assert "1 email" in error["message"]
    assert not any(value in error["message"] for value in VALUES)
    assert clean.status_code == 200
    assert calls.call_count == 1


async def test_the_default_mode_applies_and_a_request_cannot_weaken_it(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings(privacy_mode="redact")) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-privacy-mode": "off"})
    assert r.status_code == 200
    assert EMAIL not in sent_upstream(calls)
    assert r.json()["metadata"]["privacy"]["mode"] == "redact"


async def test_a_request_may_tighten_the_default(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings(privacy_mode="redact")) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-privacy-mode": "block"})
    assert r.status_code == 400


async def test_privacy_is_off_by_default(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings()) as client:
        r = await client.post(CHAT, json=chat())
    assert EMAIL in sent_upstream(calls)
    assert "privacy" not in r.json()["metadata"]


async def test_an_unknown_mode_is_a_400_naming_the_header(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings()) as client:
        r = await client.post(CHAT, json=chat(), headers={"x-privacy-mode": "maybe"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "x-privacy-mode"
    assert calls.call_count == 0


async def test_redaction_that_cannot_run_refuses_the_request(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    service = Service(openai_settings(privacy_mode="redact"))

    def broken(messages: object) -> object:
        raise RuntimeError("detector crashed")

    async with service as client:
        monkeypatch.setattr(service.state.safeguards.privacy.redactor, "redact", broken)
        r = await client.post(CHAT, json=chat())
        streamed_r = await client.post(CHAT, json=chat(stream=True))
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "redaction_failed"
    assert streamed_r.status_code == 503
    assert calls.call_count == 0, "an unredacted prompt was sent"


async def test_a_preset_can_set_the_mode_of_its_jobs(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    service = Service(openai_settings())
    async with service:
        generation = service.state.generation
        job = generation.plan(
            RequestContext.internal(),
            GenerationSpec(endpoint="presets", model=None, messages=[Message("user", PERSONAL)]),
        )
        job.privacy = "block"
        with pytest.raises(InvalidRequest):
            await generation.complete(job)
        job = generation.plan(
            RequestContext.internal(),
            GenerationSpec(endpoint="presets", model=None, messages=[Message("user", PERSONAL)]),
        )
        job.privacy = "redact"
        outcome = await generation.complete(job)
    assert outcome.completion.choices[0].text == f"You said: {PERSONAL}"
    assert calls.call_count == 1
    assert EMAIL not in sent_upstream(calls)


async def test_the_cache_holds_no_personal_data_and_restores_each_callers_own(
    upstream: respx.MockRouter, redis: Redis, redis_prefix: str
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    config = openai_settings(
        privacy_mode="redact", cache_enabled=True, redis_url=REDIS, redis_prefix=redis_prefix
    )
    async with Service(config) as client:
        alice = await client.post(CHAT, json=chat("I am alice@example.com", temperature=0))
        bob = await client.post(CHAT, json=chat("I am bob@example.org", temperature=0))
    # The upstream saw the same redacted prompt twice over: one call, one cached answer.
    assert calls.call_count == 1
    assert bob.headers["x-cache"] == "hit"
    assert alice.json()["choices"][0]["message"]["content"] == "You said: I am alice@example.com"
    assert bob.json()["choices"][0]["message"]["content"] == "You said: I am bob@example.org"
    stored = b"".join([await redis.get(key) async for key in redis.scan_iter(match=f"{redis_prefix}*")])
    assert b"[EMAIL_1]" in stored
    assert b"alice@example.com" not in stored


async def test_an_email_given_as_user_is_replaced_by_a_pseudonym(upstream: respx.MockRouter) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    async with Service(openai_settings(privacy_mode="redact")) as client:
        for _ in range(2):
            r = await client.post(CHAT, json=chat("Hello!", user=EMAIL))
            assert r.json()["metadata"]["privacy"]["redacted"] == {"email": 1}
    users = [json.loads(call.request.content)["user"] for call in calls.calls]
    assert users[0] == users[1]
    assert users[0].startswith("user-")
    assert EMAIL not in sent_upstream(calls)


async def test_a_preset_file_sets_the_privacy_mode_of_its_generations(
    upstream: respx.MockRouter, tmp_path: Any
) -> None:
    calls = upstream.post("/chat/completions").mock(side_effect=echo)
    path = tmp_path / "presets.yaml"
    path.write_text(
        """
presets:
  support_reply:
    system: You answer support e-mails.
    prompt: "{{ mail }}"
    inputs:
      mail: {type: text, required: true}
    privacy: redact
  strict_reply:
    system: You answer support e-mails.
    prompt: "{{ mail }}"
    inputs:
      mail: {type: text, required: true}
    privacy: block
"""
    )
    async with Service(openai_settings(presets_file=str(path))) as client:
        redacted = await client.post(
            "/v1/presets/support_reply/generate", json={"inputs": {"mail": f"I am {EMAIL}"}}
        )
        refused = await client.post(
            "/v1/presets/strict_reply/generate", json={"inputs": {"mail": f"I am {EMAIL}"}}
        )
    assert redacted.status_code == 200, redacted.text
    assert redacted.json()["text"] == f"You said: I am {EMAIL}"
    assert redacted.json()["metadata"]["privacy"]["redacted"] == {"email": 1}
    assert EMAIL not in sent_upstream(calls)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "personal_data_detected"
    assert calls.call_count == 1
