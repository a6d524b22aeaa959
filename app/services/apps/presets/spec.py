"""What a preset is: its input fields, prompt templates, default sampling and tuning variants.

A preset file declares these; `Preset` checks its inputs, renders its prompts and describes its
inputs as a JSON schema (from which the playground draws a form).

Templates are Jinja (sandboxed): `{{ topic }}` inserts an input, `{% if context %}...{% endif %}`
keeps a passage only when an optional input is given. Besides the inputs, templates see `stage`
(`single`, or for a text summarized in stages `map` then `final`), `part` and `parts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.errors import InvalidRequest

InputType = Literal["string", "text", "integer", "number", "boolean"]
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
#: Variables every template may use besides the preset's inputs.
TEMPLATE_VARIABLES = frozenset({"stage", "part", "parts"})

_ENV = SandboxedEnvironment(
    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False
)


class InputSpec(BaseModel):
    """One input field of a preset."""

    model_config = ConfigDict(extra="forbid")

    type: InputType = "string"
    """`text` is a string shown as a multi-line box."""
    title: str | None = None
    description: str | None = None
    required: bool = False
    default: str | int | float | bool | None = None
    """Used when the field is not given (only for optional fields)."""
    enum: list[str | int | float] | None = Field(default=None, min_length=1)
    """The only values accepted."""
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=1)
    minimum: float | None = None
    maximum: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        textual = self.type in ("string", "text")
        numeric = self.type in ("integer", "number")
        if not textual and (self.min_length is not None or self.max_length is not None):
            raise ValueError(f"min_length/max_length apply to string and text inputs, not {self.type}")
        if not numeric and (self.minimum is not None or self.maximum is not None):
            raise ValueError(f"minimum/maximum apply to integer and number inputs, not {self.type}")
        if self.enum is not None and self.type in ("boolean", "text"):
            raise ValueError(f"enum does not apply to {self.type} inputs")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError("min_length is larger than max_length")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError("minimum is larger than maximum")
        if self.enum is not None:
            for value in self.enum:
                _check_value(self, value)
        if self.default is not None:
            if self.required:
                raise ValueError("a required input cannot have a default")
            _check_value(self, self.default)
        return self


class SamplingSpec(BaseModel):
    """Sampling settings a preset (or one of its tuning variants) sets."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: list[str] | None = Field(default=None, max_length=4)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)

    def values(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class TuningSpec(BaseModel):
    """Candidate sampling variants; a request that sets none of the fields they vary gets one
    picked by Thompson sampling over the feedback received so far."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    variants: dict[str, SamplingSpec] = Field(min_length=2)

    @field_validator("variants")
    @classmethod
    def _named(cls, value: dict[str, SamplingSpec]) -> dict[str, SamplingSpec]:
        for name, spec in value.items():
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"variant name {name!r} must match {NAME_PATTERN}")
            if not spec.values():
                raise ValueError(f"variant {name!r} sets no sampling field")
        return value


class SummarizeSpec(BaseModel):
    """Map-reduce for inputs longer than the model's context window."""

    model_config = ConfigDict(extra="forbid")

    input: str
    """The input that may be longer than the context: split, summarized part by part, combined."""


class PresetSpec(BaseModel):
    """A preset as written in a preset file."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = None
    description: str = ""
    multi_turn: bool = False
    """Meant for conversations: the system prompt frames every turn."""
    system: str = Field(min_length=1)
    """Template of the system prompt."""
    prompt: str = Field(min_length=1)
    """Template of the user message for `POST /v1/presets/{name}/generate`."""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    tuning: TuningSpec | None = None
    summarize: SummarizeSpec | None = None
    privacy: Literal["off", "redact", "block"] | None = None
    """Personal-data mode for this preset's generations; the strictest of it, the request's and
    the service default applies."""

    @field_validator("inputs")
    @classmethod
    def _input_names(cls, value: dict[str, InputSpec]) -> dict[str, InputSpec]:
        for name in value:
            if not re.match(NAME_PATTERN, name) or name in TEMPLATE_VARIABLES:
                raise ValueError(
                    f"input name {name!r} must match {NAME_PATTERN} and not be one of "
                    f"{sorted(TEMPLATE_VARIABLES)}"
                )
        return value

    @model_validator(mode="after")
    def _summarized_input(self) -> PresetSpec:
        if self.summarize is not None:
            spec = self.inputs.get(self.summarize.input)
            if spec is None or spec.type not in ("string", "text"):
                raise ValueError(f"summarize.input {self.summarize.input!r} is not a string or text input")
        return self


class PresetError(ValueError):
    """A preset definition that cannot work; `field` is its dotted path inside the preset."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Rendered:
    system: str
    prompt: str


class Preset:
    """A checked preset: validates inputs, renders prompts, describes its inputs."""

    def __init__(self, name: str, spec: PresetSpec, source: str) -> None:
        self.name = name
        self.spec = spec
        self.source = source
        """The file the preset came from."""
        self._system, self.system_inputs = self._compile("system", spec.system)
        """The inputs the system prompt uses: all a conversation needs (it sends its own turns)."""
        self._prompt, _ = self._compile("prompt", spec.prompt)

    def _compile(self, field: str, source: str) -> tuple[Any, frozenset[str]]:
        try:
            parsed = _ENV.parse(source)
        except TemplateSyntaxError as exc:
            raise PresetError(field, f"template error on line {exc.lineno}: {exc.message}") from exc
        used = meta.find_undeclared_variables(parsed)
        unknown = used - set(self.spec.inputs) - TEMPLATE_VARIABLES
        if unknown:
            raise PresetError(
                field, f"the template uses {', '.join(sorted(unknown))}, which is not a declared input"
            )
        return _ENV.from_string(source), frozenset(used & set(self.spec.inputs))

    # -- description -------------------------------------------------------------------------

    @property
    def title(self) -> str:
        return self.spec.title or self.name.replace("_", " ").capitalize()

    @property
    def defaults(self) -> dict[str, Any]:
        return self.spec.sampling.values()

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Tuning variants (name → sampling), empty when tuning is off."""
        tuning = self.spec.tuning
        if tuning is None or not tuning.enabled:
            return {}
        return {name: spec.values() for name, spec in tuning.variants.items()}

    @cached_property
    def tuned_fields(self) -> frozenset[str]:
        """The sampling fields the variants vary: a request setting any of them is not tuned."""
        return frozenset(field for values in self.variants.values() for field in values)

    def input_schema(self) -> dict[str, Any]:
        """The inputs as a JSON schema (draft 2020-12) of an object."""
        properties: dict[str, Any] = {}
        for name, spec in self.spec.inputs.items():
            prop: dict[str, Any] = {
                "type": "string" if spec.type == "text" else spec.type,
                "title": spec.title or name.replace("_", " ").capitalize(),
            }
            if spec.type == "text":
                prop["format"] = "multiline"
            if spec.description:
                prop["description"] = spec.description
            if spec.enum is not None:
                prop["enum"] = list(spec.enum)
            if spec.default is not None:
                prop["default"] = spec.default
            # An empty string counts as missing, so a required text needs at least one character.
            min_length = max(1, spec.min_length or 0) if spec.required else spec.min_length
            bounds = {
                "minLength": min_length or None,
                "maxLength": spec.max_length,
                "minimum": spec.minimum,
                "maximum": spec.maximum,
            }
            prop.update({key: _plain(value) for key, value in bounds.items() if value is not None})
            properties[name] = prop
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.title,
            "type": "object",
            "properties": properties,
            "required": [name for name, spec in self.spec.inputs.items() if spec.required],
            "additionalProperties": False,
        }

    # -- use ---------------------------------------------------------------------------------

    def validate_inputs(
        self,
        inputs: dict[str, Any],
        *,
        param_prefix: str = "inputs",
        only: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Every declared input with its value (defaults applied, None when absent), or
        `InvalidRequest` whose `param` names the field (`inputs.topic`). With `only`, inputs
        outside it are not required (a conversation renders just the system prompt)."""
        for name in inputs:
            if name not in self.spec.inputs:
                known = ", ".join(self.spec.inputs) or "none"
                raise InvalidRequest(
                    f"Unknown input '{name}' for preset '{self.name}' (its inputs: {known}).",
                    param=f"{param_prefix}.{name}",
                    code="unknown_input",
                )
        values: dict[str, Any] = {}
        for name, spec in self.spec.inputs.items():
            value = inputs.get(name)
            if value is None or (isinstance(value, str) and not value.strip() and spec.type != "boolean"):
                if spec.required and (only is None or name in only):
                    raise InvalidRequest(
                        f"The input '{name}' is required by preset '{self.name}'.",
                        param=f"{param_prefix}.{name}",
                        code="missing_input",
                    )
                values[name] = spec.default
                continue
            try:
                _check_value(spec, value)
            except ValueError as exc:
                raise InvalidRequest(
                    f"Invalid value for input '{name}': {exc}",
                    param=f"{param_prefix}.{name}",
                    code="invalid_input",
                ) from exc
            # 5.0 for an integer input is 5 (and renders as "5", not "5.0").
            values[name] = int(value) if spec.type == "integer" else value
        return values

    def render(
        self, values: dict[str, Any], *, stage: str = "single", part: int = 1, parts: int = 1
    ) -> Rendered:
        """Render both templates from validated input `values`."""
        context = {**values, "stage": stage, "part": part, "parts": parts}
        return Rendered(
            system=self._system.render(context).strip(), prompt=self._prompt.render(context).strip()
        )

    def describe(self) -> dict[str, Any]:
        """The public description served by `GET /v1/presets`."""
        return {
            "object": "preset",
            "name": self.name,
            "title": self.title,
            "description": self.spec.description.strip(),
            "multi_turn": self.spec.multi_turn,
            "input_schema": self.input_schema(),
            "sampling": self.defaults,
            "tuning": {"variants": self.variants} if self.variants else None,
            "summarize_long_input": self.spec.summarize.input if self.spec.summarize else None,
        }


def _check_value(spec: InputSpec, value: Any) -> None:
    """Raise ValueError unless `value` is acceptable for `spec` (strict JSON types)."""
    if spec.type in ("string", "text"):
        if not isinstance(value, str):
            raise ValueError("expected a string")
        if spec.min_length is not None and len(value) < spec.min_length:
            raise ValueError(f"at least {spec.min_length} characters are needed")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise ValueError(f"at most {spec.max_length} characters are allowed")
    elif spec.type == "boolean":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a{'n integer' if spec.type == 'integer' else ' number'}")
        if spec.type == "integer" and not (isinstance(value, int) or float(value).is_integer()):
            raise ValueError("expected an integer")
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"must be at least {_num(spec.minimum)}")
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"must be at most {_num(spec.maximum)}")
    if spec.enum is not None and value not in spec.enum:
        raise ValueError(f"must be one of {', '.join(map(str, spec.enum))}")


def _num(value: float) -> str:
    return str(_plain(value))


def _plain(value: float) -> int | float:
    """2.0 → 2, so that schemas and messages show integers as integers."""
    return int(value) if float(value).is_integer() else value
