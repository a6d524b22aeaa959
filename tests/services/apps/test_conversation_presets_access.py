"""A key limited to some presets cannot start a conversation from another one, and a
conversation never shows an operator's preset prompt to a key that may not use the preset."""

from __future__ import annotations

import respx

from tests.access_helpers import ADMIN, bearer, completion, create_key, keys_app, running

ACME = {"company": "Acme Anvils", "product_facts": "Anvils ship within 3 days.", "tone": "formal"}


async def test_creating_a_conversation_applies_the_keys_preset_restriction(
    upstream: respx.MockRouter,
) -> None:
    async with running(keys_app()) as client:
        _, secret = await create_key(client, allowed_presets=["qa"])
        r = await client.post(
            "/v1/conversations", json={"preset": "customer_service", "inputs": ACME}, headers=bearer(secret)
        )
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert (error["code"], error["param"]) == ("preset_not_allowed", "preset")
        assert "Acme" not in r.text
        listed = await client.get("/v1/conversations", headers=bearer(secret))
        assert listed.json()["data"] == []


async def test_a_key_no_longer_allowed_a_preset_does_not_see_its_prompt(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    async with running(keys_app()) as client:
        key_id, secret = await create_key(client)
        r = await client.post(
            "/v1/conversations", json={"preset": "customer_service", "inputs": ACME}, headers=bearer(secret)
        )
        assert r.status_code == 200, r.text
        conversation = r.json()["id"]
        system = r.json()["system"]
        assert "Acme" in system  # the key may use the preset: it sees the prompt it made
        template_line = next(line for line in system.splitlines() if line.strip() and "Acme" not in line)
        r = await client.patch(f"/admin/keys/{key_id}", json={"allowed_presets": ["qa"]}, headers=ADMIN)
        assert r.status_code == 200, r.text
        for path in (f"/v1/conversations/{conversation}", "/v1/conversations"):
            r = await client.get(path, headers=bearer(secret))
            assert r.status_code == 200, r.text
            assert "Acme" in r.text  # its own inputs stay visible
            assert template_line not in r.text
        body = (await client.get(f"/v1/conversations/{conversation}", headers=bearer(secret))).json()
        assert body["system"] is None
        r = await client.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "hi"}, headers=bearer(secret)
        )
        assert r.status_code == 403, r.text
