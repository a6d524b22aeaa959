"""The Dockerfile, compose file and .env.example stay in step with the Makefile and the settings,
and a copied .env.example starts the service. (`make lint` runs hadolint and yamllint on the files;
`make image-test` builds and runs the image; these tests check what can be checked without it.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from app.__main__ import parse_args
from app.main import create_app
from app.settings import Settings, env_example, env_name
from tests.conftest import serving

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SETTING_VARIABLES = {env_name(name) for name in Settings.model_fields}
# The image's command line: the container's own facts.
CONTAINER_ARGS = ["--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]


def stage(name: str) -> str:
    """The text of one stage of the Dockerfile."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.M | re.S)
    assert match, f"no stage {name}"
    return match.group(1)


# -- .env.example ---------------------------------------------------------------------------------


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "run `make env-example` to regenerate .env.example"
    for name in Settings.model_fields:
        assert re.search(rf"^{env_name(name)}=", text, re.M), name


@pytest.fixture
def copied_env_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh clone's first step: `cp .env.example .env`, in the directory the service starts in."""
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_copied_env_example_changes_no_setting(copied_env_example: Path) -> None:
    from_example = Settings()
    assert from_example.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]


async def test_make_serve_starts_and_is_ready_with_a_copied_env_example(copied_env_example: Path) -> None:
    settings = Settings(**parse_args([]))  # what `python -m app` builds
    assert settings.host == "127.0.0.1"
    async with serving(create_app(settings)) as client:
        ready = await client.get("/readyz")
        models = await client.get("/v1/models")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    # The embedded chat model, then the embedded embedder (the `embed` extra that make serve installs).
    assert [m["id"] for m in models.json()["data"]] == [
        settings.default_model_name,
        *settings.embedding_table,
    ]
    assert (copied_env_example / "data" / "genserve.db").is_file(), "SQLite where GENSERVE_DATA_DIR says"


def test_the_image_command_line_wins_over_a_copied_env_example(
    copied_env_example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container's facts hold whatever .env says; compose lets auth=none listen beyond loopback."""
    monkeypatch.setenv("GENSERVE_HOST", "127.0.0.1")  # as compose's env_file passes it
    monkeypatch.setenv("GENSERVE_DATA_DIR", "data")
    monkeypatch.setenv("GENSERVE_ALLOW_OPEN_ACCESS", "true")  # compose's `environment:`
    settings = Settings(**parse_args(CONTAINER_ARGS))
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 8000, Path("/data"))


def test_the_image_without_compose_refuses_open_access_until_allowed(copied_env_example: Path) -> None:
    with pytest.raises(ValidationError, match="GENSERVE_ALLOW_OPEN_ACCESS"):
        Settings(**parse_args(CONTAINER_ARGS))


# -- Dockerfile -----------------------------------------------------------------------------------


def test_image_starts_the_service_the_way_make_serve_does() -> None:
    assert "$(BIN)/python -m app" in MAKEFILE
    command = ["python", "-m", "app", *CONTAINER_ARGS]
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert cmd, "the image has a CMD"
    assert yaml.safe_load(cmd.group(1)) == command
    assert "EXPOSE 8000" in DOCKERFILE
    assert 'VOLUME ["/data"]' in DOCKERFILE


def test_the_healthcheck_asks_the_containers_own_address_on_the_served_port() -> None:
    check = re.search(r"^HEALTHCHECK [^\n]*(?:\\\n[^\n]*)*?CMD (\[[^\n]*\])$", DOCKERFILE, re.M)
    assert check, "the image has a HEALTHCHECK"
    command = yaml.safe_load(check.group(1))
    assert command[:3] == ["python", "-m", "app.healthcheck"]
    assert "/healthz" in command
    port = command[command.index("--port") + 1] if "--port" in command else "8000"
    assert port == CONTAINER_ARGS[CONTAINER_ARGS.index("--port") + 1]


