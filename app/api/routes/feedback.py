"""`/v1/feedback`: rate a generation (thumbs or stars), and read the ratings per preset and variant."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CtxDep, FeedbackDep
from app.schemas.feedback import FeedbackOut, FeedbackRequest, FeedbackSummary

router = APIRouter(tags=["feedback"])


@router.post("/v1/feedback", response_model=FeedbackOut)
async def rate(body: FeedbackRequest, ctx: CtxDep, feedback: FeedbackDep) -> dict[str, object]:
    """Rate a generation your key made, by its `id`. Rating it again replaces the earlier
    rating. Ratings of tuned generations move their variant's posterior at once."""
    return await feedback.rate(ctx, body.generation_id, body.rating, body.comment)


@router.get("/v1/feedback/summary", response_model=FeedbackSummary)
async def summary(ctx: CtxDep, feedback: FeedbackDep) -> dict[str, object]:
    """Count, mean normalized rating and time range of your key's ratings, per preset and per
    tuning variant."""
    return await feedback.summary(ctx.owner)
