"""The server's own secret, generated on a fresh install and kept in the data directory."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from app.settings import Settings

PSEUDONYM_FILE = "pseudonym.key"


def pseudonym_secret(settings: Settings) -> bytes:
    """The key of the `user` pseudonyms: `GENSERVE_PSEUDONYM_SECRET` when set (replicas that
    must agree share it), else `data_dir/pseudonym.key`, created on first start (mode 0600)."""
    if settings.pseudonym_secret is not None:
        return settings.pseudonym_secret.get_secret_value().encode()
    return load_or_create(settings.data_dir / PSEUDONYM_FILE)


def load_or_create(path: Path) -> bytes:
    """The secret in `path`; a new random one written there (readable by this user only) when
    there is none. Two processes starting at once agree: only one can create the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48) + "\n")
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds no usable secret: delete it to have a new one made")
    return secret
