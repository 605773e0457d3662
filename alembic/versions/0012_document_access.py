"""Document access written by the commands: `document_access`, and `documents.public`.

Retrieval, listings and provenance used to learn of a retraction or an access change
only when the `chunks` and `documents` projections caught up (a search 39 ms after a
retraction still returned the document). `document_access` holds each document's
current groups, public flag and retraction, written by the upload, change-access and
retract commands in the same transaction as their event, and checked by every read
that decides what a reader may see. The `chunks` projection writes the same rows too,
never going back (a row only moves to a later ledger position), so events appended
some other way and a replay agree with the commands.

Fail closed: a document with no groups is no longer readable by everyone. Events
recorded before this change meant "no groups: everyone", and keep meaning it: they are
upcast with `public` = (no groups), and the backfill below does the same.

Revision ID: 0012_document_access
Revises: 0010_event_canonical_bytes
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_document_access"
down_revision: str | None = "0010_event_canonical_bytes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Default privileges from 0001 already grant the app role DML on new tables.
    op.execute(
        """
        CREATE TABLE document_access (
            document_id uuid NOT NULL,
            access_groups text[] NOT NULL,
            public boolean NOT NULL,
            retracted boolean NOT NULL,
            position bigint NOT NULL,
            CONSTRAINT pk_document_access PRIMARY KEY (document_id)
        )
        """
    )
    # The state each document's events leave, as the upcasters read old events: the
    # last upload or access change sets groups (and public when the event says so,
    # otherwise no groups meant everyone); any retraction is final.
    op.execute(
        """
        WITH setting AS (
            SELECT DISTINCT ON (payload->>'document_id')
                   CAST(payload->>'document_id' AS uuid) AS document_id,
                   CASE WHEN event_type = 'DocumentUploaded' THEN payload->'access_groups'
                        ELSE payload->'new_groups' END AS groups,
                   CASE WHEN event_type = 'DocumentUploaded' THEN payload->'public'
                        ELSE payload->'new_public' END AS public,
                   position
            FROM events
            WHERE event_type IN ('DocumentUploaded', 'DocumentAccessChanged')
            ORDER BY payload->>'document_id', position DESC
        ), retraction AS (
            SELECT CAST(payload->>'document_id' AS uuid) AS document_id,
                   max(position) AS position
            FROM events
            WHERE event_type = 'DocumentRetracted'
            GROUP BY 1
        )
        INSERT INTO document_access (document_id, access_groups, public, retracted, position)
        SELECT s.document_id,
               ARRAY(SELECT jsonb_array_elements_text(s.groups)),
               COALESCE(CAST(s.public AS boolean), jsonb_array_length(s.groups) = 0),
               r.document_id IS NOT NULL,
               greatest(s.position, COALESCE(r.position, 0))
        FROM setting AS s LEFT JOIN retraction AS r USING (document_id)
        """
    )
    op.execute("ALTER TABLE documents ADD COLUMN public boolean NOT NULL DEFAULT false")
    op.execute(
        """
        UPDATE documents AS d SET public = a.public
        FROM document_access AS a WHERE a.document_id = d.document_id
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE documents DROP COLUMN public")
    op.execute("DROP TABLE document_access")
