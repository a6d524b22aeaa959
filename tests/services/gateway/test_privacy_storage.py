"""What is stored follows the privacy mode: conversation turns and generation records keep the
redacted text in `redact` mode, and the `user` pseudonym is an HMAC under a server secret."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import httpx
import respx
from sqlalchemy import select

from app.main import create_app
from app.storage.tables import GenerationRecord
from tests.conftest import openai_settings
from tests.preset_helpers import serve
from tests.upstream_faults import ok

EMAIL = "zhang.san@example.com"
PHONE = "13812345678"


def echo(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)["messages"][-1]["content"]
    return ok(f"You said: {sent}")


async def test_redact_mode_stores_conversation_turns_redacted(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(side_effect=echo)
    async with serve(create_app(openai_settings(privacy_mode="redact"))) as client:
        conversation = (await client.post("/v1/conversations", json={})).json()["id"]
        r = await client.post(
            f"/v1/conversations/{conversation}/messages", json={"content": f"mail {EMAIL}, call {PHONE}"}
        )
        assert r.status_code == 200, r.text
        assert EMAIL in r.json()["text"]  # the client still gets its own data back
        stored = (await client.get(f"/v1/conversations/{conversation}")).json()["messages"]
    text = json.dumps(stored)
    assert EMAIL not in text
    assert PHONE not in text
    assert "[EMAIL_1]" in stored[0]["content"]
    assert "[EMAIL_1]" in stored[1]["content"]


async def test_redact_mode_records_keep_no_personal_data(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(side_effect=echo)
    app = create_app(openai_settings(privacy_mode="redact", store_text=True))
    async with serve(app) as client:
        r = await client.post("/v1/generate", json={"prompt": f"mail {EMAIL}", "max_tokens": 20})
        assert r.status_code == 200, r.text
        await app.state.genserve.records.flush()
        async with app.state.genserve.db.session() as session:
            row = (await session.execute(select(GenerationRecord))).scalar_one()
    assert EMAIL not in json.dumps(row.prompt)
    assert EMAIL not in json.dumps(row.output)
    assert "[EMAIL_1]" in json.dumps(row.output)


async def test_the_user_pseudonym_is_an_hmac_under_a_secret_kept_in_the_data_dir(
    upstream: respx.MockRouter, tmp_path: Path
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=ok())
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "user": EMAIL}
    sent = []
    for data_dir in (tmp_path / "a", tmp_path / "a", tmp_path / "b"):
        async with serve(create_app(openai_settings(privacy_mode="redact", data_dir=data_dir))) as client:
            assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
        sent.append(json.loads(route.calls[-1].request.content)["user"])
    secret_file = tmp_path / "a" / "pseudonym.key"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    secret = secret_file.read_bytes().strip()
    assert len(secret) >= 32
    expected = "user-" + hmac.new(secret, EMAIL.encode(), hashlib.sha256).hexdigest()[:32]
    assert sent[0] == expected
    assert sent[1] == sent[0]  # the same install keeps its secret
    assert sent[2] != sent[0]  # another install has its own
    assert sent[0] != "user-" + hashlib.sha256(EMAIL.encode()).hexdigest()[:16]
