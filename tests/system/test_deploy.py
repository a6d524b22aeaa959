"""The Dockerfile, compose file and .env.example stay in step with the Makefile and the settings.
(No Docker engine runs here: `make lint` runs hadolint and yamllint on them; these tests check
that they say the same things as the rest of the project.)"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from app.settings import Settings, env_example, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    assert text == env_example(), "run `make env-example` to regenerate .env.example"
    for name in Settings.model_fields:
        assert re.search(rf"^{env_name(name)}=", text, re.M), name


def test_image_starts_the_service_the_way_make_serve_does() -> None:
    assert "$(BIN)/python -m app" in MAKEFILE
    assert 'CMD ["python", "-m", "app"]' in DOCKERFILE
    assert "GENSERVE_HOST=0.0.0.0" in DOCKERFILE
    assert "EXPOSE 8000" in DOCKERFILE


def test_image_builds_llama_cpp_with_the_same_portable_flags_as_the_makefile() -> None:
    assert "CMAKE_ARGS ?= -DGGML_NATIVE=OFF" in MAKEFILE
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF"' in DOCKERFILE
    assert '".[local]"' in DOCKERFILE


def test_image_runs_as_non_root_with_a_healthcheck_on_healthz() -> None:
    assert re.search(r"^USER 10001", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE
    assert "/healthz" in DOCKERFILE
    assert DOCKERFILE.count("FROM ") >= 2, "multi-stage build"


def test_compose_runs_the_image_with_the_env_file_and_published_port() -> None:
    service = COMPOSE["services"]["genserve"]
    assert service["env_file"] == ".env"
    assert "127.0.0.1:8000:8000" in service["ports"], "published on loopback while auth is off"
    assert service["build"] == "."


def test_the_wheel_ships_migrations_and_data_files(tmp_path: Path) -> None:
    """The image installs a wheel, not the source tree: non-Python files must be inside."""
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
