"""Secrets generated once into the data dir: created whole, mode 0600, never empty.

A key is written to a temporary file opened with O_CREAT | O_EXCL and mode 0600,
flushed to disk, then linked into place with link(2), which fails when the name
exists: of processes starting at once, the first to link wins and every other one
discards its own key and reads the winner's. A reader therefore never sees a partly
written file, and no process keeps using a key that another one replaced (a rename
would let the last writer silently replace a key already in use).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path


class SecretFileError(RuntimeError):
    """A secret file exists but cannot be used (empty, or unreadable)."""


def read_secret_file(path: Path) -> bytes:
    """The secret in `path`; an empty (or whitespace-only) file is refused, not used."""
    data = path.read_bytes()
    if not data.strip():
        raise SecretFileError(
            f"{path} is empty: refusing to use an empty key. Restore it from a backup, "
            "or delete it to have a new one generated (anything signed or encrypted "
            "with the old key then no longer checks)"
        )
    return data


def read_or_create_secret(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The secret kept in `path`, generating it atomically (mode 0600) when it is absent."""
    if path.exists():
        return read_secret_file(path)
    fresh = generate()
    if not fresh.strip():
        raise SecretFileError(f"refusing to write an empty key to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(descriptor, fresh)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process won the race: use its key
        else:
            _sync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    return read_secret_file(path)


def _sync_directory(directory: Path) -> None:
    """Make the new name durable (the file's bytes were synced before it was linked)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data is synced already
    finally:
        os.close(descriptor)
