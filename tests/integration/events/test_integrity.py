"""The ledger cannot be changed through the database, and tampering is found at its position."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from alembic import command
from ragledger.core.database import create_engine
from ragledger.core.migrations import alembic_config, upgrade_to_head
from ragledger.events import store
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.services.ledger_verification import (
    CANONICAL_MATCHES,
    CONTENT_GUARD,
    content_guard_intact,
    verify_chain,
)
from tests.ledger_tampering import tamper
from tests.unit.events.test_codec import json_text, json_values


async def _seed(db, count: int = 6) -> None:
    async with db.sessionmaker() as session, session.begin():
        for i in range(count):
            await store.append(
                session,
                f"stream-{i % 2}",
                [NewEvent("Seeded", {"i": i, "text": f"événement {i}"})],
                metadata=EventMetadata(actor_id="u-1"),
            )


async def _verify(db):
    async with db.sessionmaker() as session:
        return await verify_chain(session, batch_size=4)


async def test_intact_chain_verifies(db) -> None:
    await _seed(db)
    result = await _verify(db)
    assert result.valid
    assert result.checked == 6
    assert result.head_position == 6
    assert result.first_invalid_position is None


async def test_empty_ledger_verifies(db) -> None:
    result = await _verify(db)
    assert (result.valid, result.checked, result.head_position) == (True, 0, 0)


async def test_edited_payload_is_found_at_its_position(db) -> None:
    await _seed(db)
    await tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 4""")
    result = await _verify(db)
    assert not result.valid
    assert result.first_invalid_position == 4
    assert result.checked == 3
    assert "content" in (result.reason or "")


async def test_edited_metadata_or_time_is_found(db) -> None:
    await _seed(db)
    await tamper(
        db, "UPDATE events SET recorded_at = recorded_at + interval '1 second' WHERE position = 2"
    )
    assert (await _verify(db)).first_invalid_position == 2


async def test_deleted_event_is_found_at_the_gap(db) -> None:
    await _seed(db)
    await tamper(db, "DELETE FROM events WHERE position = 3")
    result = await _verify(db)
    assert not result.valid
    assert result.first_invalid_position == 3
    assert "missing" in (result.reason or "")


async def test_swapped_order_is_found(db) -> None:
    await _seed(db)
    await tamper(
        db,
        "UPDATE events SET position = 1000 WHERE position = 5",
        "UPDATE events SET position = 5 WHERE position = 2",
        "UPDATE events SET position = 2 WHERE position = 1000",
    )
    result = await _verify(db)
    assert not result.valid
    assert result.first_invalid_position == 2


async def test_rehashed_forgery_is_found_where_the_links_break(db) -> None:
    """An attacker who edits an event and recomputes its hash still breaks the next link."""
    await _seed(db)
    await tamper(
        db,
        """UPDATE events SET payload = '{"i": 1}', hash = sha256('forged') WHERE position = 3""",
    )
    result = await _verify(db)
    assert result.first_invalid_position == 3


async def test_verification_between_a_trusted_point_and_a_ceiling(db) -> None:
    await _seed(db, 9)
    async with db.sessionmaker() as session:
        third = (await store.read_all(session, after=2, limit=1))[0]
        result = await verify_chain(
            session, from_position=3, from_hash=third.hash, up_to=7, batch_size=2
        )
    assert (result.valid, result.checked, result.head_position) == (True, 4, 7)
    async with db.sessionmaker() as session:
        wrong = await verify_chain(session, from_position=3, from_hash=bytes(32), batch_size=2)
    assert (wrong.valid, wrong.first_invalid_position) == (False, 4)


