"""`/v1/probes`: bias probes with counterfactual pairs, run as jobs with a stored report."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response

from app.api.deps import CtxDep, ProbesDep
from app.api.http import json_response
from app.api.render.probes import probe_body, probe_list, suite_list
from app.schemas.probes import BiasProbeRequest, BiasSuiteList, Probe, ProbeList

router = APIRouter(tags=["probes"])

ProbeId = Annotated[str, Path(max_length=64, description="The probe's id.")]


@router.get("/v1/probes/bias/suites", response_model=BiasSuiteList)
async def list_suites(probes: ProbesDep, _: CtxDep) -> Response:
    """The built-in bias suites: a template, fixed variables, and the groups to compare."""
    return json_response(suite_list(probes.suites()))


@router.post("/v1/probes/bias", response_model=Probe)
async def start_bias_probe(body: BiasProbeRequest, probes: ProbesDep, ctx: CtxDep) -> Response:
    """Start a bias probe; it runs in the background. Follow it with `GET /v1/probes/{id}`."""
    return json_response(probe_body(await probes.start_bias(ctx, body)))


@router.get("/v1/probes", response_model=ProbeList)
async def list_probes(probes: ProbesDep, ctx: CtxDep) -> Response:
    """The caller's 20 newest probes."""
    return json_response(probe_list(await probes.list(ctx)))


@router.get("/v1/probes/{probe_id}", response_model=Probe)
async def get_probe(probe_id: ProbeId, probes: ProbesDep, ctx: CtxDep) -> Response:
    """A probe's status and progress, and its report once it succeeded."""
    return json_response(probe_body(await probes.get(ctx, probe_id)))


@router.post("/v1/probes/{probe_id}/cancel", response_model=Probe)
async def cancel_probe(probe_id: ProbeId, probes: ProbesDep, ctx: CtxDep) -> Response:
    """Stop a queued or running probe (what it generated so far stays billed)."""
    return json_response(probe_body(await probes.cancel(ctx, probe_id)))
