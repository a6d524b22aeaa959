"""Reading this service's server-sent events in tests."""

from __future__ import annotations

import json
from typing import Any


def events(body: str) -> list[Any]:
    """Every `data:` frame of an SSE body, decoded; `[DONE]` stays the string "[DONE]"."""
    out: list[Any] = []
    for frame in body.split("\n\n"):
        for line in frame.splitlines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                out.append(data if data == "[DONE]" else json.loads(data))
    return out
