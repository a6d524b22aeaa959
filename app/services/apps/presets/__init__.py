"""Task presets: named jobs with a prompt template, typed inputs and default sampling."""

from app.services.apps.presets.loader import PresetFileError, load_presets, parse_presets
from app.services.apps.presets.spec import Preset, PresetError, Rendered

__all__ = ["Preset", "PresetError", "PresetFileError", "Rendered", "load_presets", "parse_presets"]
