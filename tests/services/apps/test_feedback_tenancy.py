"""Feedback belongs to the key that made the generation: another key can neither rate it nor
see it in its summaries or tuning reports; the admin sees everyone's."""

from __future__ import annotations

import respx

from tests.access_helpers import ADMIN, bearer, create_key, keys_app, running
from tests.preset_helpers import FakeUpstream


async def test_feedback_and_its_reports_stay_with_the_generating_key(
    database_url: str, upstream: respx.MockRouter
) -> None:
    FakeUpstream("A line.").install(upstream)
    async with running(keys_app(database_url=database_url)) as client:
        _, alice = await create_key(client, name="alice")
        _, mallory = await create_key(client, name="mallory")
        r = await client.post(
            "/v1/presets/copywriting/generate",
            json={"inputs": {"kind": "ad", "topic": "green tea", "audience": "students"}},
            headers=bearer(alice),
        )
        assert r.status_code == 200, r.text
        generation = r.json()["id"]
        # Another key cannot rate it, nor overwrite the owner's rating; it learns nothing of it.
        r = await client.post(
            "/v1/feedback", json={"generation_id": generation, "rating": 1}, headers=bearer(mallory)
        )
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "generation_not_found"
        r = await client.post(
            "/v1/feedback", json={"generation_id": generation, "rating": 5}, headers=bearer(alice)
        )
        assert r.status_code == 200, r.text
        r = await client.post(
            "/v1/feedback", json={"generation_id": generation, "rating": 1}, headers=bearer(mallory)
        )
        assert r.status_code == 404
        # Summaries and tuning reports: each key its own data.
        own = (await client.get("/v1/feedback/summary", headers=bearer(alice))).json()
        other = (await client.get("/v1/feedback/summary", headers=bearer(mallory))).json()
        assert [p["count"] for p in own["presets"]] == [1]
        assert own["presets"][0]["mean_rating"] == 1.0
        assert other["presets"] == []
        tuning_own = (await client.get("/v1/presets/copywriting/tuning", headers=bearer(alice))).json()
        tuning_other = (await client.get("/v1/presets/copywriting/tuning", headers=bearer(mallory))).json()
        assert tuning_own["chosen_total"] == 1
        assert tuning_other["chosen_total"] == 0
        assert sum(v["ratings"] for v in tuning_other["variants"]) == 0
        # The admin sees everyone's.
        r = await client.get("/admin/feedback/summary", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert [p["count"] for p in r.json()["presets"]] == [1]
        r = await client.get("/admin/presets/copywriting/tuning", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["chosen_total"] == 1