def test_image_builds_offline_with_no_remote_syntax_frontend() -> None:
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILE, re.M | re.I)


def test_image_builds_llama_cpp_with_the_same_portable_flags_as_the_makefile() -> None:
    assert "CMAKE_ARGS ?= -DGGML_NATIVE=OFF" in MAKEFILE
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in stage("builder")
    # the embedded target's dependencies are the `local` extra, read from pyproject.toml
    assert '["optional-dependencies"]["local"]' in stage("requirements")
    assert "requirements-local.txt" in stage("deps-embedded")


def test_dependencies_are_installed_before_the_code_is_copied() -> None:
    """A code-only change leaves the dependency layers (llama.cpp's compile above all) cached."""
    for name in ("requirements", "builder", "deps-upstream", "deps-embedded"):
        assert not re.search(r"^COPY (?!--from).*\bapp\b", stage(name), re.M), name
    assert re.search(r"^COPY app ", stage("app"), re.M)
    assert DOCKERFILE.index("AS app") > DOCKERFILE.index("AS deps-embedded")


def test_runtime_images_copy_a_virtualenv_not_wheels() -> None:
    for name in ("upstream", "embedded"):
        text = stage(name)
        copies = re.findall(r"^COPY --from=(\S+) (\S+)", text, re.M)
        assert ("app", "/out/") in copies, name
        assert any(src == "/opt/venv" for _, src in copies), name
        assert "wheel" not in text.lower(), name
        assert "pip install" not in text, name
        assert re.search(r"^USER 10001:10001$", text, re.M), f"{name} runs as non-root uid 10001"
    # the embedded model is the default target: the last stage
    assert re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE, re.M)[-1] == "embedded"


# -- compose ----------------------------------------------------------------------------------


def test_compose_starts_without_a_dot_env_and_reads_it_when_there_is_one() -> None:
    for name in ("genserve", "replica"):
        assert COMPOSE["services"][name]["env_file"] == [{"path": ".env", "required": False}], name


def test_compose_publishes_on_loopback_while_auth_is_off() -> None:
    service = COMPOSE["services"]["genserve"]
    assert service["build"] == "."
    assert service["ports"] == ["127.0.0.1:${GENSERVE_PUBLISHED_PORT:-8000}:8000"]
    assert service["volumes"] == ["genserve-data:/data"]
    for name in ("genserve", "replica"):
        environment = COMPOSE["services"][name]["environment"]
        assert environment["GENSERVE_ALLOW_OPEN_ACCESS"] == "true", name


def test_compose_never_takes_a_setting_from_dot_env_by_interpolation() -> None:
    """Compose reads .env for `${VAR}` too: a setting interpolated into the file would let a copied
    .env.example (written for `make serve`) change the container behind the operator's back."""
    interpolated = set(re.findall(r"\$\{(\w+)", COMPOSE_TEXT))
    assert interpolated, "the file interpolates its own knobs (port, replicas, passwords)"
    assert not interpolated & SETTING_VARIABLES


def test_compose_gives_streams_longer_to_drain_than_the_service_does() -> None:
    timeout = Settings.model_fields["shutdown_timeout"].default
    for name in ("genserve", "replica"):
        grace = COMPOSE["services"][name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) > timeout, name


# -- the wheel ------------------------------------------------------------------------------------


def test_the_wheel_ships_migrations_and_data_files(tmp_path: Path) -> None:
    """The image installs the project, not the source tree: non-Python files must be inside."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("genserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "app/storage/migrations/env.py" in names
    assert "app/storage/migrations/script.py.mako" in names
    assert "app/storage/migrations/versions/0001_base.py" in names
    shipped = [p.relative_to(ROOT).as_posix() for p in (ROOT / "app").rglob("*") if p.is_file()]
    for path in shipped:
        if "__pycache__" not in path:
            assert path in names, f"{path} is missing from the wheel"
