"""The ledger keeps each event's hashed bytes, so verifying is hashing, not re-encoding.

Verifying recomputed `sha256(prev_hash || canonical_bytes)` for every event, and the
canonical bytes had to be re-derived from the stored row: JSONB keeps neither the key
order nor the spacing that was hashed, so payload and metadata were read as text,
parsed and written again in Python. bench/audit.py measured that re-derivation at
about two thirds of the run and reading the wide rows at nearly all the rest, for
17k events/s at 1M events against 516k/s for the same SHA-256 in memory.

Now `ragledger_append` stores the bytes it hashed in `events.canonical`, and a CHECK
constraint ties them to the columns: `ck_events_canonical_matches` parses the bytes
and compares them, as JSON values, with the event built from the columns. PostgreSQL
enforces a CHECK on every insert and update, with triggers disabled too
(`session_replication_role = replica`), and a validated constraint holds for every
row. So a verifier that finds the constraint in place, validated, enforced and with
this exact expression only has to hash the stored bytes; where it is not (dropped,
altered, NOT VALID), it compares every row itself
(`ragledger.services.ledger_verification`). The price is paid once, at the append:
one JSON parse per event, and the bytes stored beside the JSONB.

Existing events get their bytes computed from their columns by the codec (the same
re-derivation that verification used to do), with the append-only trigger disabled for
the backfill only; a row that was tampered with before this migration gets bytes that
do not hash to its stored hash, so it still fails verification at its position. The
backfill rewrites every row once: run VACUUM on `events` afterwards on a large ledger.

Revision ID: 0010_event_canonical_bytes
Revises: 0009_audit_answer_documents
Create Date: 2026-11-27
"""

import json
from collections.abc import Sequence

from sqlalchemy import text

from alembic import op
from ragledger.events.codec import (
    canonical_json,
    canonical_prefix,
    canonical_suffix,
    format_timestamp,
)

revision: str = "0010_event_canonical_bytes"
down_revision: str | None = "0009_audit_answer_documents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here; ragledger.services.ledger_verification holds the same expression and
# checks that the installed constraint deparses exactly as it does.
CANONICAL_MATCHES = """convert_from(canonical, 'UTF8')::jsonb = jsonb_build_object(
    'event_id', event_id, 'event_type', event_type, 'metadata', metadata,
    'payload', payload, 'position', position,
    'recorded_at', to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    'schema_version', schema_version, 'stream_id', stream_id,
    'stream_version', stream_version)"""

_BACKFILL_PAGE = 5000

# As in 0007, and the bytes it hashes are now stored in `canonical`.
APPEND_FUNCTION = r"""
CREATE OR REPLACE FUNCTION ragledger_append(
    p_streams text[],             -- the distinct streams of the batch
    p_stream_json text[],         -- each stream id as canonical JSON text
    p_expected integer[],         -- each stream's expected version, NULL for any
    p_stream_index integer[],     -- per event: its stream's index in p_streams (1-based)
    p_event_ids uuid[],
    p_event_types text[],
    p_schema_versions smallint[],
    p_payloads jsonb[],
    p_prefixes bytea[],           -- per event: canonical bytes up to the payload
    p_metadata jsonb,
    p_channel text
) RETURNS TABLE (
    out_position bigint,
    out_stream_version integer,
    out_recorded_at timestamptz,
    out_prev_hash bytea,
    out_hash bytea,
    out_conflict_stream text
)
LANGUAGE plpgsql VOLATILE
SET search_path FROM CURRENT
AS $fn$
DECLARE
    head_position bigint;
    head_hash bytea;
    moment timestamptz;
    moment_text text;
    versions integer[];
    positions bigint[] := '{}';
    stream_versions integer[] := '{}';
    prev_hashes bytea[] := '{}';
    hashes bytea[] := '{}';
    canonicals bytea[] := '{}';
    chain bytea;
    s integer;
    v integer;
BEGIN
    PERFORM pg_advisory_xact_lock(21068, 1);
    -- A new statement, so a new snapshot in READ COMMITTED: it sees the commit of
    -- whoever held the lock before.
    SELECT e.position, e.hash INTO head_position, head_hash
    FROM events AS e ORDER BY e.position DESC LIMIT 1;
    versions := ARRAY(
        SELECT coalesce(
            (SELECT max(e.stream_version) FROM events AS e WHERE e.stream_id = u.sid), 0)
        FROM unnest(p_streams) WITH ORDINALITY AS u(sid, ord)
        ORDER BY u.ord
    );
    FOR s IN 1 .. coalesce(cardinality(p_streams), 0) LOOP
        IF p_expected[s] IS NOT NULL AND p_expected[s] <> versions[s] THEN
            RETURN QUERY SELECT NULL::bigint, versions[s], NULL::timestamptz,
                                NULL::bytea, NULL::bytea, p_streams[s];
            RETURN;
        END IF;
    END LOOP;
    moment := clock_timestamp();
    moment_text := to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    head_position := coalesce(head_position, 0);
    chain := coalesce(head_hash, decode(repeat('00', 32), 'hex'));  -- genesis: 32 zero bytes
    FOR i IN 1 .. coalesce(cardinality(p_event_ids), 0) LOOP
        s := p_stream_index[i];
        v := versions[s] + 1;
        versions[s] := v;
        head_position := head_position + 1;
        prev_hashes[i] := chain;
        canonicals[i] := p_prefixes[i] || convert_to(
            ',"position":' || head_position
            || ',"recorded_at":"' || moment_text
            || '","schema_version":' || p_schema_versions[i]
            || ',"stream_id":' || p_stream_json[s]
            || ',"stream_version":' || v || '}',
            'UTF8');
        chain := sha256(chain || canonicals[i]);
        positions[i] := head_position;
        stream_versions[i] := v;
        hashes[i] := chain;
    END LOOP;
    INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                        schema_version, payload, metadata, recorded_at, prev_hash, hash,
                        canonical)
    SELECT u.position, u.event_id, p_streams[u.stream_index], u.stream_version,
           u.event_type, u.schema_version, u.payload, p_metadata, moment,
           u.prev_hash, u.hash, u.canonical
    FROM unnest(positions, p_event_ids, p_stream_index, stream_versions, p_event_types,
                p_schema_versions, p_payloads, prev_hashes, hashes, canonicals)
         AS u(position, event_id, stream_index, stream_version, event_type,
              schema_version, payload, prev_hash, hash, canonical);
    -- Delivered at commit, so a woken subscriber finds the rows.
    PERFORM pg_notify(p_channel, head_position::text);
    RETURN QUERY SELECT u.position, u.stream_version, moment, u.prev_hash, u.hash, NULL::text
    FROM unnest(positions, stream_versions, prev_hashes, hashes)
         AS u(position, stream_version, prev_hash, hash);
END
$fn$
"""


