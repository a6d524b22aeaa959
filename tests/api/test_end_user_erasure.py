"""Erasure of one end user's data (issue 22 §3): the `user` and `safety_identifier` that requests
carry key their records and stored responses (by HMAC, never the raw value); an admin DELETE
removes exactly those, across keys, and returns counts by kind; usage totals stay."""

from __future__ import annotations

import httpx
import openai
import respx
from sqlalchemy import text

from app.storage.base import Base
from app.storage.responses import ResponseRow
from app.storage.tables import GenerationRecord, UsageDaily
from tests.access_helpers import ADMIN, completion, create_key, keys_app, running
from tests.services.apps.test_retention import _count

ALICE = "alice@example.com"


async def _stored_text(app: object) -> str:
    db = app.state.genserve.db  # type: ignore[attr-defined]
    rows: list[str] = []
    async with db.session() as session:
        for table in Base.metadata.sorted_tables:
            rows.extend(repr(r) for r in (await session.execute(text(f"SELECT * FROM {table.name}"))).all())
    return "\n".join(rows)


async def test_erasing_an_end_user_removes_their_records_and_responses_only(
    upstream: respx.MockRouter, database_url: str
) -> None:
    upstream.post("/chat/completions").respond(json=completion())
    app = keys_app(database_url=database_url, usage_flush_seconds=0)
    async with running(app) as admin:
        _, one = await create_key(admin, name="one")
        _, two = await create_key(admin, name="two")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://genserve.test/v1") as http:
            first = openai.AsyncOpenAI(api_key=one, base_url="http://genserve.test/v1", http_client=http)
            second = openai.AsyncOpenAI(api_key=two, base_url="http://genserve.test/v1", http_client=http)
            hi = [{"role": "user", "content": "Hello"}]
            # Alice through two keys, once by `user`, once by `safety_identifier`; bob; nobody.
            await first.chat.completions.create(model="gpt-4o-mini", messages=hi, user=ALICE)  # type: ignore[arg-type]
            await second.chat.completions.create(
                model="gpt-4o-mini",
                messages=hi,  # type: ignore[arg-type]
                safety_identifier=ALICE,
            )
            await first.responses.create(model="gpt-4o-mini", input="Hello", user=ALICE, store=True)
            await first.chat.completions.create(model="gpt-4o-mini", messages=hi, user="bob")  # type: ignore[arg-type]
            await first.responses.create(model="gpt-4o-mini", input="Hello", user="bob", store=True)
            await first.chat.completions.create(model="gpt-4o-mini", messages=hi)  # type: ignore[arg-type]
        state = app.state.genserve
        await state.records.flush()
        db = state.db
        assert await _count(db, GenerationRecord) == 6  # a response leaves a record too
        assert await _count(db, ResponseRow) == 2
        # The identifier is at rest only as a keyed hash (the stored response's params aside:
        # they echo `user`, and go with the response).
        async with db.session() as session:
            records = (await session.execute(text("SELECT * FROM generation_records"))).all()
        assert not any(ALICE in repr(r) for r in records)
        usage_before = await _count(db, UsageDaily)

        refused = await admin.delete(f"/admin/users/{ALICE}/data")
        assert refused.status_code in (401, 403)
        r = await admin.delete(f"/admin/users/{ALICE}/data", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["deleted"] == {"records": 3, "responses": 1}
        assert ALICE not in await _stored_text(app)
        assert await _count(db, GenerationRecord) == 3  # bob's two and nobody's stay
        assert await _count(db, ResponseRow) == 1
        assert await _count(db, UsageDaily) == usage_before  # billing totals stay
        again = await admin.delete(f"/admin/users/{ALICE}/data", headers=ADMIN)
        assert again.json()["deleted"] == {"records": 0, "responses": 0}
        too_long = await admin.delete(f"/admin/users/{'x' * 300}/data", headers=ADMIN)
        assert too_long.status_code == 400 or too_long.status_code == 422
        assert too_long.json()["error"]["message"]
