"""The embedded model's grammars on the real model: whatever the model would rather write, what
the grammar lets out is JSON that parses and a call that validates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import numpy as np
import numpy.typing as npt
import pytest

from app.providers import local_tools
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

NOTE = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "code": {"type": "string", "pattern": "^.{4,12}$"},
    },
    "required": ["title", "code"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm() -> Iterator[Any]:
    from llama_cpp import Llama

    model = Llama(model_path=make_settings().local_gguf_path, n_ctx=1024, verbose=False)
    yield model
    model.close()


def pushing_towards(llm: Any, wanted: bytes) -> Any:
    """A logits processor that makes every token holding one of `wanted`'s bytes by far the
    likeliest: where the grammar allows one, the model writes it."""
    tokens = [t for t in range(llm.n_vocab()) if set(llm.detokenize([t])) & set(wanted)]

    def push(_: npt.NDArray[np.intc], scores: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        scores[tokens] += 30.0
        return scores

    return push


def answer(llm: Any, grammar: str, push: Any) -> str:
    from llama_cpp.llama_grammar import LlamaGrammar

    llm.reset()
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": "Save a note about eggs, milk and bread, one per line."}],
        grammar=LlamaGrammar.from_string(grammar, verbose=False),
        logits_processor=[push],
        max_tokens=60,
        temperature=0,
    )
    text: str = out["choices"][0]["message"]["content"]
    return text


@pytest.mark.parametrize(
    "wanted", [b"\n", b"\t\r\x01", b'"\\'], ids=["line break", "other controls", "quote and backslash"]
)
def test_strings_stay_json_strings_whatever_the_model_would_write(llm: Any, wanted: bytes) -> None:
    text = answer(llm, local_tools.json_grammar(NOTE), pushing_towards(llm, wanted))
    jsonschema.validate(json.loads(text), NOTE)


def test_a_forced_call_is_a_call_of_the_tool_however_hard_it_is_pushed(llm: Any) -> None:
    from app.providers.base import GenerationRequest, Message, Sampling, ToolSpec

    request = GenerationRequest(
        model="local",
        messages=(Message(role="user", content="Save a note."),),
        sampling=Sampling(temperature=0, top_p=1, max_tokens=60),
        tools=(ToolSpec(name="save_note", description=None, parameters=NOTE),),
        tool_choice="required",
    )
    grammar = local_tools.tool_grammar(request)
    assert grammar is not None
    call = local_tools.parse_call(answer(llm, grammar, pushing_towards(llm, b'\n"}')), request.tools)
    assert call is not None
    jsonschema.validate(json.loads(call.arguments), NOTE)