async def test_session_is_usable_after_a_failure_with_the_next_page_in_flight(db) -> None:
    """The next page is read while one is checked; a failure still leaves the session clean."""
    await _seed(db, 9)
    await tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 2""")
    async with db.sessionmaker() as session:
        result = await verify_chain(session, batch_size=4)
        assert (result.valid, result.first_invalid_position, result.checked) == (False, 2, 1)
        assert await session.scalar(text("SELECT count(*) FROM events")) == 9
        assert (await verify_chain(session, up_to=1)).valid


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
        "TRUNCATE events",
    ],
)
async def test_owner_is_refused_by_the_trigger(db, statement: str) -> None:
    await _seed(db, 1)
    with pytest.raises(DBAPIError, match="append-only"):
        async with db.owner_engine.begin() as conn:
            await conn.execute(text(statement))
    assert (await _verify(db)).checked == 1


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET payload = '{}' WHERE position = 1",
        "DELETE FROM events WHERE position = 1",
        "TRUNCATE events",
        "UPDATE blobs SET size = 0",
        "DELETE FROM blobs",
    ],
)
async def test_application_role_may_only_insert_and_select(db, statement: str) -> None:
    await _seed(db, 1)
    with pytest.raises(DBAPIError, match="permission denied"):
        async with db.engine.begin() as conn:
            await conn.execute(text(statement))
    async with db.engine.connect() as conn:
        assert await conn.scalar(text("SELECT current_user")) == "ragledger_app"
    assert (await _verify(db)).checked == 1


async def test_a_new_connection_keeps_the_application_role_after_rollback_and_autocommit(
    db,
) -> None:
    # A rollback of a fresh connection's first transaction once undid its SET ROLE, and
    # the connection went on as the login role (a superuser here). The role must hold
    # for the connection's life, in autocommit too (the answer flow appends that way).
    engine = create_engine(db.url, role="ragledger_app", pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            await conn.rollback()
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            assert await conn.scalar(text("SELECT current_user")) == "ragledger_app"
            with pytest.raises(DBAPIError, match="permission denied"):
                await conn.execute(text("DELETE FROM blobs"))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT current_user")) == "ragledger_app"
    finally:
        await engine.dispose()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    payloads=st.lists(st.dictionaries(json_text, json_values, max_size=4), min_size=1, max_size=4),
    actor=json_text,
)
async def test_any_storable_payload_verifies_after_a_round_trip(db, payloads, actor) -> None:
    async with db.sessionmaker() as session, session.begin():
        await store.append(
            session,
            "fuzz",
            [NewEvent("Fuzzed", payload) for payload in payloads],
            metadata=EventMetadata(actor_id=actor),
        )
    result = await _verify(db)
    assert result.valid, result.reason


async def _guard_intact(db) -> bool:
    async with db.sessionmaker() as session:
        connection = await session.connection()
        driver = (await connection.get_raw_connection()).driver_connection
        return await content_guard_intact(driver)


async def test_the_content_guard_is_in_place_after_migration(db) -> None:
    assert await _guard_intact(db)


async def test_the_guard_refuses_a_column_edit_even_with_triggers_off(db) -> None:
    await _seed(db)
    with pytest.raises(DBAPIError, match=CONTENT_GUARD):
        await tamper(
            db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 4""", keep_guard=True
        )
    result = await _verify(db)
    assert (result.valid, result.checked) == (True, 6)


async def test_an_edit_of_bytes_and_columns_together_is_found_by_its_hash(db) -> None:
    """Columns and stored bytes changed consistently pass the guard, not the hash chain."""
    await _seed(db, 10)
    await tamper(
        db,
        """UPDATE events SET payload = jsonb_set(payload, '{i}', '99'),
                  canonical = convert_to(replace(convert_from(canonical, 'UTF8'),
                                                 '"i"\\:6,', '"i"\\:99,'), 'UTF8')
           WHERE position = 7""",
        keep_guard=True,
    )
    assert await _guard_intact(db)
    result = await _verify(db)
    assert (result.valid, result.first_invalid_position, result.checked) == (False, 7, 6)
    assert "hash" in (result.reason or "")


