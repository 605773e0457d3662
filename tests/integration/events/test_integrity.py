"""The ledger cannot be changed through the database, and tampering is found at its position."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ragledger.core.database import create_engine
from ragledger.events import store
from ragledger.events.envelope import EventMetadata, NewEvent
from ragledger.services.ledger_verification import verify_chain
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


async def _tamper(db, *statements: str) -> None:
    """Change the ledger as a superuser with the guard trigger disabled."""
    async with db.owner_engine.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            await conn.execute(text(statement))


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
    await _tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 4""")
    result = await _verify(db)
    assert not result.valid
    assert result.first_invalid_position == 4
    assert result.checked == 3
    assert "content" in (result.reason or "")


async def test_edited_metadata_or_time_is_found(db) -> None:
    await _seed(db)
    await _tamper(
        db, "UPDATE events SET recorded_at = recorded_at + interval '1 second' WHERE position = 2"
    )
    assert (await _verify(db)).first_invalid_position == 2


async def test_deleted_event_is_found_at_the_gap(db) -> None:
    await _seed(db)
    await _tamper(db, "DELETE FROM events WHERE position = 3")
    result = await _verify(db)
    assert not result.valid
    assert result.first_invalid_position == 3
    assert "missing" in (result.reason or "")


async def test_swapped_order_is_found(db) -> None:
    await _seed(db)
    await _tamper(
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
    await _tamper(
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
    await _tamper(db, """UPDATE events SET payload = '{"i": 99}' WHERE position = 2""")
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
