"""Branching needs the text a model reads: an upstream's chat template is unknown, so
`continue_from` is refused there with the reason, and `/v1/models` says so beforehand."""

from __future__ import annotations

import httpx
import respx


async def test_continue_from_on_an_upstream_model_is_a_clear_400(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    route = upstream.post("/chat/completions")
    r = await openai_client.post(
        "/v1/generate", json={"prompt": "Name a fruit.", "model": "gpt-4o-mini", "continue_from": "The"}
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "continue_from"
    assert error["code"] == "unsupported_parameter"
    assert "embedded model" in error["message"]
    assert not route.called


async def test_the_models_list_says_why_an_upstream_model_cannot_branch(
    openai_client: httpx.AsyncClient,
) -> None:
    cards = [c for c in (await openai_client.get("/v1/models")).json()["data"] if c["dimensions"] is None]
    assert cards
    for card in cards:
        assert card["continuation"] is False
        assert "whole chat turns" in card["continuation_note"]