@pytest.mark.parametrize(
    "guard",
    [
        f"ALTER TABLE events ADD CONSTRAINT {CONTENT_GUARD} CHECK (true)",
        f"ALTER TABLE events ADD CONSTRAINT {CONTENT_GUARD} CHECK ({CANONICAL_MATCHES}) NOT VALID",
        f"ALTER TABLE events ADD CONSTRAINT ck_renamed CHECK ({CANONICAL_MATCHES}) NOT VALID",
    ],
    ids=["replaced-by-true", "re-added-not-valid", "renamed"],
)
async def test_a_weakened_guard_is_not_trusted(db, guard: str) -> None:
    """Whoever edits a column must drop or weaken the guard; every row is then checked."""
    await _seed(db)
    await tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 4""", guard)
    assert not await _guard_intact(db)
    result = await _verify(db)
    assert (result.valid, result.first_invalid_position, result.checked) == (False, 4, 3)


async def test_edited_stored_bytes_alone_are_found(db) -> None:
    await _seed(db)
    await tamper(db, "UPDATE events SET canonical = canonical || ' '::bytea WHERE position = 2")
    result = await _verify(db)
    assert (result.valid, result.first_invalid_position) == (False, 2)
    assert "stored canonical bytes" in (result.reason or "")


def _migrate_to(revision: str):
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    return run


@pytest.mark.parametrize("tampered", [False, True])
async def test_migration_0010_stores_the_bytes_of_existing_events(db, tampered: bool) -> None:
    """Events appended before 0010 get their bytes from their columns; a prior edit still shows."""
    async with db.owner_engine.begin() as conn:
        await conn.run_sync(_migrate_to("0009_audit_answer_documents"))
    await _seed(db, 7)
    if tampered:
        await tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 3""")
    await upgrade_to_head(db.owner_engine)
    assert await _guard_intact(db)
    async with db.owner_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(canonical) FROM events")) == 7
    result = await _verify(db)
    if tampered:
        assert (result.valid, result.first_invalid_position) == (False, 3)
    else:
        assert (result.valid, result.checked) == (True, 7)
    await _seed(db, 2)  # the app role appends through the new function
    assert (await _verify(db)).checked == (2 if tampered else 9)


async def _verify_with_two_readers(db, **kwargs):
    """Verify on two sessions, then check that both connections are free and usable."""
    async with db.sessionmaker() as session, db.sessionmaker() as second:
        result = await verify_chain(session, second_reader=second, batch_size=2, **kwargs)
        for used in (session, second):
            assert await used.scalar(text("SELECT count(*) FROM events")) > 0
        return result


async def test_two_readers_verify_an_intact_chain_and_a_range(db) -> None:
    await _seed(db, 9)
    result = await _verify_with_two_readers(db)
    assert (result.valid, result.checked, result.head_position) == (True, 9, 9)
    async with db.sessionmaker() as session:
        third = (await store.read_all(session, after=2, limit=1))[0]
    ranged = await _verify_with_two_readers(db, from_position=3, from_hash=third.hash, up_to=7)
    assert (ranged.valid, ranged.checked, ranged.head_position) == (True, 4, 7)


@pytest.mark.parametrize(
    ("statements", "position", "reason"),
    [
        (["DELETE FROM events WHERE position BETWEEN 3 AND 6"], 3, "missing"),
        (["DELETE FROM events WHERE position = 8"], 8, "missing"),
        (["UPDATE events SET hash = sha256('x') WHERE position = 6"], 6, "hash"),
    ],
    ids=["a-whole-window-deleted", "one-deleted", "hash-replaced"],
)
async def test_two_readers_name_the_first_broken_position(
    db, statements: list[str], position: int, reason: str
) -> None:
    await _seed(db, 10)
    await tamper(db, *statements, keep_guard=True)
    result = await _verify_with_two_readers(db)
    assert (result.valid, result.first_invalid_position) == (False, position)
    assert result.checked == position - 1
    assert reason in (result.reason or "")
