"""A long conversation with the embedded model stays inside its context window."""

from __future__ import annotations

import httpx
import pytest

from app.main import create_app
from app.services.generation.pipeline import Job, JobHook
from tests.conftest import make_settings

WINDOW = 256  # the smallest window the embedded model takes: a few exchanges fill it
SYSTEM = "You are the support agent of Acme Anvils. Answer briefly."


class Prompts(JobHook):
    """Remembers what each job sent to the model (the service's public extension point)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    async def on_start(self, job: Job) -> None:
        self.jobs.append(job)


@pytest.mark.slow
async def test_thirty_turns_on_the_embedded_model_stay_in_its_window(database_url: str) -> None:
    app = create_app(make_settings(provider="local", local_n_ctx=WINDOW, database_url=database_url))
    async with app.router.lifespan_context(app):
        prompts = Prompts()
        app.state.genserve.generation.hooks.append(prompts)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=120) as client:
            r = await client.post(
                "/v1/conversations", json={"system": SYSTEM, "sampling": {"max_tokens": 8, "temperature": 0}}
            )
            assert r.status_code == 200, r.text
            conversation = r.json()["id"]
            dropped = []
            # The whole 30 turns on SQLite, the embedded model's own database; on PostgreSQL
            # enough turns to fill the window and drop some (each turn costs a full prompt).
            total = 30 if database_url.startswith("sqlite") else 12
            for turn in range(1, total + 1):
                content = f"Turn {turn}: where is my anvil order {1000 + turn}?"
                r = await client.post(f"/v1/conversations/{conversation}/messages", json={"content": content})
                assert r.status_code == 200, r.text
                reply = r.json()
                assert reply["provider"] == "local"
                assert reply["turn"] == 2 * turn
                # The model's own count of the prompt, plus the reply, fits its window.
                assert reply["usage"]["prompt_tokens"] + 8 <= WINDOW
                assert reply["usage"]["completion_tokens"] <= 8
                sent = [(m.role, m.content) for m in prompts.jobs[-1].request.messages]
                assert sent[0] == ("system", SYSTEM)
                assert sent[-1] == ("user", content)
                if turn > 1:
                    # The exchange just before this one is always in the context.
                    assert sent[-3][1].startswith(f"Turn {turn - 1}:")
                meta = reply["metadata"]
                assert meta["turns_in_context"] == len(sent) - 2
                assert meta["turns_dropped"] + meta["turns_in_context"] == 2 * (turn - 1)
                dropped.append(meta["turns_dropped"])
            page = (await client.get(f"/v1/conversations/{conversation}", params={"limit": 100})).json()
    assert page["message_count"] == 2 * total
    assert len(page["messages"]) == 2 * total
    assert dropped[0] == 0
    assert dropped[-1] > 0
    # Once the window is full, older turns keep falling out as new ones come in.
    assert dropped == sorted(dropped)
