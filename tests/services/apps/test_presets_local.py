"""The presets on the embedded model: real text, no network, no key."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.preset_helpers import serve
from tests.services.apps.test_presets import EXAMPLES
from tests.services.apps.test_summarize import long_text

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(EXAMPLES))
async def test_every_preset_answers_from_the_embedded_model(
    name: str, local_client: httpx.AsyncClient
) -> None:
    inputs, _ = EXAMPLES[name]
    request = {"inputs": inputs, "max_tokens": 12, "seed": 1, "temperature": 0}
    r = await local_client.post(f"/v1/presets/{name}/generate", json=request)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["provider"] == "local"
    assert body["text"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 12
    # The prompt really carried the preset's system prompt and inputs: far more than the bare input.
    assert body["usage"]["prompt_tokens"] > 30


async def test_summarize_a_text_beyond_the_embedded_models_window() -> None:
    # A 512-token window keeps this quick: the text only has to overflow it.
    app = create_app(make_settings(provider="local", local_n_ctx=512))
    async with serve(app) as client:
        r = await client.post(
            "/v1/presets/summarize/generate",
            json={
                "inputs": {"text": long_text(25), "words": 20},
                "max_tokens": 16,
                "seed": 1,
                "temperature": 0,
            },
        )
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["metadata"]["summarize"]
    assert meta["input_tokens"] > 512
    assert meta["stages"][0]["parts"] >= 2
    assert body["text"].strip()
    assert body["usage"]["prompt_tokens"] < 512
