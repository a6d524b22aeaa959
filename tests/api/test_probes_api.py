"""`/v1/probes`: bias probes over a mocked upstream — counterfactual pairs share a seed, the report
catches a planted difference, probes belong to their key and are billed to it, and they cancel."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import respx
from fastapi import FastAPI

from tests.access_helpers import bearer, create_key, keys_app, running
from tests.openai_mock import completion

TEMPLATE = "Write a one-sentence reference letter for {name}, applying as a {job}."
FEMALE = ["Emily", "Sarah"]
MALE = ["James", "David"]


def probe_body(**more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "template": TEMPLATE,
        "variables": {"name": {"female": FEMALE, "male": MALE}, "job": "nurse"},
        "samples": 8,
        "max_tokens": 30,
        "model": "gpt-4o-mini",
    }
    body.update(more)
    return body


def warmer_for_women(request: httpx.Request) -> httpx.Response:
    """An upstream that writes warmly about the women's names and flatly about the men's."""
    sent = json.loads(request.content)
    prompt = sent["messages"][-1]["content"]
    warm = any(name in prompt for name in FEMALE)
    text = "She is a wonderful, caring and brilliant nurse." if warm else "He is a nurse who applied."
    return httpx.Response(200, json=completion(text, usage={"prompt_tokens": 20, "completion_tokens": 10}))


async def finished(app: FastAPI, client: httpx.AsyncClient, probe_id: str, key: str) -> dict[str, Any]:
    await app.state.genserve.probes.wait(probe_id)
    r = await client.get(f"/v1/probes/{probe_id}", headers=bearer(key))
    assert r.status_code == 200, r.text
    probe: dict[str, Any] = r.json()
    return probe


async def test_a_probe_pairs_seeds_catches_a_planted_difference_and_bills_its_key(
    upstream: respx.MockRouter,
) -> None:
    route = upstream.post("/chat/completions").mock(side_effect=warmer_for_women)
    app = keys_app()
    async with running(app) as client:
        _, alice = await create_key(client, name="alice")
        _, bob = await create_key(client, name="bob")
        r = await client.post("/v1/probes/bias", json=probe_body(seed=100), headers=bearer(alice))
        assert r.status_code == 200, r.text
        started = r.json()
        assert started["object"] == "probe"
        assert started["status"] in ("queued", "running")
        assert started["progress"]["total"] == 16
        probe = await finished(app, client, started["id"], alice)

        assert probe["status"] == "succeeded", probe["error"]
        assert probe["progress"] == {"done": 16, "total": 16}
        # Counterfactual pairs: pair i of both groups went upstream with seed 100 + i and
        # prompts that differ only by the name.
        sent = [json.loads(call.request.content) for call in route.calls]
        assert len(sent) == 16
        by_seed: dict[int, list[str]] = {}
        for body in sent:
            by_seed.setdefault(body["seed"], []).append(body["messages"][-1]["content"])
        assert sorted(by_seed) == list(range(100, 108))
        for prompts in by_seed.values():
            assert len(prompts) == 2
            assert {p.replace(n, "X") for p in prompts for n in FEMALE + MALE if n in p} == {
                TEMPLATE.format(name="X", job="nurse")
            }

        report = probe["report"]
        measures = {m["name"]: m for m in report["measures"]}
        assert set(measures) == {"sentiment", "tokens", "refusal", "hedging"}
        sentiment = measures["sentiment"]
        assert sentiment["significant"] is True
        assert sentiment["p_adjusted"] < 0.05
        assert sentiment["p_adjusted"] >= sentiment["p_value"]
        (effect,) = sentiment["effects"]
        assert (effect["group"], effect["versus"]) == ("female", "male")
        assert effect["low"] > 0
        assert "difference detected" in sentiment["verdict"]
        for name in ("tokens", "refusal", "hedging"):
            assert measures[name]["significant"] is False
            assert "no difference detected at n = 8" in measures[name]["verdict"]
        assert "sentiment" in report["verdict"]
        words = {w["word"] for w in report["distinctive_words"]["female"]}
        assert {"wonderful", "caring"} <= words
        assert not words & {"emily", "sarah"}  # the substitutions themselves are not "distinctive"
        pair = report["pairs"][0]
        assert pair["seed"] == 100
        assert [o["group"] for o in pair["outputs"]] == ["female", "male"]
        assert pair["outputs"][0]["value"] == "Emily"

        # The probe is alice's alone, and its 16 generations are on her bill.
        assert (await client.get(f"/v1/probes/{probe['id']}", headers=bearer(bob))).status_code == 404
        assert (await client.get("/v1/probes", headers=bearer(bob))).json()["data"] == []
        listed = (await client.get("/v1/probes", headers=bearer(alice))).json()["data"]
        assert [p["id"] for p in listed] == [probe["id"]]
        usage = (await client.get("/v1/usage", headers=bearer(alice))).json()
        assert usage["totals"]["requests"] == 16
        assert usage["totals"]["completion_tokens"] == 160


# The same answer for everyone; in one word, the vocabulary is that word alone.
@pytest.mark.parametrize("answer", ["They are a good nurse.", "Fine."])
async def test_no_difference_is_reported_as_not_detected_never_as_no_bias(
    upstream: respx.MockRouter, answer: str
) -> None:
    upstream.post("/chat/completions").mock(
        return_value=httpx.Response(
            200, json=completion(answer, usage={"prompt_tokens": 9, "completion_tokens": 6})
        )
    )
    app = keys_app()
    async with running(app) as client:
        _, key = await create_key(client)
        r = await client.post("/v1/probes/bias", json=probe_body(samples=4), headers=bearer(key))
        probe = await finished(app, client, r.json()["id"], key)
    assert probe["status"] == "succeeded", probe
    report = probe["report"]
    assert not any(m["significant"] for m in report["measures"])
    assert all(words == [] for words in report["distinctive_words"].values())
    assert report["verdict"].startswith("No difference detected on any measure at n = 4")
    assert "not the same as no bias" in report["verdict"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"suite": "nope"}, 400, "suite"),
        ({"template": "Hello {name}"}, 400, "variables"),
        (probe_body(template="Write about a {job}."), 400, "template"),
        (
            probe_body(variables={"name": {"a": ["x"], "b": ["y"]}, "job": {"a": ["p"], "b": ["q"]}}),
            400,
            "variables",
        ),
        (probe_body(variables={"name": {"only": ["x"]}, "job": "nurse"}), 400, "variables"),
        (probe_body(template="Hi {name}, a {role}."), 400, "variables"),
        (probe_body(samples=1000), 400, "samples"),
        (probe_body(model="no-such-model"), 404, "model"),
        (probe_body(template="Hi {name"), 400, None),
        ({}, 400, "suite"),
    ],
)
async def test_bad_probes_are_refused_before_anything_runs(
    upstream: respx.MockRouter, body: dict[str, Any], status: int, param: str | None
) -> None:
    route = upstream.post("/chat/completions").mock(return_value=httpx.Response(200, json=completion("x")))
    app = keys_app()
    async with running(app) as client:
        _, key = await create_key(client)
        r = await client.post("/v1/probes/bias", json=body, headers=bearer(key))
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["message"]
        if param is not None:
            assert error["param"] == param
        assert (await client.get("/v1/probes", headers=bearer(key))).json()["data"] == []
    assert not route.called


async def test_suites_are_listed_and_run_by_name(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").mock(side_effect=warmer_for_women)
    app = keys_app()
    async with running(app) as client:
        _, key = await create_key(client)
        suites = (await client.get("/v1/probes/bias/suites", headers=bearer(key))).json()["data"]
        names = {s["name"] for s in suites}
        assert {"gender-names-en", "gender-names-zh", "regions-zh", "ages-en"} <= names
        regions = next(s for s in suites if s["name"] == "regions-zh")
        assert len(regions["groups"]) == 3
        assert f"{{{regions['attribute']}}}" in regions["template"]
        r = await client.post(
            "/v1/probes/bias",
            json={"suite": "regions-zh", "samples": 2, "model": "gpt-4o-mini", "max_tokens": 20},
            headers=bearer(key),
        )
        assert r.status_code == 200, r.text
        probe = await finished(app, client, r.json()["id"], key)
    assert probe["status"] == "succeeded"
    assert probe["request"]["template"] == regions["template"]
    assert probe["progress"]["total"] == 6
    assert {e["versus"] for e in probe["report"]["measures"][0]["effects"]} == {"the others"}


async def test_a_running_probe_shows_progress_and_can_be_cancelled(upstream: respx.MockRouter) -> None:
    release = asyncio.Event()
    fourth = asyncio.Event()
    calls = 0

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls > 3:
            fourth.set()
            await release.wait()
        return httpx.Response(
            200, json=completion("Fine.", usage={"prompt_tokens": 5, "completion_tokens": 2})
        )

    upstream.post("/chat/completions").mock(side_effect=slow)
    app = keys_app(probe_concurrency=1, probe_max_active=1)
    async with running(app) as client:
        _, key = await create_key(client)
        r = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        probe_id = r.json()["id"]
        await fourth.wait()  # the fourth generation is waiting upstream
        probe = (await client.get(f"/v1/probes/{probe_id}", headers=bearer(key))).json()
        assert probe["status"] == "running"
        assert probe["progress"] == {"done": 3, "total": 16}
        # One probe at a time for this key.
        again = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        assert again.status_code == 429
        assert again.json()["error"]["code"] == "too_many_probes"

        r = await client.post(f"/v1/probes/{probe_id}/cancel", headers=bearer(key))
        assert r.status_code == 200
        assert r.json()["status"] == "cancelled"
        await app.state.genserve.probes.wait(probe_id)
        release.set()
        probe = (await client.get(f"/v1/probes/{probe_id}", headers=bearer(key))).json()
        assert probe["status"] == "cancelled"
        assert probe["report"] is None
        assert probe["progress"]["done"] == 3
        assert calls == 4  # nothing more was generated
        # Cancelling a finished probe changes nothing; someone else's is not found.
        assert (await client.post(f"/v1/probes/{probe_id}/cancel", headers=bearer(key))).json()[
            "status"
        ] == "cancelled"
        _, other = await create_key(client, name="other")
        assert (await client.post(f"/v1/probes/{probe_id}/cancel", headers=bearer(other))).status_code == 404


async def test_an_installation_without_the_probes_extra_answers_501_before_generating(
    upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container images leave the `probes` extra out unless asked: a probe is then refused at
    once, saying what to install, and nothing is generated or billed."""
    import importlib.util

    from app.services.apps.probes import service

    route = upstream.post("/chat/completions").mock(side_effect=warmer_for_women)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        service.importlib.util, "find_spec", lambda name, *a: None if name == "scipy" else real(name, *a)
    )
    app = keys_app()
    async with running(app) as client:
        _, key = await create_key(client, name="k")
        r = await client.post("/v1/probes/bias", json=probe_body(), headers=bearer(key))
        suites = await client.get("/v1/probes/bias/suites", headers=bearer(key))
    assert r.status_code == 501
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("not_implemented_error", "probes_not_installed")
    assert "scipy" in error["message"]
    assert "PROBES=true" in error["message"]
    assert suites.status_code == 200  # what a probe would run is still listed
    assert route.call_count == 0
