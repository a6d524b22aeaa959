"""Erasure of one key's data (issue 22 §3): an admin DELETE removes what the key left, by kind;
another key's data and the usage totals stay; an unknown key is a 404."""

from __future__ import annotations

from sqlalchemy import func, select

from app.storage.responses import ResponseRow
from tests.access_helpers import ADMIN, create_key, keys_app, running
from tests.services.apps.test_retention import _count, _seed


async def test_erasing_a_key_removes_its_rows_and_leaves_the_others() -> None:
    app = keys_app()
    async with running(app) as http:
        alice, _ = await create_key(http, name="alice")
        bob, _ = await create_key(http, name="bob")
        db = app.state.genserve.db
        now = app.state.genserve.clocks.now()
        await _seed(db, now, old=0, fresh=3, owner=alice, tag="a")
        await _seed(db, now, old=0, fresh=2, owner=bob, tag="b")
        refused = await http.delete(f"/admin/keys/{alice}/data")
        assert refused.status_code in (401, 403)
        r = await http.delete(f"/admin/keys/{alice}/data", headers=ADMIN)
        assert r.status_code == 200, r.text
        deleted = r.json()["deleted"]
        assert deleted["records"] == deleted["responses"] == deleted["conversations"] == 3
        async with db.session() as session:
            left = await session.scalar(
                select(func.count()).select_from(ResponseRow).where(ResponseRow.owner == alice)
            )
        assert left == 0
        assert await _count(db, ResponseRow) == 2  # bob's stay
        again = await http.delete(f"/admin/keys/{alice}/data", headers=ADMIN)
        assert again.json()["deleted"]["responses"] == 0
        unknown = await http.delete("/admin/keys/key_nope/data", headers=ADMIN)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"]
