"""`/admin/*`: client keys (create, list, update, revoke), everyone's usage, feedback and tuning.
Admin token only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query

from app.api.admission import require_admin
from app.api.deps import AccessDep, FeedbackDep, GenerationDep, PresetsDep, StateDep
from app.api.render.keys import key_info, usage_report
from app.errors import InvalidRequest
from app.schemas.feedback import FeedbackSummary
from app.schemas.keys import KeyCreate, KeyCreated, KeyInfo, KeyList, KeyUpdate
from app.schemas.presets import TuningReport
from app.schemas.usage import IsoDate, UsageReport
from app.services.generation.caller import Limits
from app.storage.records import EVERY_OWNER

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


def _check_models(names: list[str] | None, service: GenerationDep) -> None:
    for i, name in enumerate(names or ()):
        if name not in service.model_table:
            raise InvalidRequest(
                f"Unknown model '{name}'; GET /v1/models lists the available ones.",
                param=f"allowed_models[{i}]",
                code="model_not_found",
            )


@router.post("/keys", status_code=201)
async def create_key(body: KeyCreate, access: AccessDep, service: GenerationDep) -> KeyCreated:
    """Create a key. The answer holds its secret: the only time it is ever shown."""
    _check_models(body.allowed_models, service)
    row, secret = await access.keys.create(
        name=body.name,
        limits=Limits(**body.limits.model_dump()),
        allowed_models=body.allowed_models,
        allowed_presets=body.allowed_presets,
        expires_at=body.expires_at,
    )
    return KeyCreated(**key_info(row, access.keys.now()).model_dump(), key=secret)


@router.get("/keys")
async def list_keys(access: AccessDep, include_revoked: bool = True) -> KeyList:
    """Every key, newest first; never their secrets."""
    return KeyList(
        data=[
            key_info(row, access.keys.now())
            for row in await access.keys.list(include_revoked=include_revoked)
        ]
    )


@router.get("/keys/{key_id}")
async def get_key(key_id: str, access: AccessDep) -> KeyInfo:
    return key_info(await access.keys.get(key_id), access.keys.now())


@router.patch("/keys/{key_id}")
async def update_key(key_id: str, body: KeyUpdate, access: AccessDep, service: GenerationDep) -> KeyInfo:
    """Change a key's name, limits, allowed models or presets, or expiry; applies at once."""
    _check_models(body.allowed_models, service)
    return key_info(await access.keys.update(key_id, body.columns()), access.keys.now())


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, access: AccessDep) -> KeyInfo:
    """Revoke a key: refused from its next request on, on every replica. Its usage is kept."""
    return key_info(await access.keys.revoke(key_id), access.keys.now())


@router.delete("/keys/{key_id}/data")
async def erase_key_data(key_id: str, access: AccessDep, state: StateDep) -> dict[str, object]:
    """Erase everything one key left behind (records, responses, conversations and their
    messages, feedback, probes, files, vector stores), by kind; its usage totals stay (billing,
    no text). An unknown key is a 404."""
    await access.keys.get(key_id)
    deleted = await state.erasure.erase_owner(key_id)
    return {"object": "erasure", "key_id": key_id, "deleted": deleted}


@router.delete("/users/{user}/data")
async def erase_end_user_data(
    state: StateDep,
    user: str = Path(min_length=1, max_length=256),
) -> dict[str, object]:
    """Erase what one end user left behind, across every key: generation records (with their
    feedback) and stored responses whose `user` or `safety_identifier` was `user`, by kind. Usage
    totals stay (per key and day, no text). Nothing found is a 200 with zero counts: genserve
    keeps only a keyed hash of end-user ids, so it cannot tell an unknown user from an erased one."""
    deleted = await state.erasure.erase_end_user(user)
    return {"object": "erasure", "user": user, "deleted": deleted}


@router.get("/usage")
async def all_usage(
    access: AccessDep,
    key_id: str | None = None,
    model: str | None = None,
    start: IsoDate | None = Query(default=None, description="First UTC day (inclusive)."),
    end: IsoDate | None = Query(default=None, description="Last UTC day (inclusive)."),
) -> UsageReport:
    """Usage of every key, per model and day, with estimated cost; filter by key, model, dates."""
    rows = await access.usage.query(key_id=key_id, model=model, start=start, end=end)
    return usage_report(rows, start, end)


@router.get("/feedback/summary", response_model=FeedbackSummary)
async def feedback_summary(feedback: FeedbackDep) -> dict[str, object]:
    """Every key's ratings, per preset and per tuning variant."""
    return await feedback.summary(EVERY_OWNER)


@router.get("/presets/{name}/tuning", response_model=TuningReport)
async def preset_tuning(name: str, presets: PresetsDep) -> dict[str, object]:
    """A preset's tuning from every key's generations and ratings."""
    return await presets.tuning.report(presets.get(name), owner=EVERY_OWNER)
