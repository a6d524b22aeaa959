"""Feedback: rate any generation by id (thumbs or stars), replace a rating, read the summary —
on SQLite and PostgreSQL, and across a restart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from app.main import create_app
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve


async def generate(client: httpx.AsyncClient, preset: str | None = None, **fields: Any) -> dict[str, Any]:
    if preset is None:
        r = await client.post("/v1/generate", json={"prompt": "Write a line.", **fields})
    else:
        r = await client.post(f"/v1/presets/{preset}/generate", json=fields)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_unknown_generation_is_404(openai_client: httpx.AsyncClient) -> None:
    r = await openai_client.post("/v1/feedback", json={"generation_id": "gen-nope", "rating": "up"})
    assert r.status_code == 404
    assert r.json()["error"]["param"] == "generation_id"
    assert r.json()["error"]["code"] == "generation_not_found"


@pytest.mark.parametrize("rating", [0, 6, "meh", True, 2.5, "5", None])
async def test_ratings_are_thumbs_or_one_to_five(
    rating: object, openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    FakeUpstream().install(upstream)
    answer = await generate(openai_client)
    r = await openai_client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": rating})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith("rating")


async def test_a_whole_number_of_stars_may_be_written_as_a_float(
    openai_client: httpx.AsyncClient, upstream: respx.MockRouter
) -> None:
    """Found by fuzzing: JSON does not tell 5 from 5.0 (the OpenAPI document calls both an integer)."""
    FakeUpstream().install(upstream)
    answer = await generate(openai_client)
    r = await openai_client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": 5.0})
    assert r.status_code == 200, r.text
    assert r.json()["rating"] == 5


async def test_a_second_rating_replaces_the_first(database_url: str, upstream: respx.MockRouter) -> None:
    FakeUpstream().install(upstream)
    async with serve(create_app(openai_settings(database_url=database_url))) as client:
        answer = await generate(client)
        r = await client.post(
            "/v1/feedback", json={"generation_id": answer["id"], "rating": "up", "comment": "nice"}
        )
        assert r.status_code == 200, r.text
        assert (r.json()["score"], r.json()["replaced"], r.json()["comment"]) == (1.0, False, "nice")
        r = await client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": 2})
        assert r.status_code == 200, r.text
        assert (r.json()["score"], r.json()["replaced"]) == (0.25, True)
        summary = (await client.get("/v1/feedback/summary")).json()
    assert summary["presets"] == [
        {
            "preset": None,
            "count": 1,
            "mean_rating": 0.25,
            "first_rated_at": summary["presets"][0]["first_rated_at"],
            "last_rated_at": summary["presets"][0]["last_rated_at"],
            "variants": [
                {
                    "variant": None,
                    "count": 1,
                    "mean_rating": 0.25,
                    "first_rated_at": summary["presets"][0]["first_rated_at"],
                    "last_rated_at": summary["presets"][0]["last_rated_at"],
                }
            ],
        }
    ]


async def test_summary_per_preset_and_variant_with_normalized_ratings(
    database_url: str, upstream: respx.MockRouter
) -> None:
    FakeUpstream().install(upstream)
    async with serve(create_app(openai_settings(database_url=database_url))) as client:
        ratings: list[tuple[dict[str, Any], object]] = []
        for rating in ("up", "down", 5, 3):
            ratings.append(
                (await generate(client, "qa", inputs={"question": "Why?"}, temperature=0.1), rating)
            )
        ratings.append((await generate(client, "qa", inputs={"question": "Why?"}), "up"))
        ratings.append((await generate(client, "summarize", inputs={"text": "Short text."}), 1))
        await generate(client, "copywriting", inputs={"topic": "tea"})  # not rated: not counted
        for answer, rating in ratings:
            r = await client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": rating})
            assert r.status_code == 200, r.text
        summary = (await client.get("/v1/feedback/summary")).json()
    assert "(r - 1) / 4" in summary["scale"]
    by_preset = {p["preset"]: p for p in summary["presets"]}
    assert set(by_preset) == {"qa", "summarize"}
    qa = by_preset["qa"]
    assert qa["count"] == 5
    assert qa["mean_rating"] == pytest.approx((1 + 0 + 1 + 0.5 + 1) / 5)
    assert qa["first_rated_at"] <= qa["last_rated_at"]
    variants = {v["variant"]: v for v in qa["variants"]}
    tuned_variant = ratings[4][0]["sampling"]["variant"]
    assert variants[None]["count"] == 4  # explicit temperature: not tuned
    assert variants[None]["mean_rating"] == pytest.approx(2.5 / 4)
    assert variants[tuned_variant] | {"first_rated_at": 0, "last_rated_at": 0} == {
        "variant": tuned_variant,
        "count": 1,
        "mean_rating": 1.0,
        "first_rated_at": 0,
        "last_rated_at": 0,
    }
    assert by_preset["summarize"]["mean_rating"] == 0.0


async def test_feedback_survives_a_restart(database_url: str, upstream: respx.MockRouter) -> None:
    FakeUpstream().install(upstream)
    async with serve(create_app(openai_settings(database_url=database_url))) as client:
        answer = await generate(client, "qa", inputs={"question": "Why?"})
        r = await client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": 4})
        assert r.status_code == 200
    async with serve(create_app(openai_settings(database_url=database_url))) as client:
        summary = (await client.get("/v1/feedback/summary")).json()
        assert summary["presets"][0]["count"] == 1
        assert summary["presets"][0]["mean_rating"] == 0.75
        # ...and the generation can still be rated (replacing the earlier rating).
        r = await client.post("/v1/feedback", json={"generation_id": answer["id"], "rating": "down"})
        assert r.json()["replaced"] is True
