"""Preset files: an operator's file adds and replaces presets; a broken one stops the start-up
with a message naming the preset and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import respx

from app.main import create_app
from app.services.apps.presets import PresetFileError, load_presets
from tests.conftest import openai_settings
from tests.preset_helpers import FakeUpstream, serve, system_prompt

OPERATOR_YAML = """
presets:
  release_notes:
    title: Release notes
    description: Release notes from a list of changes.
    system: You write release notes for {{ product }}.
    prompt: "Changes:\\n{{ changes }}"
    inputs:
      product: {type: string, required: true}
      changes: {type: text, required: true, max_length: 5000}
    sampling: {temperature: 0.4, max_tokens: 200}
  qa:
    description: Answers questions about our handbook only.
    system: "Answer from the employee handbook. {{ question }}"
    prompt: "{{ question }}"
    inputs:
      question: {type: text, required: true}
"""


async def test_an_operator_file_adds_and_replaces_presets(tmp_path: Path, upstream: respx.MockRouter) -> None:
    fake = FakeUpstream().install(upstream)
    path = tmp_path / "presets.yaml"
    path.write_text(OPERATOR_YAML)
    async with serve(create_app(openai_settings(presets_file=str(path)))) as client:
        names = [p["name"] for p in (await client.get("/v1/presets")).json()["data"]]
        assert names == ["customer_service", "copywriting", "qa", "summarize", "release_notes"]
        qa = (await client.get("/v1/presets/qa")).json()
        assert qa["description"] == "Answers questions about our handbook only."
        assert "context" not in qa["input_schema"]["properties"]  # replaced whole, not merged
        assert qa["tuning"] is None
        r = await client.post(
            "/v1/presets/release_notes/generate",
            json={"inputs": {"product": "genserve 2.0", "changes": "- faster streams"}},
        )
        assert r.status_code == 200, r.text
        assert r.json()["sampling"]["temperature"] == 0.4
        assert "genserve 2.0" in system_prompt(fake.bodies[-1])


async def test_an_operator_file_can_remove_a_shipped_preset(tmp_path: Path) -> None:
    path = tmp_path / "presets.yaml"
    path.write_text("presets:\n  copywriting: null\n")
    async with serve(create_app(openai_settings(presets_file=str(path)))) as client:
        names = [p["name"] for p in (await client.get("/v1/presets")).json()["data"]]
        assert names == ["customer_service", "qa", "summarize"]
        assert (await client.get("/v1/presets/copywriting")).status_code == 404
    path.write_text("presets:\n  poetry: null\n")
    with pytest.raises(PresetFileError, match="preset 'poetry': there is no such preset to remove"):
        load_presets(path)


def test_a_toml_operator_file(tmp_path: Path) -> None:
    path = tmp_path / "presets.toml"
    path.write_text(
        """
[presets]
summarize = false

[presets.haiku]
system = "You write haiku about {{ subject }}."
prompt = "A haiku, please."

[presets.haiku.inputs.subject]
type = "string"
required = true

[presets.haiku.tuning.variants]
calm = { temperature = 0.5 }
wild = { temperature = 1.3, top_p = 0.9 }
"""
    )
    presets = load_presets(path)
    assert "summarize" not in presets
    haiku = presets["haiku"]
    assert haiku.render(haiku.validate_inputs({"subject": "rain"})).system == "You write haiku about rain."
    assert haiku.tuned_fields == {"temperature", "top_p"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "presets:\n  ads:\n    system: x\n    prompt: y\n    inputs:\n      topic: {type: colour}\n",
            "preset 'ads', field 'inputs.topic.type'",
        ),
        (
            "presets:\n  ads:\n    system: 'Write about {{ topic }}'\n    prompt: y\n",
            "preset 'ads', field 'system': the template uses topic, which is not a declared input",
        ),
        (
            "presets:\n  ads:\n    system: '{% if x %}'\n    prompt: y\n    inputs: {x: {}}\n",
            "preset 'ads', field 'system': template error on line 1",
        ),
        (
            "presets:\n  ads:\n    system: x\n    prompt: y\n    sampling: {temperature: 5}\n",
            "preset 'ads', field 'sampling.temperature'",
        ),
        (
            "presets:\n  ads:\n    system: x\n    prompt: y\n    inputs:\n"
            "      n: {type: integer, minimum: 10, default: 3}\n",
            "preset 'ads', field 'inputs.n': must be at least 10",
        ),
        (
            "presets:\n  ads:\n    system: x\n    prompt: y\n"
            "    tuning:\n      variants: {only: {temperature: 1}}\n",
            "preset 'ads', field 'tuning.variants'",
        ),
        (
            "presets:\n  ads:\n    system: x\n    prompt: y\n    temprature: 1\n",
            "preset 'ads', field 'temprature': Extra inputs are not permitted",
        ),
        ("presets:\n  ads:\n    prompt: y\n", "preset 'ads', field 'system': Field required"),
        ("presets:\n  Bad Name:\n    system: x\n    prompt: y\n", "preset 'Bad Name'"),
        ("presets: [1, 2]\n", "expected a top-level 'presets' table"),
        ("presets:\n  ads: {system: x\n", "not valid YAML"),
    ],
)
async def test_a_broken_operator_file_stops_the_start_up_naming_preset_and_field(
    text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    app = create_app(openai_settings(presets_file=str(path)))
    with pytest.raises(PresetFileError) as caught:
        async with app.router.lifespan_context(app):
            pass
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert expected in message, message


async def test_a_missing_operator_file_stops_the_start_up(tmp_path: Path) -> None:
    app = create_app(openai_settings(presets_file=str(tmp_path / "nope.yaml")))
    with pytest.raises(PresetFileError, match=r"nope\.yaml: cannot read the preset file"):
        async with app.router.lifespan_context(app):
            pass
