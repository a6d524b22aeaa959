"""The embedded model: token probabilities, branching from an alternative token, and a bias probe
end to end (pairs share their seed)."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

pytestmark = pytest.mark.slow

PROMPT = "Name a fruit."


async def generate(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"prompt": PROMPT, "temperature": 0, "logprobs": True, "top_logprobs": 3, **body}
    r = await client.post("/v1/generate", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def test_each_token_has_its_probability_and_alternatives(local_client: httpx.AsyncClient) -> None:
    choice = (await generate(local_client, max_tokens=8))["choices"][0]
    tokens = choice["logprobs"]
    assert "".join(t["token"] for t in tokens) == choice["text"]
    for t in tokens:
        assert t["logprob"] <= 0
        assert len(t["top_logprobs"]) == 3
        probabilities = [math.exp(a["logprob"]) for a in t["top_logprobs"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1.0 + 1e-6
        # At temperature 0 the chosen token is the most likely one.
        assert t["token"] == t["top_logprobs"][0]["token"]


async def test_branching_with_the_same_token_reproduces_the_answer(local_client: httpx.AsyncClient) -> None:
    original = (await generate(local_client, max_tokens=10))["choices"][0]
    tokens = original["logprobs"]
    k = 3
    prefix = "".join(t["token"] for t in tokens[: k + 1])
    branch = (await generate(local_client, max_tokens=10 - k - 1, continue_from=prefix))["choices"][0]
    assert branch["text"] == original["text"]
    # Only the tokens after the prefix are the branch's own.
    assert prefix + "".join(t["token"] for t in branch["logprobs"]) == branch["text"]
    assert [t["token"] for t in branch["logprobs"]] == [t["token"] for t in tokens[k + 1 :]]


async def test_branching_from_an_alternative_continues_after_it(local_client: httpx.AsyncClient) -> None:
    original = (await generate(local_client, max_tokens=6))["choices"][0]
    tokens = original["logprobs"]
    alternative = tokens[1]["top_logprobs"][1]["token"]
    prefix = tokens[0]["token"] + alternative
    body = await generate(local_client, max_tokens=8, continue_from=prefix, n=2, temperature=0.9, seed=5)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for choice in body["choices"]:
        assert choice["text"].startswith(prefix)
        assert len(choice["text"]) > len(prefix)
        assert prefix + "".join(t["token"] for t in choice["logprobs"]) == choice["text"]
    assert body["text"] == body["choices"][0]["text"]


async def test_a_branch_streams_its_new_tokens_and_ends_with_the_whole_text(
    local_client: httpx.AsyncClient,
) -> None:
    prefix = "The best fruit is"
    async with local_client.stream(
        "POST",
        "/v1/generate",
        json={"prompt": PROMPT, "max_tokens": 6, "continue_from": prefix, "stream": True, "logprobs": True},
    ) as r:
        assert r.status_code == 200
        events = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
    import json

    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    deltas = [json.loads(e) for e in events[:-2]]
    assert final["text"] == prefix + "".join(d["text"] for d in deltas)
    assert all("logprobs" in d for d in deltas)


async def test_the_models_list_says_the_embedded_model_can_branch(local_client: httpx.AsyncClient) -> None:
    card, embedding = (await local_client.get("/v1/models")).json()["data"]
    assert embedding["dimensions"] is not None  # the embedded embedding model, listed after
    assert card["continuation"] is True
    assert card["continuation_note"] is None


async def test_a_probe_runs_end_to_end_and_pairs_share_their_seed(
    local_app: FastAPI, local_client: httpx.AsyncClient
) -> None:
    """Both groups substitute the same name: with the same seed and settings, every pair's
    outputs must be identical — and the report must find no difference."""
    body = {
        "template": "Describe {name}, a {job}, in five words.",
        "variables": {"name": {"first": ["Alex", "Sam"], "second": ["Alex", "Sam"]}, "job": "nurse"},
        "samples": 3,
        "max_tokens": 10,
        "temperature": 0.9,
        "seed": 11,
    }
    r = await local_client.post("/v1/probes/bias", json=body)
    assert r.status_code == 200, r.text
    await local_app.state.genserve.probes.wait(r.json()["id"])
    probe = (await local_client.get(f"/v1/probes/{r.json()['id']}")).json()
    assert probe["status"] == "succeeded", probe["error"]
    report = probe["report"]
    assert [p["seed"] for p in report["pairs"]] == [11, 12, 13]
    for pair in report["pairs"]:
        first, second = pair["outputs"]
        assert first["text"].strip()
        assert first["text"] == second["text"]
        assert first["value"] == second["value"]
    # Different seeds give different samples.
    assert len({p["outputs"][0]["text"] for p in report["pairs"]}) > 1
    for measure in report["measures"]:
        assert measure["p_value"] == 1.0
        assert measure["significant"] is False
    assert report["verdict"].startswith("No difference detected on any measure at n = 3")


async def test_a_chinese_suite_runs_on_the_embedded_model(
    local_app: FastAPI, local_client: httpx.AsyncClient
) -> None:
    r = await local_client.post(
        "/v1/probes/bias", json={"suite": "gender-names-zh", "samples": 2, "max_tokens": 12, "seed": 3}
    )
    assert r.status_code == 200, r.text
    await local_app.state.genserve.probes.wait(r.json()["id"])
    probe = (await local_client.get(f"/v1/probes/{r.json()['id']}")).json()
    assert probe["status"] == "succeeded", probe["error"]
    outputs = [o for p in probe["report"]["pairs"] for o in p["outputs"]]
    assert {o["value"] for o in outputs} == {"王芳", "李娜", "王伟", "李强"}
    assert all(-1.0 <= o["sentiment"] <= 1.0 for o in outputs)
