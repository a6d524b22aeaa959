"""The OpenAPI document: FastAPI's, plus what it cannot infer — the events of each stream.

A generating route answers JSON, or server-sent events with `"stream": true`. Its 200 response
lists both media types; the `text/event-stream` schema describes one event (OpenAPI 3.1 reads a
stream's schema per event): its `data` is `[DONE]`, or JSON that is one of the route's event
models or an error body.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from app.schemas.chat import ChatCompletionChunk
from app.schemas.completions import TextCompletionChunk
from app.schemas.errors import ErrorResponse
from app.schemas.generate import GenerateChunk
from app.schemas.responses import ResponseStreamEvent

_COMPONENTS = "#/components/schemas/{model}"
#: Event models that no JSON response mentions, so FastAPI would leave them out of the document.
_EVENT_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionChunk,
    GenerateChunk,
    TextCompletionChunk,
    ResponseStreamEvent,
    ErrorResponse,
)


def stream_responses(*events: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route that streams `events` (each frame one of them, as JSON)."""
    models: tuple[type[BaseModel], ...] = (*events, ErrorResponse)
    payloads = [{"$ref": _COMPONENTS.format(model=m.__name__)} for m in models]
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "anyOf": [
                    {"const": "[DONE]"},
                    {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {"anyOf": payloads},
                    },
                ]
            }
        },
    }
    return {
        200: {
            "description": "JSON, or with `stream: true` server-sent events ending with `data: [DONE]`",
            "content": {"text/event-stream": {"schema": event}},
        }
    }


def install_openapi(app: FastAPI) -> None:
    """Serve FastAPI's document with the event models added to its components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            _, extra = models_json_schema(
                [(model, "serialization") for model in _EVENT_MODELS], ref_template=_COMPONENTS
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in extra.get("$defs", {}).items():
                schemas.setdefault(name, schema)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