def _backfill() -> None:
    """Every existing event's canonical bytes, computed from its columns by the codec."""
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            text(
                "SELECT position, event_id, stream_id, stream_version, event_type, "
                "schema_version, payload::text, metadata::text, recorded_at FROM events "
                "WHERE position > :after ORDER BY position LIMIT :limit"
            ),
            {"after": after, "limit": _BACKFILL_PAGE},
        ).all()
        if not rows:
            return
        positions, blobs = [], []
        for position, event_id, stream_id, version, event_type, schema, payload, meta, at in rows:
            positions.append(position)
            blobs.append(
                canonical_prefix(
                    event_id=event_id,
                    event_type=event_type,
                    metadata_json=canonical_json(json.loads(meta)),
                    payload_json=canonical_json(json.loads(payload)),
                )
                + canonical_suffix(
                    position=position,
                    recorded_at_text=format_timestamp(at),
                    schema_version=schema,
                    stream_id_json=json.dumps(stream_id, ensure_ascii=False),
                    stream_version=version,
                )
            )
        bind.execute(
            text(
                "UPDATE events SET canonical = v.canonical "
                "FROM unnest(CAST(:positions AS bigint[]), CAST(:blobs AS bytea[])) "
                "AS v(position, canonical) WHERE events.position = v.position"
            ),
            {"positions": positions, "blobs": blobs},
        )
        after = positions[-1]


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN canonical bytea")
    op.execute("ALTER TABLE events DISABLE TRIGGER events_refuse_update_delete")
    _backfill()
    op.execute("ALTER TABLE events ENABLE TRIGGER events_refuse_update_delete")
    op.execute("ALTER TABLE events ALTER COLUMN canonical SET NOT NULL")
    op.execute(
        f"ALTER TABLE events ADD CONSTRAINT ck_events_canonical_matches CHECK ({CANONICAL_MATCHES})"
    )
    op.execute(APPEND_FUNCTION)


def downgrade() -> None:
    # The append of 0007, which does not store the bytes.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("0007_ledger_append.py")
    spec = importlib.util.spec_from_file_location("ragledger_migration_0007", path)
    assert spec is not None
    assert spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(
        "DROP FUNCTION ragledger_append(text[], text[], integer[], integer[], uuid[], text[], "
        "smallint[], jsonb[], bytea[], jsonb, text)"
    )
    op.execute(previous.APPEND_FUNCTION)
    op.execute("ALTER TABLE events DROP CONSTRAINT ck_events_canonical_matches")
    op.execute("ALTER TABLE events DROP COLUMN canonical")
