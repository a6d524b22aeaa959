"""Response bodies of `/v1/probes`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.services.apps.probes.bias import Suite
from app.services.apps.probes.service import ProbeView


def _unix(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def probe_body(probe: ProbeView) -> dict[str, Any]:
    return {
        "id": probe.id,
        "object": "probe",
        "kind": probe.kind,
        "status": probe.status,
        "created_at": _unix(probe.created_at),
        "finished_at": _unix(probe.finished_at),
        "progress": {"done": probe.done, "total": probe.total},
        "request": probe.request,
        "report": probe.report,
        "error": probe.error,
    }


def probe_list(probes: list[ProbeView]) -> dict[str, Any]:
    return {"object": "list", "data": [probe_body(p) for p in probes]}


def suite_list(suites: list[Suite]) -> dict[str, Any]:
    return {"object": "list", "data": [s.describe() for s in suites]}
