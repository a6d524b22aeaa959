"""The official SDK's clients for API tests that run their own live `server` fixture (a module
defines `server`; these talk to it), and a respx router that lets loopback traffic through."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import openai
import pytest
import respx

from tests.conftest import LiveServer


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture
async def async_client(server: LiveServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60
    ) as c:
        yield c


@pytest.fixture
def remote() -> Iterator[respx.MockRouter]:
    """The mocked upstream, with requests to the live server on loopback passed through."""
    with respx.mock(assert_all_called=False) as router:
        router.route(host="127.0.0.1").pass_through()
        yield router
