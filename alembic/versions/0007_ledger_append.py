"""The append as one server-side statement: lock, head, versions, hashes, insert, notify.

Before, an append made four round trips while holding the global append lock (the lock
statement, the head query, the insert, the commit). Under load each round trip waits for
the appender's event loop, so the lock holder sat "idle in transaction" for hundreds of
milliseconds while every other appender queued behind it (bench/load.py: holder
transaction p50 418 ms, 10 sessions waiting on the lock on average, at 50 users).

`ragledger_append` does the critical section inside PostgreSQL. The client still builds
each event's canonical prefix (event_id, event_type, metadata, payload), so the
expensive encoding stays outside the lock; the function adds the canonical suffix
(position, recorded_at, schema_version, stream_id, stream_version) under the lock and
chains `sha256(prev_hash || prefix || suffix)`, exactly as `ragledger.events.codec`
defines canonical bytes. Run in autocommit, the lock is released at the end of the
statement itself, with no client round trip inside it.

A stream whose version is not the expected one returns a single row naming the stream
and its current version, and nothing is written.

Revision ID: 0007_ledger_append
Revises: 0006_audit_indexes
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007_ledger_append"
down_revision: str | None = "0006_audit_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The lock key must match ragledger.events.store (namespace "RL" = 0x524C, id 1).
APPEND_FUNCTION = r"""
CREATE FUNCTION ragledger_append(
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
        chain := sha256(
            chain || p_prefixes[i] || convert_to(
                ',"position":' || head_position
                || ',"recorded_at":"' || moment_text
                || '","schema_version":' || p_schema_versions[i]
                || ',"stream_id":' || p_stream_json[s]
                || ',"stream_version":' || v || '}',
                'UTF8'));
        positions[i] := head_position;
        stream_versions[i] := v;
        hashes[i] := chain;
    END LOOP;
    INSERT INTO events (position, event_id, stream_id, stream_version, event_type,
                        schema_version, payload, metadata, recorded_at, prev_hash, hash)
    SELECT u.position, u.event_id, p_streams[u.stream_index], u.stream_version,
           u.event_type, u.schema_version, u.payload, p_metadata, moment,
           u.prev_hash, u.hash
    FROM unnest(positions, p_event_ids, p_stream_index, stream_versions, p_event_types,
                p_schema_versions, p_payloads, prev_hashes, hashes)
         AS u(position, event_id, stream_index, stream_version, event_type,
              schema_version, payload, prev_hash, hash);
    -- Delivered at commit, so a woken subscriber finds the rows.
    PERFORM pg_notify(p_channel, head_position::text);
    RETURN QUERY SELECT u.position, u.stream_version, moment, u.prev_hash, u.hash, NULL::text
    FROM unnest(positions, stream_versions, prev_hashes, hashes)
         AS u(position, stream_version, prev_hash, hash);
END
$fn$
"""


def upgrade() -> None:
    op.execute(APPEND_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION ragledger_append(text[], text[], integer[], integer[], uuid[], text[], "
        "smallint[], jsonb[], bytea[], jsonb, text)"
    )
