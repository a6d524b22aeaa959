"""Reading preset files: the shipped `presets.yaml`, then an operator's file on top.

An operator's file (YAML or TOML, `GENSERVE_PRESETS_FILE`) adds presets, replaces shipped ones
of the same name whole, and removes those it sets to `null` (or `false`). Any mistake stops the
service at start-up with a message naming the file, the preset and the field.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from app.services.apps.presets.spec import NAME_PATTERN, Preset, PresetError, PresetSpec

SHIPPED = "presets.yaml"


class PresetFileError(ValueError):
    """A preset file that cannot be used; the message says where and why."""


def load_presets(operator_file: Path | None = None) -> dict[str, Preset]:
    """The shipped presets, with the operator's file (if any) applied on top: its presets are
    added or replace shipped ones whole, and `name: null` (or `false`) removes one."""
    shipped = resources.files("app.services.apps.presets").joinpath(SHIPPED)
    presets = parse_presets(
        shipped.read_text(encoding="utf-8"), source=f"app/services/apps/presets/{SHIPPED}"
    )
    if operator_file is not None:
        path = Path(operator_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PresetFileError(f"{path}: cannot read the preset file: {exc.strerror or exc}") from exc
        for name, preset in _parse(text, source=str(path), toml=path.suffix.lower() == ".toml").items():
            if preset is not None:
                presets[name] = preset
            elif presets.pop(name, None) is None:
                raise PresetFileError(f"{path}: preset '{name}': there is no such preset to remove")
    return presets


def parse_presets(text: str, *, source: str, toml: bool = False) -> dict[str, Preset]:
    """Presets from the text of a file whose top level is `presets: {name: {...}}`."""
    presets = _parse(text, source=source, toml=toml)
    removed = [name for name, preset in presets.items() if preset is None]
    if removed:
        raise PresetFileError(f"{source}: preset '{removed[0]}': only an operator's file may remove presets")
    return {name: preset for name, preset in presets.items() if preset is not None}


def _parse(text: str, *, source: str, toml: bool) -> dict[str, Preset | None]:
    try:
        data = tomllib.loads(text) if toml else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise PresetFileError(f"{source}: not valid {'TOML' if toml else 'YAML'}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("presets"), dict):
        raise PresetFileError(f"{source}: expected a top-level 'presets' table of name → preset")
    unknown = set(data) - {"presets"}
    if unknown:
        raise PresetFileError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    presets: dict[str, Preset | None] = {}
    for name, raw in data["presets"].items():
        # `null` (YAML) or `false` (TOML has no null) removes a shipped preset.
        presets[str(name)] = None if raw is None or raw is False else _preset(str(name), raw, source)
    return presets


def _preset(name: str, raw: Any, source: str) -> Preset:
    if not re.match(NAME_PATTERN, name):
        raise PresetFileError(f"{source}: preset {name!r}: the name must match {NAME_PATTERN}")
    if not isinstance(raw, dict):
        raise PresetFileError(f"{source}: preset '{name}': expected a table of fields")
    try:
        spec = PresetSpec.model_validate(raw)
        return Preset(name, spec, source)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "(preset)"
        message = str(error["msg"]).removeprefix("Value error, ")
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise PresetFileError(f"{source}: preset '{name}', field '{field}': {message}{suffix}") from exc
    except PresetError as exc:
        raise PresetFileError(f"{source}: preset '{name}', field '{exc.field}': {exc.message}") from exc
